//! `cargo xtask fuzz`: the coverage-guided campaign with cargo-fuzz
//! (libFuzzer, `-s none` so it builds on stable), over scratch copies of the
//! seed corpora, then `cmin` on each scratch corpus. The test suite runs the
//! same target bodies with the deterministic engine
//! (`crates/fuzzing`); this is the long, coverage-guided complement.
use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd;

/// The cargo-fuzz targets (`fuzz/Cargo.toml`), each with `fuzz/corpus/<name>`.
pub const TARGETS: &[&str] = &[
    "wal_reader",
    "entry_decode",
    "bolt_walker",
    "peer_message_stream",
    "peer_msgappv2_stream",
    "saved_model",
    "peer_http",
];

/// cargo-fuzz version installed when missing.
const CARGO_FUZZ: &str = "0.13.2";

/// Runs `targets` (all when empty) for `seconds` each.
pub fn run(root: &Path, seconds: u64, targets: &[String]) -> Result<bool> {
    let have = cmd::capture(cmd::cargo().args(["fuzz", "--version"]))
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ} (a few minutes, once)");
        cmd::run(cmd::cargo().args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ,
        ]))?;
    }
    let chosen: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in targets {
            if !TARGETS.contains(&t.as_str()) {
                anyhow::bail!("unknown fuzz target `{t}` (have: {})", TARGETS.join(", "));
            }
        }
        targets.iter().map(String::as_str).collect()
    };
    let fuzz_dir = root.join("fuzz");
    let mut ok = true;
    for t in chosen {
        // libFuzzer adds what it finds to its corpus dir: a scratch copy,
        // so the checked-in seeds stay as they are.
        let scratch = fuzz_dir.join("target").join("corpus").join(t);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let seeds = fuzz_dir.join("corpus").join(t);
        for e in
            std::fs::read_dir(&seeds).with_context(|| format!("reading {}", seeds.display()))?
        {
            let e = e?;
            std::fs::copy(e.path(), scratch.join(e.file_name()))?;
        }
        eprintln!("xtask: fuzzing {t} for {seconds} s");
        let passed = cmd::status(
            cmd::cargo()
                .current_dir(&fuzz_dir)
                .args(["fuzz", "run", "-s", "none", t])
                .arg(&scratch)
                .args([
                    "--",
                    &format!("-max_total_time={seconds}"),
                    "-print_final_stats=1",
                ]),
        )?;
        if !passed {
            eprintln!("xtask: {t} FAILED: the crashing input is under fuzz/artifacts/{t}/");
            ok = false;
            continue;
        }
        cmd::status(
            cmd::cargo()
                .current_dir(&fuzz_dir)
                .args(["fuzz", "cmin", "-s", "none", t])
                .arg(&scratch),
        )?;
        let kept = std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
        eprintln!(
            "xtask: {t}: minimized corpus of {kept} inputs in {}",
            scratch.display()
        );
    }
    Ok(ok)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_fuzz_target_is_listed_with_a_seed_corpus() {
        let root = cmd::workspace_root();
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
        let bins: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|n| *n != "etcd-standby-fuzz")
            .collect();
        assert_eq!(bins, TARGETS);
        let suite = std::fs::read_to_string(root.join("crates/fuzzing/tests/suite.rs")).unwrap();
        for t in TARGETS {
            assert!(
                root.join("fuzz/corpus").join(t).read_dir().unwrap().count() > 0,
                "{t}"
            );
            assert!(
                suite.contains(&format!("run(\n        \"{t}\""))
                    || suite.contains(&format!("run(\"{t}\"")),
                "{t} not in the suite"
            );
        }
    }
}
