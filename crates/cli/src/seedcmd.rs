//! `etcd-standby seed`: restore a revision-preserving standby from a primary
//! snapshot and record where replay continues. The work is
//! `etcd_standby_daemon::seed`.

use std::path::PathBuf;

use anyhow::Context;
use etcd_standby_daemon::seed::{self, RestoreTool, SeedOptions, SeedSource};
use etcd_standby_daemon::store::Layout;

use crate::output::Verdict;
use crate::{SourceArgs, UsageError, runtime};

/// `etcd-standby seed` flags.
#[derive(clap::Args)]
pub struct SeedArgs {
    /// The primary: the snapshot is taken from its first endpoint
    /// (`Maintenance.Snapshot`, as `etcdctl snapshot save`) unless
    /// `--from-db` gives one.
    #[command(flatten)]
    source: SourceArgs,
    /// Seed from this db instead: an `etcdctl snapshot save` file, or a
    /// leader snapshot the learner received
    /// (`<data-dir>/member/snap/<index>.snap.db`).
    #[arg(long)]
    from_db: Option<PathBuf>,
    /// The primary's cluster ID (hex), when seeding from a file without
    /// `--data-dir`.
    #[arg(long, value_parser = parse_hex)]
    source_cluster_id: Option<u64>,
    /// A standby member to restore, `NAME=PEER_URL` (repeat: 1 or 3
    /// members; the same names and peer URLs the standby will run with).
    #[arg(long = "standby-member", value_parser = parse_member, required = true)]
    members: Vec<(String, String)>,
    /// The standby's `--initial-cluster-token`.
    #[arg(long, default_value = "etcd-standby")]
    standby_cluster_token: String,
    /// Where the member data dirs (`<out>/<name>`), the snapshot and
    /// `seed.json` go. Start each standby member with its data dir.
    #[arg(long)]
    out: PathBuf,
    /// The standby version's restore tool: `etcdutl` (3.5) or `etcdctl`
    /// (3.4). Default: the first of them on PATH.
    #[arg(long)]
    restore_tool: Option<PathBuf>,
    /// The replicator's data dir: the seed is installed there, and a local
    /// log that cannot continue after the snapshot is refused. Then run
    /// `etcd-standby run --preserve-revisions` with it.
    #[arg(long, env = "ETCD_STANDBY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// One JSON object (the seed record) instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|e| format!("{s:?} is not a hex cluster ID: {e}"))
}

fn parse_member(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, u))
            if !n.is_empty() && (u.starts_with("http://") || u.starts_with("https://")) =>
        {
            Ok((n.to_owned(), u.to_owned()))
        }
        _ => Err(format!(
            "{s:?} is not NAME=PEER_URL (e.g. standby1=http://10.0.0.5:2380)"
        )),
    }
}

/// Runs `etcd-standby seed`.
pub fn seed_cmd(a: SeedArgs) -> anyhow::Result<Verdict> {
    let tool = RestoreTool::find(a.restore_tool.clone())?;
    let rt = runtime()?;
    let source = match (&a.from_db, a.source.optional()) {
        (Some(path), _) => SeedSource::File(path.clone()),
        (None, Some(cfg)) => {
            let endpoint = cfg
                .endpoints
                .first()
                .cloned()
                .ok_or_else(|| UsageError("--source-endpoints is empty".into()))?;
            let client = rt
                .block_on(etcd_standby_client::Client::connect(cfg))
                .context("connecting to the primary")?;
            SeedSource::Primary { client, endpoint }
        }
        (None, None) => {
            return Err(UsageError(
                "seed needs --source-endpoints (a snapshot of the primary) or --from-db".into(),
            )
            .into());
        }
    };
    let opts = SeedOptions {
        source,
        cluster_id: a.source_cluster_id,
        members: a.members.clone(),
        token: a.standby_cluster_token.clone(),
        out: a.out.clone(),
        tool,
        data_dir: a.data_dir.as_ref().map(|root| Layout {
            root: root.clone(),
            segment_bytes: None,
        }),
    };
    let rec = rt.block_on(seed::seed(opts))?;
    if a.json {
        println!("{}", serde_json::to_string(&rec)?);
        return Ok(Verdict::Clean);
    }
    println!(
        "seeded from {}: raft index {} (term {}), revision {}, compact revision {}, HashKV {}",
        rec.source,
        rec.index,
        rec.term,
        rec.revision,
        rec.compact_revision,
        rec.hash_kv
            .map_or_else(|| "not recorded".to_owned(), |h| h.to_string())
    );
    for m in &rec.members {
        println!(
            "  member {} ({}): data dir {}",
            m.name,
            m.peer_url,
            m.data_dir.display()
        );
    }
    match &a.data_dir {
        Some(d) => println!(
            "installed in {}; start the standby members from their data dirs, then \
             `etcd-standby run --preserve-revisions` (a running one picks the seed up)",
            d.display()
        ),
        None => println!(
            "not installed in a replicator data dir (no --data-dir): copy {} and the snapshot \
             there as replay/seed.json and replay/seed.db",
            a.out.join("seed.json").display()
        ),
    }
    Ok(Verdict::Clean)
}
