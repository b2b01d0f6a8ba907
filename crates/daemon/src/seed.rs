//! Seeding a revision-preserving standby (`etcd-standby seed`,
//! `run --preserve-revisions`).
//!
//! etcd's own restore tool (`etcdctl snapshot restore` on 3.4, `etcdutl
//! snapshot restore` on 3.5) turns a primary's backend into new member data
//! dirs that keep every key with its create / mod revision and version, the
//! history above the compaction, the compact revision, leases and auth
//! (docs/revision-preserving.md). A standby started from them is at the
//! primary's revision; replay then goes on from the snapshot's raft index,
//! one standby txn per primary revision. The restore keeps neither the raft
//! index nor a usable consistent index, so the seed records them itself:
//! `<data-dir>/replay/seed.json` (this record) next to `seed.db` (the
//! snapshot, which the shadow model starts from).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use etcd_standby_bolt::BoltFile;
use etcd_standby_client::Client;
use etcd_standby_sink::PreserveRevisions;
use serde::{Deserialize, Serialize};

use crate::codes::SEED_REFUSED;
use crate::datadir::write_atomic;
use crate::error::{Context, Error, Result};
use crate::store::Layout;

/// Returns a seed refusal (ES-1113) with a formatted message.
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err(Error::refusal(SEED_REFUSED, format!($($arg)*)))
    };
}

/// Version of [`SeedRecord`]'s format.
pub const SEED_FORMAT: u32 = 1;

/// What a seed is: where the standby starts (the primary's state after
/// raft entry `index`, at `revision`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeedRecord {
    /// [`SEED_FORMAT`].
    pub format: u32,
    /// The primary's cluster ID (hex).
    pub source_cluster_id: String,
    /// The raft index the snapshot holds everything up to (its consistent
    /// index): replay resumes after it.
    pub index: u64,
    /// Its term, when the db records it (3.5), else 0.
    pub term: u64,
    /// The primary's revision there (the larger of the newest revision in
    /// the `key` bucket and the finished compaction, as etcd restores it;
    /// `snapshot status` can report less).
    pub revision: i64,
    /// The compact revision in the snapshot (-1: never compacted).
    pub compact_revision: i64,
    /// The primary's HashKV at `revision`, when it could still be read
    /// (a standby with no checkpoint must match it).
    pub hash_kv: Option<u32>,
    /// Bytes of the snapshot db.
    pub db_bytes: u64,
    /// Where the snapshot came from.
    pub source: String,
    /// When the seed was made (Unix ms).
    pub created_unix_ms: u64,
    /// The standby members restored from it.
    pub members: Vec<SeedMember>,
}

/// One standby member a seed restored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeedMember {
    /// Its `--name`.
    pub name: String,
    /// Its `--initial-advertise-peer-urls`.
    pub peer_url: String,
    /// The data dir the restore wrote (start the member with it).
    pub data_dir: PathBuf,
}

impl SeedRecord {
    /// The primary's cluster ID.
    pub fn cluster_id(&self) -> Result<u64> {
        u64::from_str_radix(&self.source_cluster_id, 16)
            .ok()
            .with_context(|| format!("seed record: cluster id {:?}", self.source_cluster_id))
    }

    /// The sink's view of the seed.
    pub fn preserve(&self) -> PreserveRevisions {
        PreserveRevisions {
            seed_index: self.index,
            seed_revision: self.revision,
            seed_hash: self.hash_kv,
        }
    }
}

/// `<data-dir>/replay/seed.json`.
pub fn record_path(layout: &Layout) -> PathBuf {
    layout.model_dir().join("seed.json")
}

/// `<data-dir>/replay/seed.db`: the snapshot the model starts from.
pub fn db_path(layout: &Layout) -> PathBuf {
    layout.model_dir().join("seed.db")
}

/// The seed of this data dir, if `etcd-standby seed` made one.
pub fn read(layout: &Layout) -> Result<Option<SeedRecord>> {
    let path = record_path(layout);
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let rec: SeedRecord =
        serde_json::from_slice(&body).with_context(|| format!("reading {}", path.display()))?;
    if rec.format != SEED_FORMAT {
        refuse!(
            "{}: seed format {} is not {SEED_FORMAT} (made by another version of etcd-standby)",
            path.display(),
            rec.format
        );
    }
    Ok(Some(rec))
}

/// The data dir's seed as the sink takes it, checked to be of
/// `cluster_id` (`None`: no seed yet).
pub fn preserve_for(layout: &Layout, cluster_id: u64) -> Result<Option<PreserveRevisions>> {
    let Some(rec) = read(layout)? else {
        return Ok(None);
    };
    let seeded = rec.cluster_id()?;
    if seeded != cluster_id {
        refuse!(
            "{}: the seed is of cluster {seeded:016x}, the learner follows {cluster_id:016x}",
            record_path(layout).display()
        );
    }
    if !db_path(layout).is_file() {
        refuse!(
            "{} names a seed whose snapshot {} is missing; seed again",
            record_path(layout).display(),
            db_path(layout).display()
        );
    }
    Ok(Some(rec.preserve()))
}

/// What a snapshot db says about where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbPoint {
    /// Consistent index (the last raft entry applied into it); 0 when the
    /// db has none (etcd 3.4 records it only with key writes).
    pub index: u64,
    /// Term, when recorded (3.5), else 0.
    pub term: u64,
    /// Revision as etcd restores it.
    pub revision: i64,
    /// Compact revision (-1: none).
    pub compact_revision: i64,
    /// Whether it ends with the SHA-256 of a `snapshot save` (else the
    /// restore needs `--skip-hash-check`).
    pub has_hash: bool,
}

/// Reads where `db` stands (a `Maintenance.Snapshot` / `snapshot save` file
/// or a leader's `.snap.db`) without reading its values.
pub fn db_point(db: &Path) -> Result<DbPoint> {
    let f = BoltFile::open(db).with_context(|| format!("opening snapshot db {}", db.display()))?;
    f.verify_trailer()
        .with_context(|| format!("snapshot db {} (a damaged copy?)", db.display()))?;
    let has_hash = f.trailer().is_some();
    let meta = etcd_standby_bolt::etcd::read_meta(&f)
        .with_context(|| format!("reading the meta bucket of {}", db.display()))?;
    let latest = etcd_standby_bolt::etcd::live_keys(&f)
        .with_context(|| format!("scanning the key history of {}", db.display()))?
        .stats()
        .latest;
    Ok(DbPoint {
        index: meta.consistent_index.unwrap_or(0),
        term: meta.term.unwrap_or(0),
        revision: meta.restored_revision(latest),
        compact_revision: meta.compact_revision(),
        has_hash,
    })
}

/// Saves `db` as the data dir's seed snapshot and `record` as its seed
/// (the db first, so a record never names a db that is not there).
pub fn install(layout: &Layout, record: &SeedRecord, db: &Path) -> Result<()> {
    let dir = layout.model_dir();
    crate::datadir::make_private_dir(&layout.root)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = db_path(layout);
    let tmp = dest.with_extension("db.tmp");
    std::fs::copy(db, &tmp)
        .with_context(|| format!("copying {} to {}", db.display(), tmp.display()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("renaming to {}", dest.display()))?;
    let body = serde_json::to_vec_pretty(record).context("encoding the seed record")?;
    write_atomic(&record_path(layout), &body)
}

/// Which restore tool (`etcdutl` for 3.5, `etcdctl` for 3.4) and where.
#[derive(Debug, Clone)]
pub struct RestoreTool {
    /// Path of the binary.
    pub path: PathBuf,
}

impl RestoreTool {
    /// `path`, or the first of `etcdutl`, `etcdctl` on `PATH`.
    pub fn find(path: Option<PathBuf>) -> Result<RestoreTool> {
        if let Some(path) = path {
            return Ok(RestoreTool { path });
        }
        let dirs = std::env::var_os("PATH").unwrap_or_default();
        for name in ["etcdutl", "etcdctl"] {
            for d in std::env::split_paths(&dirs) {
                let p = d.join(name);
                if p.is_file() {
                    return Ok(RestoreTool { path: p });
                }
            }
        }
        refuse!(
            "no etcdutl or etcdctl on PATH: give the standby's version of the restore tool with \
             --restore-tool (etcdutl for 3.5, etcdctl for 3.4)"
        )
    }

    fn is_etcdutl(&self) -> bool {
        self.path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("etcdutl"))
    }

    /// Restores `db` into `member.data_dir` for a standby of `members`.
    pub fn restore(
        &self,
        db: &Path,
        point: &DbPoint,
        member: &SeedMember,
        members: &[SeedMember],
        token: &str,
    ) -> Result<()> {
        let cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = std::process::Command::new(&self.path);
        cmd.arg("snapshot")
            .arg("restore")
            .arg(db)
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg("--initial-cluster")
            .arg(&cluster)
            .arg("--initial-cluster-token")
            .arg(token)
            .arg("--initial-advertise-peer-urls")
            .arg(&member.peer_url);
        if !point.has_hash {
            cmd.arg("--skip-hash-check");
        }
        if !self.is_etcdutl() {
            cmd.env("ETCDCTL_API", "3");
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {}", self.path.display()))?;
        if !out.status.success() {
            refuse!(
                "{} snapshot restore for member {} failed ({}): {}",
                self.path.display(),
                member.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// Where the seed's snapshot comes from.
#[derive(Debug, Clone)]
pub enum SeedSource {
    /// `Maintenance.Snapshot` from this endpoint of the primary.
    Primary {
        /// The primary's client.
        client: Client,
        /// The member to take it from.
        endpoint: String,
    },
    /// A db file: `etcdctl snapshot save` output, or a leader snapshot the
    /// learner received (`<data-dir>/member/snap/<index>.snap.db`).
    File(PathBuf),
}

/// What `etcd-standby seed` is asked to do.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// The snapshot.
    pub source: SeedSource,
    /// The primary's cluster ID, when the source cannot tell (a file).
    pub cluster_id: Option<u64>,
    /// The standby members: `(name, peer URL)`, 1 or 3 (or more).
    pub members: Vec<(String, String)>,
    /// `--initial-cluster-token` of the standby.
    pub token: String,
    /// Where the member data dirs (`<out>/<name>`), the snapshot and a
    /// copy of the record go.
    pub out: PathBuf,
    /// The restore tool.
    pub tool: RestoreTool,
    /// The replicator's data dir: the seed is installed there (omit to
    /// install it later by hand).
    pub data_dir: Option<Layout>,
}

/// Takes (or reads) the snapshot, restores it for every standby member,
/// and records the seed. Refuses a data dir whose local log cannot continue
/// after the snapshot's index.
pub async fn seed(opts: SeedOptions) -> Result<SeedRecord> {
    if opts.members.is_empty() {
        refuse!("seed needs at least one standby member (--standby-member NAME=PEER_URL)");
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    for (name, _) in &opts.members {
        let dir = opts.out.join(name);
        if dir.exists() {
            refuse!(
                "{} exists: the restore writes a new member data dir there; remove it or choose \
                 another --out",
                dir.display()
            );
        }
    }
    // The member's applied index around the snapshot: when it did not move,
    // the snapshot holds exactly the entries up to it (etcd commits its
    // backend before streaming one). On 3.4 the db's own consistent index
    // can lag it: entries that touch no key did not move it.
    let mut applied_around = None;
    let (db, cluster_id, source, hash_client) = match &opts.source {
        SeedSource::Primary { client, endpoint } => {
            let status = async || {
                client
                    .status(endpoint)
                    .await
                    .with_context(|| format!("reading the status of {endpoint}"))
            };
            let before = status().await?.raft_applied_index;
            let db = opts.out.join("snapshot.db");
            let mut f = tokio::fs::File::create(&db)
                .await
                .with_context(|| format!("creating {}", db.display()))?;
            let (bytes, header) = client
                .snapshot_to(endpoint, &mut f)
                .await
                .with_context(|| format!("taking a snapshot of the primary at {endpoint}"))?;
            f.sync_all()
                .await
                .with_context(|| format!("syncing {}", db.display()))?;
            tracing::info!(bytes, endpoint = %endpoint, "snapshot of the primary taken");
            let after = status().await?;
            applied_around =
                (before == after.raft_applied_index).then_some(after.raft_applied_index);
            // The snapshot stream's header may carry no IDs (3.5); the
            // status's header always does.
            let cluster = [header, after.header]
                .into_iter()
                .flatten()
                .map(|h| h.cluster_id)
                .find(|c| *c != 0)
                .context(
                    "neither the snapshot nor the status of the primary carried a cluster ID",
                )?;
            (
                db,
                cluster,
                format!("Maintenance.Snapshot from {endpoint}"),
                Some((client.clone(), endpoint.clone())),
            )
        }
        SeedSource::File(path) => {
            let cluster = match opts.cluster_id {
                Some(c) => c,
                None => match &opts.data_dir {
                    Some(l) => l
                        .read_identity()?
                        .map(|i| i.cluster_id)
                        .context("the data dir has no identity yet: give --source-cluster-id")?,
                    None => refuse!("seeding from a file needs --source-cluster-id or --data-dir"),
                },
            };
            (
                path.clone(),
                cluster,
                format!("file {}", path.display()),
                None,
            )
        }
    };
    let mut point = db_point(&db)?;
    match applied_around {
        Some(a) if a > point.index => {
            tracing::info!(
                consistent_index = point.index,
                applied = a,
                "the snapshot's consistent index lags the member's applied index (etcd 3.4 moves it only for key writes); replay continues after the applied index"
            );
            point.index = a;
        }
        Some(_) => {}
        None if matches!(opts.source, SeedSource::Primary { .. }) => tracing::warn!(
            consistent_index = point.index,
            "the primary applied entries while the snapshot was taken: replay continues after the db's consistent index (on etcd 3.4, entries after it that touch no key are applied to the model again; seed while the primary is quiet to avoid it)"
        ),
        None => {}
    }
    if point.index == 0 {
        refuse!(
            "snapshot db {}: no consistent index in its meta bucket (an etcd 3.4 primary with no key \
             written yet records none), so it cannot say where the raft log continues; seed from \
             the primary itself (--source-endpoints) while it is quiet, or after a first write",
            db.display()
        );
    }
    if let Some(layout) = &opts.data_dir {
        check_log_reaches(layout, point.index)?;
        if let Some(id) = layout.read_identity()?
            && id.cluster_id != cluster_id
        {
            refuse!(
                "the snapshot is of cluster {cluster_id:016x}, the data dir replicates {:016x}",
                id.cluster_id
            );
        }
    }
    let hash_kv = match hash_client {
        Some((client, endpoint)) => match client.hash_kv(&endpoint, point.revision).await {
            Ok(h) => Some(h.hash),
            Err(e) => {
                tracing::warn!(error = %e, revision = point.revision, "cannot read the primary's HashKV at the seed revision; the standby's keys are then checked by revision only");
                None
            }
        },
        None => None,
    };
    let members: Vec<SeedMember> = opts
        .members
        .iter()
        .map(|(name, url)| SeedMember {
            name: name.clone(),
            peer_url: url.clone(),
            data_dir: opts.out.join(name),
        })
        .collect();
    for m in &members {
        opts.tool.restore(&db, &point, m, &members, &opts.token)?;
    }
    let record = SeedRecord {
        format: SEED_FORMAT,
        source_cluster_id: format!("{cluster_id:016x}"),
        index: point.index,
        term: point.term,
        revision: point.revision,
        compact_revision: point.compact_revision,
        hash_kv,
        db_bytes: std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0),
        source,
        created_unix_ms: crate::clock::unix_ms(SystemTime::now()),
        members,
    };
    let body = serde_json::to_vec_pretty(&record).context("encoding the seed record")?;
    write_atomic(&opts.out.join("seed.json"), &body)?;
    if let Some(layout) = &opts.data_dir {
        install(layout, &record, &db)?;
    }
    Ok(record)
}

/// Refuses a seed the data dir's local log cannot continue from: its WAL
/// must hold raft index `index + 1` or start at or before it (a data dir
/// with no log yet is fine: the learner joins after the seed, and replay
/// halts with the remedy if the leader's first snapshot is newer).
pub fn check_log_reaches(layout: &Layout, index: u64) -> Result<()> {
    let wal = layout.wal();
    let segments = match etcd_standby_wal::list_segments(&wal) {
        Ok(s) => s,
        Err(_) if !wal.exists() => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", wal.display())),
    };
    if let Some(first) = segments.first()
        && first.index > index
    {
        let newest = layout
            .snap_dbs()
            .ok()
            .and_then(|d| d.into_iter().next_back())
            .map(|(_, p)| p.display().to_string());
        refuse!(
            "the replicator's local log starts after raft index {} but the snapshot holds \
             entries up to {index} only: replay could not continue from it. Seed from a newer \
             snapshot{}",
            first.index,
            newest.map_or(String::new(), |p| format!(
                " (the learner's own: --from-db {p})"
            ))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            segment_bytes: None,
        }
    }

    #[test]
    fn a_data_dir_whose_log_starts_after_the_seed_index_is_refused_with_es_1113() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path());
        // No log yet: the learner joins after the seed.
        check_log_reaches(&l, 50).unwrap();
        let wal = l.wal();
        std::fs::create_dir_all(&wal).unwrap();
        std::fs::write(
            wal.join(etcd_standby_wal::names::segment_file_name(0, 100)),
            b"",
        )
        .unwrap();
        check_log_reaches(&l, 100).unwrap();
        let e = check_log_reaches(&l, 50).unwrap_err();
        assert_eq!(e.code().id, "ES-1113");
        assert!(e.to_string().contains("starts after raft index 100"), "{e}");
    }

    #[test]
    fn a_snapshot_save_file_says_where_the_log_continues() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..");
        for v in ["3.4.23", "3.5.1"] {
            let db = root.join(format!("shared/fixtures/etcd-{v}/etcdctl-snapshot.db"));
            let p = db_point(&db).unwrap();
            assert!(
                p.has_hash,
                "{v}: a snapshot save file ends with its SHA-256"
            );
            assert!(p.index > 0 && p.revision > 1, "{v}: {p:?}");
        }
    }
}
