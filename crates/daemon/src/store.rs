//! The learner's durable local log, in etcd's own on-disk layout:
//! `<data-dir>/member/wal/*.wal`, `<data-dir>/member/snap/*.snap` and
//! `*.snap.db`, so `etcd-standby wal dump <data-dir>` (and etcd's tools) read
//! it. Plus `<data-dir>/standby.json`, our identity, and
//! `<data-dir>/received-times.log`, when each entry was received
//! ([`crate::times`]).
//!
//! Entries and the hard state are fsynced before the follower acknowledges
//! them. Periodically a snapshot *marker* (a `.snap` file holding the
//! membership as a v2 store document, plus a WAL snapshot record) bounds
//! what a restart has to load; segments wholly before the retention point
//! are deleted.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::committed::Retention;
use crate::error::{Context, Result, bail};
use crate::node::{LogStore, PersistStats};
use crate::times::{self, ReceiveTimes};
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

    /// `<root>/received-times.log`: when each entry was received
    /// ([`crate::times`]; etcd's WAL has no place for times).
    pub fn received_times(&self) -> PathBuf {
        self.root.join(times::FILE_NAME)
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
    /// When entries were received; informational, so its failures are
    /// logged, never returned from `persist`.
    times: ReceiveTimes,
}

/// Opens the receive times of a data dir. They are informational: a file
/// that cannot be used is moved aside (`.broken`) and a fresh one started,
/// with a warning, rather than keeping the learner from starting. Entries
/// it covered then have no time until the next record (the conservative
/// answer, see [`crate::times`]); as a last resort the times are kept in
/// memory only.
fn open_receive_times(layout: &Layout) -> ReceiveTimes {
    let path = layout.received_times();
    let err = match ReceiveTimes::open(&path) {
        Ok(t) => return t,
        Err(e) => e,
    };
    let broken = path.with_extension("log.broken");
    tracing::warn!(
        path = %path.display(),
        moved_to = %broken.display(),
        error = %err,
        "receive times unusable; moved aside, starting a new file (entries received so far have no time)"
    );
    let reopened = std::fs::rename(&path, &broken)
        .context("moving it aside")
        .and_then(|()| ReceiveTimes::open(&path));
    reopened.unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "receive times kept in memory only");
        ReceiveTimes::in_memory()
    })
}

/// What [`load`] read back from a data dir.
struct Loaded {
    wal: WalWriter,
    base: (u64, u64),
    last: (u64, u64),
    durable_commit: u64,
    restored: Restored,
}

/// Opens the WAL of a data dir for appending (repairing a torn tail like
/// etcd) and reads the newest snapshot or marker and the entries after it.
fn load(layout: &Layout, id: &Identity) -> Result<Loaded> {
    let wal_dir = layout.wal();
    let wal =
        WalWriter::open(&wal_dir).with_context(|| format!("opening {}", wal_dir.display()))?;
    let wal = match layout.segment_bytes {
        Some(b) => wal.with_segment_size(b),
        None => wal,
    };
    // Newest WAL snapshot record that has its .snap file.
    let all =
        read_log(&wal_dir, u64::MAX).with_context(|| format!("scanning {}", wal_dir.display()))?;
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
    let log =
        read_log(&wal_dir, base.index).with_context(|| format!("reading {}", wal_dir.display()))?;
    if let Some(t) = &log.torn_tail {
        // WalWriter::open repaired it; reading again cannot see one.
        bail!("torn tail remained after repair: {t}");
    }
    let hard_state = log.hard_state.unwrap_or_default();
    let last = log
        .entries
        .last()
        .map_or((base.index, base.term), |e| (e.index, e.term));
    Ok(Loaded {
        wal,
        base: (base.index, base.term),
        last,
        durable_commit: hard_state.commit,
        restored: Restored {
            base,
            membership,
            entries: log.entries,
            hard_state,
        },
    })
}

/// Bytes [`LocalLog::reopen`] writes and fsyncs to see that space returned.
pub const SPACE_PROBE_BYTES: u64 = 1 << 20;

/// Name of the probe file in the data dir (removed after each probe).
const SPACE_PROBE_FILE: &str = ".space-probe";

/// Writes `bytes` (non-zero, so no file system can skip them) to a probe
/// file in `dir`, fsyncs and removes it: fails with the file system's
/// error (ENOSPC, EDQUOT) while there is no room for them.
fn probe_space(dir: &Path, bytes: u64) -> Result<()> {
    let path = dir.join(SPACE_PROBE_FILE);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0xa5u8; 64 << 10];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut f, &chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    })();
    // Removing needs no space; a probe left behind is retried and removed next time.
    let removed = std::fs::remove_file(&path);
    res.with_context(|| format!("probing for free space with {}", path.display()))?;
    removed.with_context(|| format!("removing {}", path.display()))
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
        // Times of some earlier log (no WAL, no identity) describe nothing here.
        let times_path = layout.received_times();
        if times_path.exists() {
            tracing::warn!(path = %times_path.display(), "removing receive times left without a WAL");
            std::fs::remove_file(&times_path)
                .with_context(|| format!("removing {}", times_path.display()))?;
        }
        let times = open_receive_times(layout);
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
            times,
        })
    }

    /// Opens an existing log: repairs a torn tail like etcd, loads the newest
    /// snapshot or marker and the entries after it.
    pub fn open(layout: &Layout, id: &Identity) -> Result<(LocalLog, Restored)> {
        let loaded = load(layout, id)?;
        let times = open_receive_times(layout);
        // No record may vouch for entries the WAL does not hold.
        if let Err(e) = times.forget_from(loaded.last.0.saturating_add(1)) {
            tracing::warn!(error = %e, "receive times: dropping records beyond the log");
        }
        Ok((
            LocalLog {
                layout: layout.clone(),
                wal: loaded.wal,
                base: loaded.base,
                last: loaded.last,
                durable_commit: loaded.durable_commit,
                identity: id.clone(),
                retention: Retention::unneeded(),
                times,
            },
            loaded.restored,
        ))
    }

    /// Rebuilds the log's state from disk exactly as a restart does, after
    /// a failed write (see [`LogStore::reopen`]): first checks that
    /// [`SPACE_PROBE_BYTES`] can be written and fsynced in the data dir
    /// (so a disk that is still full fails here, not at the next
    /// acknowledgement), then cuts the WAL back to what the writer last
    /// fsynced ([`etcd_standby_wal::discard_unsynced`]: a partial record, a
    /// half-cut segment), then re-opens it like [`LocalLog::open`]. The
    /// receive times and the replay retention stay the same handles.
    pub fn reopen(&mut self) -> Result<Restored> {
        probe_space(&self.layout.root, SPACE_PROBE_BYTES)?;
        let wal_dir = self.layout.wal();
        etcd_standby_wal::discard_unsynced(&wal_dir, self.wal.synced_end())
            .with_context(|| format!("cutting {} back to its last fsync", wal_dir.display()))?;
        let loaded = load(&self.layout, &self.identity)?;
        if let Err(e) = self.times.forget_from(loaded.last.0.saturating_add(1)) {
            tracing::warn!(error = %e, "receive times: dropping records beyond the log");
        }
        self.wal = loaded.wal;
        self.base = loaded.base;
        self.last = loaded.last;
        self.durable_commit = loaded.durable_commit;
        Ok(loaded.restored)
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

    /// When entries were received (a handle sharing the log's state; replay
    /// and the admin listener look up through it while the log records).
    pub fn receive_times(&self) -> ReceiveTimes {
        self.times.clone()
    }

    /// Makes the receive times say nothing about entries from `index` on,
    /// durably, before the WAL replaces them (an overwritten suffix or a
    /// leader snapshot). A crash right after leaves those entries without
    /// a time, the conservative answer.
    fn forget_times_from(&self, index: u64) {
        if let Err(e) = self
            .times
            .forget_from(index)
            .and_then(|()| self.times.flush())
        {
            tracing::warn!(index, error = %e, "receive times: forgetting replaced entries");
        }
    }

    /// Persists one Ready: the snapshot (with its db, renamed into place),
    /// entries and hard state, then fsyncs once. Returns what was written.
    pub fn persist(&mut self, rd: &Ready, db: Option<&Path>) -> Result<PersistStats> {
        let mut stats = PersistStats::default();
        // `base` and `last` say what is durable: they move only after the
        // fsync (a failed one leaves them, and `/status`, where they were).
        let (mut base, mut last) = (self.base, self.last);
        if let Some(s) = &rd.snapshot {
            let meta = s.metadata.clone().unwrap_or_default();
            let snap_dir = self.layout.snap();
            if let Some(db) = db {
                let dest = self.layout.snap_db(meta.index);
                std::fs::rename(db, &dest)
                    .with_context(|| format!("moving snapshot db to {}", dest.display()))?;
            }
            if self.last.0 > self.durable_commit {
                // The snapshot replaces the log, our uncommitted entries included.
                self.forget_times_from(self.durable_commit.saturating_add(1));
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
            base = (meta.index, meta.term);
            last = (meta.index, meta.term);
        }
        if let Some(first) = rd.entries.first()
            && first.index <= last.0
        {
            // A new leader overwrites our uncommitted suffix from `first`.
            self.forget_times_from(first.index);
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
            last = (e.index, e.term);
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
        (self.base, self.last) = (base, last);
        if let Some(hs) = &rd.hard_state {
            self.durable_commit = hs.commit;
        }
        if !rd.entries.is_empty() || rd.snapshot.is_some() {
            // Durable now. Times are informational: a failure is only logged.
            if let Err(e) = self.times.record(self.last.0, SystemTime::now()) {
                tracing::warn!(index = self.last.0, error = %e, "receive times: recording");
            }
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
        // Times of released entries are not needed (rewrites in large steps only).
        if let Err(e) = self.times.prune_below(keep_from) {
            tracing::warn!(keep_from, error = %e, "receive times: pruning");
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
    fn flush_aux(&mut self) -> Result<()> {
        self.times.flush().context("flushing receive times")
    }
    fn reopen(&mut self) -> Result<Restored> {
        LocalLog::reopen(self)
    }
    fn record_removal(&mut self) -> Result<()> {
        let mut id = self.identity.clone();
        id.removed = true;
        self.layout.write_identity(&id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<raftpb::Entry> {
        range
            .map(|index| raftpb::Entry {
                r#type: 0,
                term,
                index,
                data: Some(format!("e{index}").into_bytes().into()),
            })
            .collect()
    }

    fn ready(es: Vec<raftpb::Entry>, commit: u64) -> Ready {
        Ready {
            hard_state: Some(raftpb::HardState {
                term: es.last().map_or(0, |e| e.term),
                vote: 0,
                commit,
            }),
            entries: es,
            ..Default::default()
        }
    }

    /// A temp data dir's layout (with `segment_bytes`) and an identity.
    fn test_log(segment_bytes: Option<u64>) -> (tempfile::TempDir, Layout, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            root: dir.path().to_path_buf(),
            segment_bytes,
        };
        let id = Identity {
            member_id: 0x10,
            cluster_id: 0x20,
            peer_urls: vec!["http://127.0.0.1:2480".into()],
            name: "standby".into(),
            removed: false,
        };
        (dir, layout, id)
    }

    #[test]
    fn persisted_entries_get_receive_times_that_survive_a_restart() {
        let (_dir, layout, id) = test_log(None);
        let mut log = LocalLog::create(&layout, &id).unwrap();
        let times = log.receive_times();
        let before = SystemTime::now();
        log.persist(&ready(entries(1..=5, 1), 2), None).unwrap();
        assert_eq!(times.records().last().map(|r| r.0), Some(5));
        let t5 = times.received_at(5).unwrap();
        assert!(t5 >= before && t5 <= SystemTime::now() + std::time::Duration::from_millis(1));
        // A hard state alone records nothing.
        log.persist(&ready(Vec::new(), 3), None).unwrap();
        assert_eq!(times.len(), 1);
        // A new leader overwrites 4..: the old times no longer vouch for 4 and 5.
        log.persist(&ready(entries(4..=6, 2), 3), None).unwrap();
        assert_eq!(times.records().first().map(|r| r.0), Some(3));
        assert_eq!(times.records().last().map(|r| r.0), Some(6));
        assert!(times.received_at(4).unwrap() >= t5);
        LogStore::flush_aux(&mut log).unwrap();
        let want = times.records();
        drop(log);
        assert!(layout.received_times().exists());
        let (log, _) = LocalLog::open(&layout, &id).unwrap();
        assert_eq!(log.receive_times().records(), want);
    }

    #[test]
    fn reopen_forgets_what_was_not_fsynced_and_the_log_continues() {
        let (_dir, layout, id) = test_log(Some(400));
        let mut log = LocalLog::create(&layout, &id).unwrap();
        let times = log.receive_times();
        for i in 1..=12 {
            log.persist(&ready(entries(i..=i, 1), i - 1), None).unwrap();
        }
        // A write that failed half way (the disk filled): bytes after the
        // last fsync (here a copy of the last record, which the reader calls
        // corruption: only cutting back to the fsync lets the log open).
        let seg = log.wal.current_file().to_path_buf();
        let mut bytes = std::fs::read(&seg).unwrap();
        let tail = bytes[bytes.len() - 48..].to_vec();
        bytes.extend_from_slice(&tail);
        std::fs::write(&seg, &bytes).unwrap();
        let restored = log.reopen().unwrap();
        let idx: Vec<u64> = restored.entries.iter().map(|e| e.index).collect();
        assert_eq!(idx, (1..=12).collect::<Vec<_>>());
        assert_eq!(restored.hard_state.commit, 11);
        assert_eq!((log.last(), log.durable_commit()), ((12, 1), 11));
        assert!(!layout.root.join(SPACE_PROBE_FILE).exists());
        // The same receive-times handle goes on recording.
        log.persist(&ready(entries(13..=14, 1), 13), None).unwrap();
        assert_eq!(times.records().last().map(|r| r.0), Some(14));
        drop(log);
        let (log, restored) = LocalLog::open(&layout, &id).unwrap();
        assert_eq!(restored.entries.last().map(|e| e.index), Some(14));
        assert_eq!(log.durable_commit(), 13);
    }
}
