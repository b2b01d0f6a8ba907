//! The learner's durable local log, in etcd's own on-disk layout:
//! `<data-dir>/member/wal/*.wal`, `<data-dir>/member/snap/*.snap` and
//! `*.snap.db`, so `etcd-standby wal dump <data-dir>` (and etcd's tools) read
//! it. Plus `<data-dir>/standby.json`, our identity.
//!
//! Entries and the hard state are fsynced before the follower acknowledges
//! them. Periodically a snapshot *marker* (a `.snap` file holding the
//! membership as a v2 store document, plus a WAL snapshot record) bounds
//! what a restart has to load; segments wholly before the retention point
//! are deleted.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::committed::Retention;
use crate::error::{Context, Result, bail};
use crate::node::{LogStore, PersistStats};
use etcd_standby_follower::{Membership, Ready, Restored, v2store};
use etcd_standby_proto::{etcdserverpb, raftpb, walpb};
use etcd_standby_wal::{WalWriter, names, read_log, snap};
use serde::{Deserialize, Serialize};

/// Who we are; written once after MemberAdd, before anything else.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// Our member ID (hex in JSON for humans).
    #[serde(with = "hex_u64")]
    pub member_id: u64,
    /// The source cluster ID.
    #[serde(with = "hex_u64")]
    pub cluster_id: u64,
    /// The peer URLs we registered.
    pub peer_urls: Vec<String>,
    /// Our name.
    pub name: String,
    /// Set when the cluster removed us: this data dir can never rejoin.
    #[serde(default)]
    pub removed: bool,
}

mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:x}"))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

const IDENTITY_FILE: &str = "standby.json";

/// Paths of a data dir.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The data dir.
    pub root: PathBuf,
    /// WAL segment size (etcd's 64 MB unless a test shrinks it).
    pub segment_bytes: Option<u64>,
}

impl Layout {
    /// `<root>/member/wal`.
    pub fn wal(&self) -> PathBuf {
        self.root.join("member").join("wal")
    }
    /// `<root>/member/snap`.
    pub fn snap(&self) -> PathBuf {
        self.root.join("member").join("snap")
    }
    /// `member/snap/<index %016x>.snap.db`: the db of a leader snapshot.
    pub fn snap_db(&self, index: u64) -> PathBuf {
        self.snap().join(names::snap_db_file_name(index))
    }

    /// The leader snapshot dbs present, by index, ascending.
    pub fn snap_dbs(&self) -> std::io::Result<Vec<(u64, PathBuf)>> {
        indexed_files(&self.snap(), names::parse_snap_db_name)
    }

    /// `<root>/replay`: saved shadow models (`model-<index %016x>.bin`).
    pub fn model_dir(&self) -> PathBuf {
        self.root.join("replay")
    }

    /// The saved model at `index`.
    pub fn saved_model(&self, index: u64) -> PathBuf {
        self.model_dir()
            .join(names::indexed_file_name(MODEL_PREFIX, index, MODEL_SUFFIX))
    }

    /// The saved models present, by index, ascending.
    pub fn saved_models(&self) -> std::io::Result<Vec<(u64, PathBuf)>> {
        indexed_files(&self.model_dir(), |n| {
            names::parse_indexed_name(n, MODEL_PREFIX, MODEL_SUFFIX)
        })
    }

    /// `<root>/standby.json`.
    pub fn identity(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    /// Reads the identity, if this data dir has one.
    pub fn read_identity(&self) -> Result<Option<Identity>> {
        let p = self.identity();
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).with_context(|| format!("reading {}", p.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Writes the identity atomically (tmp file, fsync, rename, fsync dir).
    pub fn write_identity(&self, id: &Identity) -> Result<()> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let p = self.identity();
        // A per-process tmp name: `leave` and a running daemon may both write it.
        let tmp = p.with_extension(format!("json.{}.tmp", std::process::id()));
        let body = serde_json::to_vec_pretty(id)?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &p)?;
            sync_dir(&self.root)
        };
        write().with_context(|| format!("writing {}", p.display()))
    }
}

const MODEL_PREFIX: &str = "model-";
const MODEL_SUFFIX: &str = ".bin";

/// Files in `dir` whose names `parse` gives an index, by index, ascending.
fn indexed_files(
    dir: &Path,
    parse: impl Fn(&str) -> Option<u64>,
) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(i) = e.file_name().to_str().and_then(&parse) {
            out.push((i, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The durable log.
pub struct LocalLog {
    layout: Layout,
    wal: WalWriter,
    /// Latest snapshot or marker (index, term).
    base: (u64, u64),
    /// Last durable entry (index, term).
    last: (u64, u64),
    durable_commit: u64,
    identity: Identity,
    retention: Retention,
}

impl LocalLog {
    /// Creates the log of a freshly joined member.
    pub fn create(layout: &Layout, id: &Identity) -> Result<LocalLog> {
        let wal_dir = layout.wal();
        if wal_dir.exists() {
            bail!(
                "{} already holds a WAL but no identity; refusing to mix logs (move it away)",
                wal_dir.display()
            );
        }
        std::fs::create_dir_all(layout.snap())
            .with_context(|| format!("creating {}", layout.snap().display()))?;
        std::fs::create_dir_all(layout.root.join("member")).ok();
        let md = etcdserverpb::Metadata {
            node_id: id.member_id,
            cluster_id: id.cluster_id,
        };
        let wal = WalWriter::create(&wal_dir, &md)
            .map(|w| match layout.segment_bytes {
                Some(b) => w.with_segment_size(b),
                None => w,
            })
            .with_context(|| format!("creating {}", wal_dir.display()))?;
        Ok(LocalLog {
            layout: layout.clone(),
            wal,
            base: (0, 0),
            last: (0, 0),
            durable_commit: 0,
            identity: id.clone(),
            retention: Retention::unneeded(),
        })
    }

    /// Opens an existing log: repairs a torn tail like etcd, loads the newest
    /// snapshot or marker and the entries after it.
    pub fn open(layout: &Layout, id: &Identity) -> Result<(LocalLog, Restored)> {
        let wal_dir = layout.wal();
        let wal =
            WalWriter::open(&wal_dir).with_context(|| format!("opening {}", wal_dir.display()))?;
        let wal = match layout.segment_bytes {
            Some(b) => wal.with_segment_size(b),
            None => wal,
        };
        // Newest WAL snapshot record that has its .snap file.
        let all = read_log(&wal_dir, u64::MAX)
            .with_context(|| format!("scanning {}", wal_dir.display()))?;
        if let Some(md) = &all.metadata
            && (md.node_id != id.member_id || md.cluster_id != id.cluster_id)
        {
            bail!(
                "{} belongs to member {:x} of cluster {:x}, but {} says {:x} of {:x}",
                wal_dir.display(),
                md.node_id,
                md.cluster_id,
                layout.identity().display(),
                id.member_id,
                id.cluster_id
            );
        }
        let snap_dir = layout.snap();
        let mut base = raftpb::SnapshotMetadata::default();
        let mut membership = Membership::default();
        for rec in all.snapshots.iter().rev() {
            let path = snap_dir.join(names::snap_file_name(rec.term, rec.index));
            match snap::read_snap_file(&path) {
                Ok(sf) => {
                    let s = sf.snapshot;
                    let data = s.data.clone().unwrap_or_default();
                    membership = v2store::membership_from_v2_store(&data)
                        .with_context(|| format!("membership in {}", path.display()))?;
                    base = raftpb::SnapshotMetadata {
                        conf_state: Some(membership.conf_state()),
                        index: rec.index,
                        term: rec.term,
                    };
                    break;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "snapshot file unusable; trying an older one");
                }
            }
        }
        let log = read_log(&wal_dir, base.index)
            .with_context(|| format!("reading {}", wal_dir.display()))?;
        if let Some(t) = &log.torn_tail {
            // WalWriter::open repaired it; reading again cannot see one.
            bail!("torn tail remained after repair: {t}");
        }
        let hard_state = log.hard_state.unwrap_or_default();
        let last = log
            .entries
            .last()
            .map_or((base.index, base.term), |e| (e.index, e.term));
        let restored = Restored {
            base: base.clone(),
            membership,
            entries: log.entries,
            hard_state,
        };
        Ok((
            LocalLog {
                layout: layout.clone(),
                wal,
                base: (base.index, base.term),
                last,
                durable_commit: hard_state.commit,
                identity: id.clone(),
                retention: Retention::unneeded(),
            },
            restored,
        ))
    }

    /// Makes WAL release wait for replay: from now on nothing at or after
    /// the returned handle's floor is released; replay advances it.
    pub fn retain_for_replay(&mut self) -> Retention {
        self.retention = Retention::keep_all();
        self.retention.clone()
    }

    /// Base snapshot (index, term).
    pub fn base(&self) -> (u64, u64) {
        self.base
    }

    /// Last durable entry (index, term).
    pub fn last(&self) -> (u64, u64) {
        self.last
    }

    /// Durable commit index.
    pub fn durable_commit(&self) -> u64 {
        self.durable_commit
    }

    /// Persists one Ready: the snapshot (with its db, renamed into place),
    /// entries and hard state, then fsyncs once. Returns what was written.
    pub fn persist(&mut self, rd: &Ready, db: Option<&Path>) -> Result<PersistStats> {
        let mut stats = PersistStats::default();
        if let Some(s) = &rd.snapshot {
            let meta = s.metadata.clone().unwrap_or_default();
            let snap_dir = self.layout.snap();
            if let Some(db) = db {
                let dest = self.layout.snap_db(meta.index);
                std::fs::rename(db, &dest)
                    .with_context(|| format!("moving snapshot db to {}", dest.display()))?;
            }
            snap::write_snap_file(&snap_dir, s).context("writing .snap")?;
            sync_dir(&snap_dir).context("fsync snap dir")?;
            self.wal
                .save_snapshot(&walpb::Snapshot {
                    index: meta.index,
                    term: meta.term,
                    conf_state: meta.conf_state.clone(),
                })
                .context("WAL snapshot record")?;
            self.base = (meta.index, meta.term);
            self.last = (meta.index, meta.term);
        }
        if !rd.entries.is_empty() || rd.hard_state.is_some() {
            self.wal
                .save(rd.hard_state.as_ref(), &rd.entries)
                .context("appending to the WAL")?;
        }
        for e in &rd.entries {
            stats.entries += 1;
            stats.bytes += e.data.as_ref().map_or(0, |d| d.len() as u64);
        }
        if let Some(e) = rd.entries.last() {
            self.last = (e.index, e.term);
        }
        if rd.must_sync
            || rd.snapshot.is_some()
            || !rd.entries.is_empty()
            || rd.hard_state.is_some()
        {
            let t = Instant::now();
            self.wal.sync().context("fsync WAL")?;
            stats.fsync = Some(t.elapsed());
        }
        if let Some(hs) = &rd.hard_state {
            self.durable_commit = hs.commit;
        }
        Ok(stats)
    }

    /// Writes a marker at `index` (committed, durable): a `.snap` file with
    /// the membership and a WAL snapshot record. Restarts load from here.
    pub fn mark(&mut self, index: u64, term: u64, membership: &Membership) -> Result<()> {
        if index <= self.base.0 {
            return Ok(());
        }
        let s = raftpb::Snapshot {
            data: Some(v2store::membership_to_v2_store(membership).into()),
            metadata: Some(raftpb::SnapshotMetadata {
                conf_state: Some(membership.conf_state()),
                index,
                term,
            }),
        };
        let snap_dir = self.layout.snap();
        snap::write_snap_file(&snap_dir, &s).context("writing marker .snap")?;
        sync_dir(&snap_dir).context("fsync snap dir")?;
        self.wal
            .save_snapshot(&walpb::Snapshot {
                index,
                term,
                conf_state: Some(membership.conf_state()),
            })
            .context("WAL marker record")?;
        self.wal.sync().context("fsync WAL")?;
        self.base = (index, term);
        Ok(())
    }

    /// Deletes WAL segments whose entries all lie before `keep_from` (never
    /// the segment being written, never anything after the latest base), and
    /// `.snap` / `.snap.db` files older than the newest few. Returns the
    /// number of files removed.
    pub fn release(&mut self, keep_from: u64) -> Result<usize> {
        let keep_from = keep_from.min(self.base.0).min(self.retention.floor());
        let wal_dir = self.layout.wal();
        let segs = etcd_standby_wal::list_segments(&wal_dir).context("listing segments")?;
        let mut removed = 0;
        for w in segs.windows(2) {
            // Every entry of w[0] is below w[1]'s first index.
            if w[1].index <= keep_from.saturating_add(1) {
                std::fs::remove_file(&w[0].path)
                    .with_context(|| format!("removing {}", w[0].path.display()))?;
                removed += 1;
            } else {
                break;
            }
        }
        let snap_dir = self.layout.snap();
        let snaps = snap::list_snap_files(&snap_dir).context("listing .snap files")?;
        for old in snaps.iter().skip(3) {
            std::fs::remove_file(old).with_context(|| format!("removing {}", old.display()))?;
            removed += 1;
        }
        // Keep only the newest snapshot db (the replay reconciles from it).
        let dbs = self
            .layout
            .snap_dbs()
            .with_context(|| format!("listing {}", snap_dir.display()))?;
        if dbs.len() > 1 {
            for (_, p) in &dbs[..dbs.len() - 1] {
                std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
                removed += 1;
            }
        }
        if removed > 0 {
            // Removals are not acknowledgements: a lost one only means a file is deleted again.
            for d in [&wal_dir, &snap_dir] {
                if let Err(e) = sync_dir(d) {
                    tracing::warn!(dir = %d.display(), error = %e, "fsync after releasing files");
                }
            }
        }
        Ok(removed)
    }
}

impl LogStore for LocalLog {
    fn persist(&mut self, rd: &Ready, db: Option<&Path>) -> Result<PersistStats> {
        LocalLog::persist(self, rd, db)
    }
    fn mark(&mut self, index: u64, term: u64, membership: &Membership) -> Result<()> {
        LocalLog::mark(self, index, term, membership)
    }
    fn release(&mut self, keep_from: u64) -> Result<usize> {
        LocalLog::release(self, keep_from)
    }
    fn base(&self) -> (u64, u64) {
        self.base
    }
    fn last(&self) -> (u64, u64) {
        self.last
    }
    fn durable_commit(&self) -> u64 {
        self.durable_commit
    }
    fn record_removal(&mut self) -> Result<()> {
        let mut id = self.identity.clone();
        id.removed = true;
        self.layout.write_identity(&id)
    }
}
