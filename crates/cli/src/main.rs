//! `etcd-standby`: the command-line entry point.
//!
//! Exit codes: 0 fine, 1 data problem found (corruption, torn tail, bad
//! checksum), 2 usage or IO error.
mod dbcmd;
mod output;
mod snapcmd;
mod walcmd;

use clap::{Parser, Subcommand};
use output::{EXIT_OK, EXIT_USAGE_OR_IO, PipeClosed, Verdict};
use std::path::PathBuf;

/// Keeps a standby etcd cluster in step with a primary through raft, and
/// inspects etcd data directories offline.
#[derive(Parser)]
#[command(name = "etcd-standby", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect a WAL (an etcd data dir, its member/ dir, its wal/ dir, or ours).
    Wal {
        #[command(subcommand)]
        cmd: WalCmd,
    },
    /// Inspect a member/snap/*.snap file.
    Snap {
        #[command(subcommand)]
        cmd: SnapCmd,
    },
    /// Inspect a bbolt backend (member/snap/db, a .snap.db, or an `etcdctl snapshot save` file).
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
    },
}

#[derive(Subcommand)]
enum WalCmd {
    /// Print metadata, snapshot records, hard state and one line per entry.
    Dump {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Show entries from this index.
        #[arg(long, value_name = "N")]
        start_index: Option<u64>,
        /// Show entries up to this index.
        #[arg(long, value_name = "N")]
        end_index: Option<u64>,
        /// Comma-separated kinds, groups (kv, lease, auth, cluster, alarm, noop, unknown) or entry types (normal, conf).
        #[arg(long = "type", value_name = "TYPES")]
        types: Option<String>,
        /// Only entries touching keys with this prefix.
        #[arg(long, value_name = "P")]
        key_prefix: Option<String>,
        /// Print passwords, password hashes and tokens (redacted by default).
        #[arg(long)]
        show_secrets: bool,
        /// Data dir, member dir, wal dir or .wal file.
        path: PathBuf,
    },
    /// Check every record's framing and the CRC chain; report the first problem.
    Verify {
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// Data dir, member dir, wal dir or .wal file.
        path: PathBuf,
    },
    /// Index/term range, entries by type and kind, bytes, busiest prefixes, leases, auth.
    Stats {
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// Path components that make up a "prefix".
        #[arg(long, default_value_t = 2)]
        prefix_depth: usize,
        /// How many prefixes to list.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Data dir, member dir, wal dir or .wal file.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum SnapCmd {
    /// Verify and print a .snap file (or the newest one of a data dir).
    Dump {
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// A .snap file or a data dir.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum DbCmd {
    /// Print live keys, leases, auth, members and meta of a bbolt db.
    Dump {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only this bucket (key, lease, auth, authUsers, authRoles, meta, members, members_removed, cluster, alarm).
        #[arg(long, value_name = "B")]
        bucket: Option<String>,
        /// Only keys with this prefix (bucket `key`).
        #[arg(long, value_name = "P")]
        key_prefix: Option<String>,
        /// Print password hashes (redacted by default).
        #[arg(long)]
        show_secrets: bool,
        /// Print raw pages of the b+tree instead of etcd's view.
        #[arg(long)]
        pages: bool,
        /// The db file (or a data dir).
        path: PathBuf,
    },
}

fn run(cli: Cli) -> anyhow::Result<Verdict> {
    match cli.cmd {
        Command::Wal { cmd } => match cmd {
            WalCmd::Dump {
                json,
                start_index,
                end_index,
                types,
                key_prefix,
                show_secrets,
                path,
            } => {
                let kinds = types
                    .map(|t| etcd_standby_decode::parse_kind_filter(&t))
                    .transpose()
                    .map_err(|e| UsageError(format!("--type: {e}")))?;
                walcmd::dump(
                    &path,
                    &walcmd::DumpOptions {
                        json,
                        start_index,
                        end_index,
                        kinds,
                        key_prefix: key_prefix.map(String::into_bytes),
                        show_secrets,
                    },
                )
            }
            WalCmd::Verify { json, path } => walcmd::verify(&path, json),
            WalCmd::Stats {
                json,
                prefix_depth,
                top,
                path,
            } => walcmd::stats(&path, json, prefix_depth.max(1), top),
        },
        Command::Snap {
            cmd: SnapCmd::Dump { json, path },
        } => snapcmd::dump(&path, json),
        Command::Db {
            cmd:
                DbCmd::Dump {
                    json,
                    bucket,
                    key_prefix,
                    show_secrets,
                    pages,
                    path,
                },
        } => dbcmd::dump(
            &path,
            &dbcmd::DbOptions {
                json,
                bucket,
                key_prefix: key_prefix.map(String::into_bytes),
                show_secrets,
                pages,
            },
        ),
    }
}

/// A bad argument found after parsing.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(v) => v.exit_code(),
        Err(e) if e.downcast_ref::<PipeClosed>().is_some() => EXIT_OK,
        Err(e) => {
            eprintln!("etcd-standby: {e:#}");
            EXIT_USAGE_OR_IO
        }
    };
    std::process::exit(code);
}
