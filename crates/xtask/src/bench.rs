//! `cargo xtask bench <name>`: benchmarks that need real etcd.

use anyhow::{Result, bail};

use crate::{cmd, etcd};

/// Benchmarks known to xtask.
#[derive(Debug, Clone, Copy)]
pub enum Bench {
    /// WAL reading/decoding throughput.
    Wal,
}

impl Bench {
    pub const ALL: [Bench; 1] = [Bench::Wal];

    pub fn name(self) -> &'static str {
        match self {
            Bench::Wal => "wal",
        }
    }

    pub fn parse(name: &str) -> Result<Bench> {
        match Self::ALL.into_iter().find(|b| b.name() == name) {
            Some(b) => Ok(b),
            None => bail!("unknown bench `{name}`; available: {}", names()),
        }
    }
}

pub fn names() -> String {
    Bench::ALL.map(Bench::name).join(", ")
}

/// Runs a bench; returns the process exit code.
pub fn run(bench: Bench) -> Result<u8> {
    let _provisioned = etcd::install(&cmd::workspace_root())?;
    match bench {
        Bench::Wal => {
            println!("bench wal: not implemented yet");
            Ok(2)
        }
    }
}
