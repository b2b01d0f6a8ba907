//! `etcd-standby`: the command-line entry point.
//!
//! Exit codes: 0 fine, 1 data problem found (corruption, torn tail, bad
//! checksum), 2 usage or IO error.
/// mimalloc, not glibc's malloc: replay allocates and frees entry-sized
/// buffers between long-lived model nodes, and glibc kept the holes
/// resident (the replicator's RSS followed the values it had passed
/// through: 551 MiB after 100k x 16 KiB values, 220 MiB with mimalloc;
/// `cargo xtask bench memory`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod dbcmd;
mod output;
mod progress;
mod promotecmd;
mod seedcmd;
mod snapcmd;
mod walcmd;

use clap::{Parser, Subcommand};
use output::{EXIT_OK, EXIT_USAGE_OR_IO, PipeClosed, Verdict, WriteOut};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Keeps a standby etcd cluster in step with a primary through raft, and
/// inspects etcd data directories offline.
#[derive(Parser)]
#[command(name = "etcd-standby", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML; keys are the long flag names, e.g.
    /// `source-endpoints = ["https://a:2379"]`). Precedence: flag >
    /// ETCD_STANDBY_* variable > file > default.
    #[arg(long, global = true, value_name = "FILE", env = config::CONFIG_ENV)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join the source cluster as a learner and keep its raft log durable.
    Run(Box<RunArgs>),
    /// Print the state of a running `etcd-standby run`.
    Status {
        /// Admin listener of the daemon.
        #[arg(long, default_value = "127.0.0.1:9479", env = "ETCD_STANDBY_ADMIN")]
        admin: String,
        /// Print the raw JSON (same as `-w json`).
        #[arg(long)]
        json: bool,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
        write_out: WriteOut,
    },
    /// Compare the standby with the source: keys and values, leases, users, roles and permissions.
    Verify(Box<VerifyArgs>),
    /// Turn the standby into the primary: checks, plan, fencing, lease
    /// hand-over, audit record (see `promote --help`; exit codes in the README).
    Promote(Box<promotecmd::PromoteArgs>),
    /// Restore a revision-preserving standby from a primary snapshot
    /// (etcd's own restore tool, 1 or 3 members) and record where replay
    /// continues, for `run --preserve-revisions`.
    Seed(Box<seedcmd::SeedArgs>),
    /// Remove this learner from the source cluster (MemberRemove).
    Leave {
        /// The data dir of the learner.
        #[arg(long, env = "ETCD_STANDBY_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Check or print the effective configuration (file, variables, defaults).
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Print a shell completion script (`source <(etcd-standby completion bash)`).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `etcd-standby man [SUBCOMMAND] | man -l -`.
    Man {
        /// A subcommand's page (`run`, `promote`, ...) instead of the main one.
        subcommand: Option<String>,
    },
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

/// How to reach the primary's client port.
#[derive(clap::Args, Clone)]
struct SourceArgs {
    /// Client URLs of the primary cluster, comma separated (required by
    /// run, verify and leave; optional for promote, which then cannot check
    /// or leave the old primary).
    #[arg(long, value_delimiter = ',', env = "ETCD_STANDBY_SOURCE_ENDPOINTS")]
    source_endpoints: Vec<String>,
    /// Client certificate for the primary.
    #[arg(long, env = "ETCD_STANDBY_SOURCE_CERT")]
    source_cert: Option<PathBuf>,
    /// Client key for the primary.
    #[arg(long, env = "ETCD_STANDBY_SOURCE_KEY")]
    source_key: Option<PathBuf>,
    /// CA that signed the primary's server certificates.
    #[arg(long, env = "ETCD_STANDBY_SOURCE_CA")]
    source_ca: Option<PathBuf>,
    /// User for the primary's client API when auth is enabled there (needs
    /// the root role: member add/remove).
    #[arg(long, env = "ETCD_STANDBY_SOURCE_USER")]
    source_user: Option<String>,
    /// Its password (prefer the environment variable; never logged).
    #[arg(long, env = "ETCD_STANDBY_SOURCE_PASSWORD", hide_env_values = true)]
    source_password: Option<String>,
}

impl SourceArgs {
    /// The primary's client config; `--source-endpoints` must be given.
    fn client(&self) -> Result<etcd_standby_client::ClientConfig, UsageError> {
        self.optional()
            .ok_or_else(|| UsageError("--source-endpoints is required".into()))
    }

    /// The primary's client config, when `--source-endpoints` was given.
    fn optional(&self) -> Option<etcd_standby_client::ClientConfig> {
        (!self.source_endpoints.is_empty()).then(|| {
            client_config(
                &self.source_endpoints,
                [&self.source_ca, &self.source_cert, &self.source_key],
                &self.source_user,
                &self.source_password,
            )
        })
    }
}

/// One client config from endpoints, TLS files (`[ca, cert, key]`; TLS
/// when any is given) and a user with its password.
fn client_config(
    endpoints: &[String],
    [ca, cert, key]: [&Option<PathBuf>; 3],
    user: &Option<String>,
    password: &Option<String>,
) -> etcd_standby_client::ClientConfig {
    let mut c = etcd_standby_client::ClientConfig::new(endpoints.iter().cloned());
    if ca.is_some() || cert.is_some() || key.is_some() {
        c.tls = Some(etcd_standby_client::ClientTls {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    if let (Some(u), Some(p)) = (user, password) {
        c.user = Some((u.clone(), p.clone()));
    }
    c
}

/// How to reach the standby's client port.
#[derive(clap::Args, Clone)]
struct StandbyArgs {
    /// Client URLs of the standby cluster, comma separated.
    #[arg(long, value_delimiter = ',', env = "ETCD_STANDBY_STANDBY_ENDPOINTS")]
    standby_endpoints: Vec<String>,
    /// Client certificate for the standby (its CN can be the replicator's user).
    #[arg(long, env = "ETCD_STANDBY_STANDBY_CERT")]
    standby_cert: Option<PathBuf>,
    /// Client key for the standby.
    #[arg(long, env = "ETCD_STANDBY_STANDBY_KEY")]
    standby_key: Option<PathBuf>,
    /// CA of the standby's server certificates.
    #[arg(long, env = "ETCD_STANDBY_STANDBY_CA")]
    standby_ca: Option<PathBuf>,
    /// User the replicator authenticates as on the standby (needs the root role).
    #[arg(long, env = "ETCD_STANDBY_STANDBY_USER")]
    standby_user: Option<String>,
    /// Its password (prefer the environment variable; never logged).
    #[arg(long, env = "ETCD_STANDBY_STANDBY_PASSWORD", hide_env_values = true)]
    standby_password: Option<String>,
    /// Replay txns sent to the standby before the first is confirmed (each
    /// compares the checkpoint the one before it writes, so they land in
    /// order and exactly once). 1 writes one at a time; more can pay on a
    /// long round trip (etcd may run concurrent txns out of order, which
    /// costs a resend).
    #[arg(
        long,
        env = "ETCD_STANDBY_STANDBY_TXNS_IN_FLIGHT",
        default_value_t = etcd_standby_sink::DEFAULT_MAX_TXNS_IN_FLIGHT as u64,
        value_parser = clap::value_parser!(u64).range(1..=64)
    )]
    standby_txns_in_flight: u64,
    /// Revision-preserving replay: the standby's revision sequence equals
    /// the primary's, so Kubernetes resourceVersions and watches survive a
    /// failover. Only for a standby restored from a primary snapshot by
    /// `etcd-standby seed` (replay waits for the seed); every primary
    /// revision becomes one standby txn, compactions are replayed, and any
    /// other write to the standby halts replay (ES-1111).
    #[arg(long, env = "ETCD_STANDBY_PRESERVE_REVISIONS")]
    preserve_revisions: bool,
}

impl StandbyArgs {
    fn client(&self) -> etcd_standby_client::ClientConfig {
        client_config(
            &self.standby_endpoints,
            [&self.standby_ca, &self.standby_cert, &self.standby_key],
            &self.standby_user,
            &self.standby_password,
        )
    }
}

/// Which keys replicate, and where they land.
#[derive(clap::Args, Clone)]
struct PrefixArgs {
    /// Replicate only keys under this prefix (repeatable; default: all keys).
    #[arg(
        long = "include-prefix",
        env = "ETCD_STANDBY_INCLUDE_PREFIX",
        value_delimiter = ','
    )]
    include: Vec<String>,
    /// Never replicate keys under this prefix (repeatable).
    #[arg(
        long = "exclude-prefix",
        env = "ETCD_STANDBY_EXCLUDE_PREFIX",
        value_delimiter = ','
    )]
    exclude: Vec<String>,
    /// Prepend this to every key on the standby.
    #[arg(long, default_value = "", env = "ETCD_STANDBY_DEST_PREFIX")]
    dest_prefix: String,
    /// Prefix of the replicator's own keys on the standby (checkpoint, fencing epoch).
    #[arg(long, default_value = etcd_standby_sink::DEFAULT_RESERVED_PREFIX, env = "ETCD_STANDBY_RESERVED_PREFIX")]
    reserved_prefix: String,
}

impl PrefixArgs {
    fn key_map(&self) -> etcd_standby_sink::KeyMap {
        let b = |v: &[String]| {
            v.iter()
                .map(|s| bytes::Bytes::from(s.clone().into_bytes()))
                .collect()
        };
        etcd_standby_sink::KeyMap::with(
            b(&self.include),
            b(&self.exclude),
            bytes::Bytes::from(self.dest_prefix.clone().into_bytes()),
            bytes::Bytes::from(self.reserved_prefix.clone().into_bytes()),
        )
    }
}

/// The mass-delete guard of snapshot reconciles.
#[derive(clap::Args, Clone)]
struct ReconcileArgs {
    /// Let a snapshot reconcile delete more than --mass-delete-ratio of the standby's keys.
    #[arg(long, env = "ETCD_STANDBY_ACCEPT_MASS_DELETE")]
    accept_mass_delete: bool,
    /// Share of the standby's keys a reconcile may delete without --accept-mass-delete.
    #[arg(long, default_value_t = 0.5, env = "ETCD_STANDBY_MASS_DELETE_RATIO")]
    mass_delete_ratio: f64,
}

/// `etcd-standby verify` flags.
#[derive(clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    standby: StandbyArgs,
    #[command(flatten)]
    prefixes: PrefixArgs,
    /// One JSON object per difference (and a summary line).
    #[arg(long)]
    json: bool,
    /// Output format (`table`: one row per difference).
    #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
    write_out: WriteOut,
    /// Compare keys at the standby's checkpoint: the standby at the
    /// revision of its checkpoint write, the primary at its revision after
    /// the same raft entry. Consistent while replication runs; compares
    /// keys only (values, lease attachments): leases and auth have no
    /// revisions. Fails if the primary compacted past that revision.
    #[arg(long)]
    at_checkpoint: bool,
    /// Compare keys at revision R on both sides, for revision-preserving
    /// standbys (the standby's revisions equal the primary's): values, lease
    /// attachments, create/mod revision and version of every replicated key
    /// (reserved keys excluded). Leases and auth are not compared (they have
    /// no revisions). Fails if either side compacted past R, or R is in the
    /// future on either side.
    #[arg(
        long,
        value_name = "R",
        conflicts_with = "at_checkpoint",
        value_parser = clap::value_parser!(i64).range(1..)
    )]
    at_revision: Option<i64>,
}

/// `etcd-standby run` flags (every flag also reads an `ETCD_STANDBY_*` variable).
#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Address the peer listener binds: `IP:PORT` or a URL like etcd's
    /// `--listen-peer-urls` (`http://IP:PORT`, `https://` with the peer TLS
    /// flags). Default: the host and port of --advertise-peer-url.
    #[arg(long, env = "ETCD_STANDBY_PEER_LISTEN")]
    peer_listen: Option<String>,
    /// Reach a primary member at another address than the peer URL it
    /// advertises: `ADVERTISED_HOST:PORT=HOST:PORT` (repeatable, or comma
    /// separated). For a tunnel, NAT or private link between the cities;
    /// TLS still checks the advertised host name.
    #[arg(long, env = "ETCD_STANDBY_PEER_DIAL_VIA", value_delimiter = ',', value_parser = parse_dial_via)]
    peer_dial_via: Vec<(String, String)>,
    /// The peer URL registered with the cluster; etcd members dial it.
    #[arg(long, env = "ETCD_STANDBY_ADVERTISE_PEER_URL")]
    advertise_peer_url: String,
    /// Data dir: the local raft log (etcd WAL format) and identity.
    #[arg(long, env = "ETCD_STANDBY_DATA_DIR")]
    data_dir: PathBuf,
    /// Our member name.
    #[arg(long, default_value = "etcd-standby", env = "ETCD_STANDBY_NAME")]
    name: String,
    /// Admin listener (/status, /metrics, /healthz, /readyz).
    #[arg(
        long,
        default_value = "127.0.0.1:9479",
        env = "ETCD_STANDBY_ADMIN_LISTEN"
    )]
    admin_listen: SocketAddr,
    /// Peer certificate (served to etcd, and presented when dialling it).
    #[arg(long, env = "ETCD_STANDBY_PEER_CERT")]
    peer_cert: Option<PathBuf>,
    /// Peer key.
    #[arg(long, env = "ETCD_STANDBY_PEER_KEY")]
    peer_key: Option<PathBuf>,
    /// The cluster's peer CA (verifies etcd; requires etcd's client certs).
    #[arg(long, env = "ETCD_STANDBY_PEER_CA")]
    peer_ca: Option<PathBuf>,
    /// The standby. Without --standby-endpoints the learner only archives the log.
    #[command(flatten)]
    standby: StandbyArgs,
    #[command(flatten)]
    prefixes: PrefixArgs,
    #[command(flatten)]
    reconcile: ReconcileArgs,
    /// Keep this much of the newest log unapplied (e.g. `1h`): the log is
    /// durable at once, only replay waits, so `promote --to-time` can stop
    /// before a mistake (a fat-fingered `del --prefix`) reached the standby.
    #[arg(long, env = "ETCD_STANDBY_APPLY_DELAY")]
    apply_delay: Option<String>,
    /// Run as one of several instances for this source: only the holder of
    /// a lock on the standby runs the learner and writes; the others wait
    /// and take over (same learner member) when it dies. Needs
    /// --standby-endpoints. Exit code 6: this instance lost the lock.
    #[arg(long, env = "ETCD_STANDBY_HA")]
    ha: bool,
    /// This instance's name in the HA lock (default: the host name).
    #[arg(long, env = "ETCD_STANDBY_HA_INSTANCE")]
    ha_instance: Option<String>,
    /// TTL of the HA lock's lease: a dead active instance is replaced after
    /// about this long; an active one that cannot reach the standby for
    /// about this long stops (exit 6).
    #[arg(long, default_value = "6s", env = "ETCD_STANDBY_HA_LOCK_TTL")]
    ha_lock_ttl: String,
    /// Skip committed entries that cannot be decoded instead of halting replay.
    #[arg(long, env = "ETCD_STANDBY_SKIP_UNDECODABLE")]
    skip_undecodable: bool,
    /// WAL segment size in bytes (etcd's 64 MB by default; tests use small ones).
    #[arg(long, hide = true, env = "ETCD_STANDBY_WAL_SEGMENT_BYTES")]
    wal_segment_bytes: Option<u64>,
    /// Save the shadow model every this many applied entries (bounds restart work and WAL kept).
    #[arg(long, default_value_t = 100_000, env = "ETCD_STANDBY_MODEL_SAVE_EVERY")]
    model_save_every: u64,
    /// Keep at least this many entries of WAL history (log-only mode).
    #[arg(
        long,
        default_value_t = 100_000,
        env = "ETCD_STANDBY_RETENTION_ENTRIES"
    )]
    retention_entries: u64,
    /// Write a restart marker every this many committed entries.
    #[arg(long, default_value_t = 10_000, env = "ETCD_STANDBY_MARKER_EVERY")]
    marker_every: u64,
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "ETCD_STANDBY_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum LogFormat {
    Text,
    Json,
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
        /// Explain each entry's outcome on the primary (applied, txn-else,
        /// rejected:<why>, no-change, cluster-only) with the shadow model.
        #[arg(long)]
        outcome: bool,
        /// etcd minor version that wrote the log (apply rules differ), for --outcome.
        #[arg(long, value_parser = ["3.4", "3.5"], default_value = "3.5")]
        source_version: String,
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
        /// One JSON object (same as `-w json`).
        #[arg(long)]
        json: bool,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
        write_out: WriteOut,
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
enum ConfigCmd {
    /// Parse FILE (or --config) for a subcommand as it would run, with the
    /// environment and ARGS; exit 0 when it would start, 2 with the reason.
    Check(ConfigArgs),
    /// Print the effective settings of the subcommand, each with where it
    /// came from (flag, env, file, default); secrets redacted.
    Print(ConfigArgs),
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// The file (default: --config or ETCD_STANDBY_CONFIG).
    file: Option<PathBuf>,
    /// The subcommand it configures.
    #[arg(long = "for", default_value = "run", value_parser = ["run", "promote", "verify", "leave", "status"])]
    for_cmd: String,
    /// More flags for that subcommand, after `--`.
    #[arg(last = true)]
    args: Vec<String>,
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
        /// One JSON object per line (same as `-w json`).
        #[arg(long)]
        json: bool,
        /// Output format (`table` sizes its columns in a first pass over the
        /// keys, so memory stays flat on large dbs).
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
        write_out: WriteOut,
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ETCD_STANDBY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,raft=warn,slog=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn run_daemon(a: RunArgs) -> anyhow::Result<i32> {
    init_logging(a.log_format);
    let apply_delay = a
        .apply_delay
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| UsageError(format!("--apply-delay: {e}")))?;
    let ha = if a.ha {
        if a.standby.standby_endpoints.is_empty() {
            return Err(UsageError(
                "--ha needs --standby-endpoints: the HA lock lives on the standby".into(),
            )
            .into());
        }
        let lock_ttl = parse_duration(&a.ha_lock_ttl)
            .map_err(|e| UsageError(format!("--ha-lock-ttl: {e}")))?;
        if lock_ttl < std::time::Duration::from_secs(2) {
            return Err(UsageError(
                "--ha-lock-ttl must be at least 2s (etcd's minimum lease TTL)".into(),
            )
            .into());
        }
        Some(etcd_standby_daemon::ha::HaOptions {
            instance: a
                .ha_instance
                .clone()
                .unwrap_or_else(etcd_standby_daemon::promote::default_host),
            lock_ttl,
        })
    } else {
        None
    };
    let replay = (!a.standby.standby_endpoints.is_empty()).then(|| {
        let mut r = replay_options(&a.standby, &a.prefixes, &a.reconcile);
        r.skip_undecodable = a.skip_undecodable;
        r.model_save_every = a.model_save_every;
        r.apply_delay = apply_delay;
        r
    });
    let url = etcd_standby_peer::util::parse_peer_url(&a.advertise_peer_url).ok_or_else(|| {
        UsageError(format!(
            "--advertise-peer-url {:?} is not an http(s)://host:port URL",
            a.advertise_peer_url
        ))
    })?;
    let listen = match &a.peer_listen {
        Some(l) => parse_peer_listen(l, a.peer_cert.is_some() || a.peer_key.is_some())
            .map_err(|e| UsageError(format!("--peer-listen {l:?}: {e}")))?,
        None => url.authority.parse().map_err(|e| {
            UsageError(format!(
                "--advertise-peer-url host is not an IP; give --peer-listen ({e})"
            ))
        })?,
    };
    let opts = etcd_standby_daemon::RunOptions {
        source: a.source.client()?,
        peer_listen: listen,
        peer_dial_via: a.peer_dial_via,
        advertise_peer_url: a.advertise_peer_url,
        peer_tls: etcd_standby_daemon::tls::PeerTlsFiles {
            cert: a.peer_cert,
            key: a.peer_key,
            ca: a.peer_ca,
        },
        data_dir: a.data_dir,
        name: a.name,
        admin_listen: a.admin_listen,
        node: etcd_standby_daemon::node::NodeOptions {
            retention_entries: a.retention_entries,
            marker_every: a.marker_every.max(1),
            ..Default::default()
        },
        replay,
        ha,
        wal_segment_bytes: a.wal_segment_bytes,
    };
    Ok(runtime()?.block_on(etcd_standby_daemon::run(opts))?)
}

/// Replay settings shared by `run` and `promote` (which drains with them).
fn replay_options(
    standby: &StandbyArgs,
    prefixes: &PrefixArgs,
    reconcile: &ReconcileArgs,
) -> etcd_standby_daemon::replay::ReplayOptions {
    let mut sink = etcd_standby_sink::SinkConfig::new(standby.client(), 0);
    sink.keys = prefixes.key_map();
    sink.standby_user = standby.standby_user.clone();
    sink.max_txns_in_flight = standby.standby_txns_in_flight as usize;
    etcd_standby_daemon::replay::ReplayOptions {
        sink,
        reconcile: etcd_standby_sink::ReconcileOptions {
            accept_mass_delete: reconcile.accept_mass_delete,
            mass_delete_ratio: reconcile.mass_delete_ratio,
        },
        model: etcd_standby_model::ModelConfig::default(),
        skip_undecodable: false,
        max_batch: 4096,
        model_save_every: 100_000,
        apply_delay: None,
        preserve_revisions: standby.preserve_revisions,
    }
}

/// A duration like `500ms`, `30s`, `5m`, `2h` or `1d` (`--apply-delay`).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// `--peer-dial-via`: `ADVERTISED_HOST:PORT=HOST:PORT`, both sides with a
/// port (they are compared with and used as TCP authorities).
fn parse_dial_via(s: &str) -> Result<(String, String), String> {
    let (from, to) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ADVERTISED_HOST:PORT=HOST:PORT"))?;
    for side in [from, to] {
        let ok = side
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(format!("{side:?} in {s:?} is not HOST:PORT"));
        }
    }
    Ok((from.to_string(), to.to_string()))
}

/// `--peer-listen`: a bare `IP:PORT`, or an etcd-style listen URL whose
/// scheme must agree with whether peer TLS is configured.
fn parse_peer_listen(s: &str, tls: bool) -> Result<SocketAddr, String> {
    if !s.contains("://") {
        return s.parse().map_err(|e| format!("{e}"));
    }
    let url = etcd_standby_peer::util::parse_peer_url(s)
        .ok_or_else(|| "not an http(s)://IP:PORT URL".to_owned())?;
    match (url.tls, tls) {
        (true, false) => return Err("https:// needs --peer-cert and --peer-key".into()),
        (false, true) => {
            return Err("http:// but peer TLS is configured; use https://".into());
        }
        _ => {}
    }
    url.authority.parse().map_err(|_| {
        format!(
            "{} is not an IP:PORT (listen URLs take an IP, as in etcd)",
            url.authority
        )
    })
}

fn print_status(admin: &str, w: WriteOut) -> anyhow::Result<()> {
    let v = runtime()?.block_on(etcd_standby_daemon::admin::fetch_status(admin))?;
    match w {
        WriteOut::Json => {
            println!("{v}");
            return Ok(());
        }
        WriteOut::Table => {
            print!("{}", status_table(&v));
            return Ok(());
        }
        WriteOut::Simple => {}
    }
    let n = &v["node"];
    let g = |k: &str| n[k].as_u64().unwrap_or(0);
    println!(
        "member      {}  (cluster {})",
        n["member_id"].as_str().unwrap_or("?"),
        n["cluster_id"].as_str().unwrap_or("?")
    );
    println!("state       {}", n["state"].as_str().unwrap_or("?"));
    println!(
        "leader      {}  term {}",
        n["leader_id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown"),
        g("term")
    );
    println!(
        "indexes     received {}  durable {}  commit {}  leader commit {}  (lag {})",
        g("last_received_index"),
        g("last_durable_index"),
        g("commit_index"),
        g("leader_commit_index"),
        g("leader_commit_index").saturating_sub(g("commit_index"))
    );
    println!(
        "snapshot    {}  (received {})",
        g("snapshot_index"),
        g("snapshots_received")
    );
    if let Some(peers) = v["peers"]["peers"].as_array() {
        for p in peers {
            let up = |k: &str| p[k]["connected"].as_bool().unwrap_or(false);
            println!(
                "peer        {}  {}  streams dialled msgapp={} message={}  attached msgapp={} message={}",
                p["id_hex"].as_str().unwrap_or("?"),
                p["urls"]
                    .as_array()
                    .and_then(|u| u.first())
                    .and_then(|u| u.as_str())
                    .unwrap_or(""),
                up("msgapp_dialed"),
                up("message_dialed"),
                p["msgapp_attached"].as_bool().unwrap_or(false),
                p["message_attached"].as_bool().unwrap_or(false),
            );
        }
    }
    let r = &v["replay"];
    if r.is_object() {
        let g = |k: &str| r[k].as_u64().unwrap_or(0);
        println!(
            "replay      {}  applied {}  standby checkpoint {}  confirmed {}  lag {} entries / {:.2} s  standby revision {}",
            r["state"].as_str().unwrap_or("?"),
            g("applied_index"),
            g("standby_checkpoint"),
            g("confirmed_index"),
            g("lag_entries"),
            r["lag_seconds"].as_f64().unwrap_or(0.0),
            r["standby_revision"].as_i64().unwrap_or(0)
        );
        let sink = &r["sink"];
        println!(
            "standby     txns {}  ops {}  leases mirrored {}  keepalive failures {}  txn p99 {:.1} ms",
            sink["txns"].as_u64().unwrap_or(0),
            sink["ops"].as_u64().unwrap_or(0),
            sink["leases_mirrored"].as_u64().unwrap_or(0),
            sink["keepalive_failures"].as_u64().unwrap_or(0),
            r["txn_latency_ms_p99"].as_f64().unwrap_or(0.0)
        );
        if let Some(e) = r["error"].as_str() {
            println!("replay err  {e}");
        }
    }
    if let Some(alarms) = n["alarms"].as_array().filter(|a| !a.is_empty()) {
        for a in alarms {
            println!("ALARM       {a}");
        }
    }
    if let Some(e) = n["error"].as_str() {
        println!("error       {e}");
    }
    Ok(())
}

/// `status -w table`: one row per field that operators look at.
fn status_table(v: &serde_json::Value) -> String {
    let s = |x: &serde_json::Value| match x {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let (n, r) = (&v["node"], &v["replay"]);
    let mut rows: Vec<Vec<String>> = [
        ("member", &n["member_id"]),
        ("cluster", &n["cluster_id"]),
        ("learner state", &n["state"]),
        ("leader", &n["leader_id"]),
        ("term", &n["term"]),
        ("received index", &n["last_received_index"]),
        ("durable index", &n["last_durable_index"]),
        ("commit index", &n["commit_index"]),
        ("leader commit index", &n["leader_commit_index"]),
        ("snapshot index", &n["snapshot_index"]),
        ("error code", &n["error_code"]),
        ("error", &n["error"]),
    ]
    .iter()
    .map(|(k, x)| vec![k.to_string(), s(x)])
    .collect();
    if r.is_object() {
        for (k, x) in [
            ("replay state", &r["state"]),
            ("applied index", &r["applied_index"]),
            ("standby checkpoint", &r["standby_checkpoint"]),
            ("confirmed index", &r["confirmed_index"]),
            ("lag entries", &r["lag_entries"]),
            ("lag seconds", &r["lag_seconds"]),
            ("standby revision", &r["standby_revision"]),
            ("replay error code", &r["error_code"]),
            ("replay error", &r["error"]),
        ] {
            rows.push(vec![k.to_string(), s(x)]);
        }
    }
    if let Some(role) = v["ha"]["role"].as_str() {
        rows.push(vec!["ha role".into(), role.to_owned()]);
    }
    rows.retain(|r| !r[1].is_empty());
    output::bordered_table(&["FIELD", "VALUE"], &rows)
}

async fn verify_cmd(
    source: SourceArgs,
    standby: StandbyArgs,
    prefixes: PrefixArgs,
    w: WriteOut,
    at_checkpoint: bool,
    at_revision: Option<i64>,
) -> anyhow::Result<Verdict> {
    use anyhow::Context;
    if standby.standby_endpoints.is_empty() {
        return Err(UsageError("verify needs --standby-endpoints".into()).into());
    }
    let src = etcd_standby_client::Client::connect(source.client()?)
        .await
        .context("connecting to the source")?;
    let dst = etcd_standby_client::Client::connect(standby.client())
        .await
        .context("connecting to the standby")?;
    let keys = prefixes.key_map();
    let at = if at_checkpoint {
        let cluster_id = src
            .member_list()
            .await
            .context("reading the source's cluster ID")?
            .header
            .map_or(0, |h| h.cluster_id);
        let point = etcd_standby_sink::verify::checkpoint_point(&dst, &keys, cluster_id)
            .await
            .context("reading the standby's checkpoint")?
            .ok_or_else(|| {
                UsageError(format!(
                    "--at-checkpoint: the standby has no checkpoint with the primary's revision for \
                     cluster {cluster_id:016x} yet (none written, or written by a reconcile); retry \
                     after the next replicated write"
                ))
            })?;
        eprintln!(
            "comparing keys at raft index {} (primary revision {}, standby revision {}); \
             leases and auth are not compared at a checkpoint",
            point.index, point.source_revision, point.standby_revision
        );
        Some(point)
    } else if let Some(r) = at_revision {
        eprintln!(
            "comparing keys at revision {r} on both sides (values, lease attachments, \
             create/mod revision and version); leases and auth are not compared at a revision"
        );
        Some(etcd_standby_sink::verify::ReadPoint {
            index: 0,
            source_revision: r,
            standby_revision: r,
        })
    } else {
        None
    };
    let compared = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let opts = etcd_standby_sink::verify::VerifyOptions {
        ignore_users: standby.standby_user.iter().cloned().collect(),
        at,
        compare_revisions: at_revision.is_some(),
        progress: Some(compared.clone()),
    };
    // The bar's length is a count-only read, made only when a bar is drawn;
    // without it the bar still counts.
    let total = if progress::Progress::shown(progress::Stdout::Summary) {
        etcd_standby_sink::verify::count_source_keys(
            &src,
            &keys,
            at.map_or(0, |p| p.source_revision),
        )
        .await
        .ok()
    } else {
        None
    };
    let bar = progress::Progress::items("comparing keys", total, progress::Stdout::Summary);
    let run = etcd_standby_sink::verify::verify_with(&src, &dst, &keys, &opts);
    tokio::pin!(run);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let diffs = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tick.tick() => bar.set(compared.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }
    .context("comparing the clusters")?;
    bar.finish();
    let mut out = output::Out::new();
    let json = w == WriteOut::Json;
    if w == WriteOut::Table {
        let o = |x: &Option<String>| x.clone().unwrap_or_default();
        let rows: Vec<Vec<String>> = diffs
            .iter()
            .map(|d| {
                let kind = serde_json::to_value(d.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                vec![kind, o(&d.key), o(&d.id), o(&d.source), o(&d.standby)]
            })
            .collect();
        if !rows.is_empty() {
            for l in
                output::bordered_table(&["DIFFERENCE", "KEY", "ID", "SOURCE", "STANDBY"], &rows)
                    .lines()
            {
                out.line(l)?;
            }
        }
    } else {
        for d in &diffs {
            if json {
                out.json(&serde_json::to_value(d)?)?;
            } else {
                out.line(&d.to_string())?;
            }
        }
    }
    if json {
        out.json(&serde_json::json!({"summary": {"differences": diffs.len()}}))?;
    } else {
        out.line(&format!("{} difference(s)", diffs.len()))?;
    }
    out.flush()?;
    Ok(if diffs.is_empty() {
        Verdict::Clean
    } else {
        Verdict::Problem
    })
}

fn run(cli: Cli) -> anyhow::Result<Verdict> {
    match cli.cmd {
        Command::Run(a) => {
            let code = run_daemon(*a)?;
            std::process::exit(code);
        }
        Command::Promote(p) => {
            let code = promotecmd::promote(*p)?;
            std::process::exit(code);
        }
        Command::Status {
            admin,
            json,
            write_out,
        } => {
            print_status(&admin, write_out.or_json(json))?;
            Ok(Verdict::Clean)
        }
        Command::Verify(v) => {
            let v = *v;
            let w = v.write_out.or_json(v.json);
            runtime()?.block_on(verify_cmd(
                v.source,
                v.standby,
                v.prefixes,
                w,
                v.at_checkpoint,
                v.at_revision,
            ))
        }
        Command::Seed(a) => seedcmd::seed_cmd(*a),
        Command::Leave { data_dir, source } => {
            runtime()?.block_on(etcd_standby_daemon::leave(data_dir, source.client()?))?;
            Ok(Verdict::Clean)
        }
        Command::Wal { cmd } => match cmd {
            WalCmd::Dump {
                json,
                start_index,
                end_index,
                types,
                key_prefix,
                show_secrets,
                outcome,
                source_version,
                path,
            } => {
                let outcome = outcome.then(|| etcd_standby_model::ModelConfig {
                    version: if source_version == "3.4" {
                        etcd_standby_model::EtcdMinor::V3_4
                    } else {
                        etcd_standby_model::EtcdMinor::V3_5
                    },
                    ..Default::default()
                });
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
                        outcome,
                    },
                )
            }
            WalCmd::Verify { json, path } => walcmd::verify(&path, json),
            WalCmd::Stats {
                json,
                write_out,
                prefix_depth,
                top,
                path,
            } => walcmd::stats(&path, write_out.or_json(json), prefix_depth.max(1), top),
        },
        Command::Snap {
            cmd: SnapCmd::Dump { json, path },
        } => snapcmd::dump(&path, json),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "etcd-standby", &mut out);
            write_stdout(&out)?;
            Ok(Verdict::Clean)
        }
        Command::Man { subcommand } => {
            use clap::CommandFactory;
            let root = Cli::command();
            let page = match &subcommand {
                None => root,
                Some(name) => {
                    let Some(sub) = root.find_subcommand(name) else {
                        return Err(UsageError(format!("no subcommand {name:?}")).into());
                    };
                    sub.clone()
                        .display_name(format!("etcd-standby-{name}"))
                        .bin_name(format!("etcd-standby {name}"))
                }
            };
            let mut out = Vec::new();
            clap_mangen::Man::new(page).render(&mut out)?;
            write_stdout(&out)?;
            Ok(Verdict::Clean)
        }
        Command::Config { cmd } => {
            let (check, a) = match cmd {
                ConfigCmd::Check(a) => (true, a),
                ConfigCmd::Print(a) => (false, a),
            };
            config_cmd(check, a.file.or(cli.config), &a.for_cmd, &a.args)
        }
        Command::Db {
            cmd:
                DbCmd::Dump {
                    json,
                    write_out,
                    bucket,
                    key_prefix,
                    show_secrets,
                    pages,
                    path,
                },
        } => dbcmd::dump(
            &path,
            &dbcmd::DbOptions {
                write_out: write_out.or_json(json),
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

/// Writes generated text to stdout (a closed pipe is not an error).
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(bytes).and_then(|()| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(PipeClosed.into()),
        r => Ok(r?),
    }
}

/// `config check` / `config print`.
fn config_cmd(
    check: bool,
    file: Option<PathBuf>,
    sub: &str,
    extra: &[String],
) -> anyhow::Result<Verdict> {
    use clap::CommandFactory;
    let mut argv: Vec<std::ffi::OsString> = vec!["etcd-standby".into(), sub.into()];
    argv.extend(extra.iter().map(Into::into));
    let env = |k: &str| std::env::var_os(k);
    let (argv, from_file) = match &file {
        Some(f) => {
            let a = config::apply_file(argv, f, &env)?;
            (a.argv, a.from_file)
        }
        None => (argv, Default::default()),
    };
    let root = Cli::command();
    let matches = match root.clone().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => {
            let origin = file.as_ref().map_or("the environment".to_owned(), |f| {
                format!("{} with the environment", f.display())
            });
            return Err(UsageError(format!(
                "`{sub}` would not start from {origin}: {}",
                e.render().to_string().trim_end()
            ))
            .into());
        }
    };
    let mut out = output::Out::new();
    if check {
        out.line(&format!(
            "ok: `{sub}` would start ({} setting(s) from {})",
            from_file.len(),
            file.as_ref()
                .map_or("no file".to_owned(), |f| f.display().to_string())
        ))?;
    } else {
        let (Some(sub_cmd), Some(sub_m)) =
            (root.find_subcommand(sub), matches.subcommand_matches(sub))
        else {
            return Err(UsageError(format!("no subcommand {sub}")).into());
        };
        for line in config::render_effective(sub_cmd, sub_m, &from_file).lines() {
            out.line(line)?;
        }
    }
    out.flush()?;
    Ok(Verdict::Clean)
}

/// The process arguments with the configuration file's values inserted.
fn args_with_config() -> Result<Vec<std::ffi::OsString>, UsageError> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let env = |k: &str| std::env::var_os(k);
    // `config check|print` read the file themselves.
    if argv.get(1).is_some_and(|a| a == "config") {
        return Ok(argv);
    }
    match config::config_path(&argv, &env) {
        Some(path) => Ok(config::apply_file(argv, &path, &env)?.argv),
        None => Ok(argv),
    }
}

fn main() {
    let cli = match args_with_config() {
        Ok(argv) => Cli::parse_from(argv),
        Err(e) => {
            eprintln!("etcd-standby: {e}");
            std::process::exit(EXIT_USAGE_OR_IO);
        }
    };
    let code = match run(cli) {
        Ok(v) => v.exit_code(),
        Err(e) if e.downcast_ref::<PipeClosed>().is_some() => EXIT_OK,
        Err(e) => {
            eprintln!("etcd-standby: {e:#}");
            if let Some(c) = e
                .chain()
                .find_map(|c| c.downcast_ref::<etcd_standby_daemon::Error>())
                .map(etcd_standby_daemon::Error::code)
            {
                eprintln!(
                    "etcd-standby: {}: {}. What to do: {} (docs/runbook.md, error codes)",
                    c.id, c.title, c.action
                );
            }
            EXIT_USAGE_OR_IO
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::{parse_dial_via, parse_peer_listen};

    #[test]
    fn peer_dial_via_takes_host_port_pairs_and_refuses_the_rest() {
        assert_eq!(
            parse_dial_via("etcd-a1:2380=127.0.0.1:12380"),
            Ok(("etcd-a1:2380".to_string(), "127.0.0.1:12380".to_string()))
        );
        assert_eq!(
            parse_dial_via("[::1]:2380=[::1]:9"),
            Ok(("[::1]:2380".to_string(), "[::1]:9".to_string()))
        );
        for bad in [
            "etcd-a1:2380",
            "etcd-a1=b:1",
            "a:1=b",
            "a:1=:2",
            "a:x=b:1",
            "",
        ] {
            assert!(parse_dial_via(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peer_listen_takes_etcd_style_urls_and_bare_addresses() {
        let ok = |s: &str, tls: bool| parse_peer_listen(s, tls).map(|a| a.to_string());
        assert_eq!(ok("127.0.0.1:2380", false).as_deref(), Ok("127.0.0.1:2380"));
        assert_eq!(
            ok("http://127.0.0.1:2380", false).as_deref(),
            Ok("127.0.0.1:2380")
        );
        assert_eq!(
            ok("https://127.0.0.1:2380", true).as_deref(),
            Ok("127.0.0.1:2380")
        );
        assert_eq!(ok("http://[::1]:2380", false).as_deref(), Ok("[::1]:2380"));
        assert_eq!(
            ok("http://0.0.0.0:2380/", false).as_deref(),
            Ok("0.0.0.0:2380")
        );
    }

    #[test]
    fn peer_listen_refuses_what_cannot_be_bound_as_asked() {
        for (s, tls) in [
            ("https://127.0.0.1:2380", false),
            ("http://127.0.0.1:2380", true),
            ("http://standby-b:2380", false),
            ("unix:///tmp/x", false),
            ("127.0.0.1", false),
        ] {
            assert!(
                parse_peer_listen(s, tls).is_err(),
                "{s} (tls {tls}) was accepted"
            );
        }
    }
}
