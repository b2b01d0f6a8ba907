//! The data dir's process lock and its small state files, next to the log
//! ([`crate::store`]):
//!
//! * `.lock`: held (an exclusive `flock`) by the one process using the data
//!   dir, `run` or an offline `promote`; a second one is refused.
//! * `admin.addr`: the admin listener of the `run` holding the lock, so
//!   `promote` finds a running daemon by the data dir alone.
//! * `promoting.json`: a promote is under way (or was interrupted). `run`
//!   refuses to start, so a supervisor restarting the daemon cannot race the
//!   promote for the lock; `promote` clears it when it gives up before the
//!   standby changed, and finishes an interrupted one otherwise.
//! * `promoted.json`: the standby was promoted from this data dir (the audit
//!   record). `run` refuses for good: re-seed a fresh standby and data dir.
//! * `standby-identity.json` (mode 0600): the user and generated password
//!   `run` uses on the standby when no `--standby-user` is configured
//!   ([`standby_identity`]); `promote` reads it too.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result, bail};
use crate::store::Layout;

const LOCK_FILE: &str = ".lock";
const ADMIN_ADDR_FILE: &str = "admin.addr";
const PROMOTING_FILE: &str = "promoting.json";
const PROMOTED_FILE: &str = "promoted.json";
const STANDBY_IDENTITY_FILE: &str = "standby-identity.json";

/// The exclusive lock on a data dir; released when dropped (or when the
/// process dies, so a crash never leaves a stale lock).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `dir` `0700` (etcd's `PrivateDirMode`: the log under it holds
/// every request, passwords and hashes included), or narrows an existing
/// one to it. Where that is not allowed (a volume's root owned by someone
/// else), it says so and goes on.
pub fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            Ok(()) => tracing::warn!(
                dir = %dir.display(),
                was = format_args!("{:o}", mode & 0o777),
                "the data dir was readable by others; narrowed it to 0700 (as etcd recommends)"
            ),
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                mode = format_args!("{:o}", mode & 0o777),
                error = %e,
                "the data dir is readable by others and cannot be narrowed to 0700; \
                 it holds the primary's raft log (passwords and hashes included)"
            ),
        }
    }
    Ok(())
}

/// Takes the data dir's lock, or says who holds it.
pub fn lock(layout: &Layout) -> Result<DirLock> {
    make_private_dir(&layout.root)?;
    let path = layout.root.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file, path }),
        Err(std::fs::TryLockError::WouldBlock) => {
            let admin = read_admin_addr(layout)
                .map(|a| format!(" (its admin listener: {a})"))
                .unwrap_or_default();
            bail!(
                "the data dir {} is in use by another etcd-standby process{admin}",
                layout.root.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Whether another process holds the data dir's lock now.
pub fn is_locked(layout: &Layout) -> Result<bool> {
    let path = layout.root.join(LOCK_FILE);
    let file = match File::options().write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Writes `body` to `path` atomically: tmp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<()> {
    write_atomic_mode(path, body, 0o644)
}

/// [`write_atomic`] with the file created with `mode` (before the umask),
/// so a secret is never readable by others, not even briefly.
pub fn write_atomic_mode(path: &Path, body: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // A per-process tmp name: two processes may write the same file.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)?
        };
        std::io::Write::write_all(&mut f, body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("writing {}", path.display()))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn remove_optional(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// The replicator's own identity on the standby (see the module doc).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandbyIdentity {
    /// The user ([`etcd_standby_sink::AUTO_STANDBY_USER`]).
    pub user: String,
    /// Its generated password.
    pub password: String,
}

/// Reads the saved standby identity, if `run` made one in `root`.
pub fn read_standby_identity(root: &Path) -> Result<Option<StandbyIdentity>> {
    let path = root.join(STANDBY_IDENTITY_FILE);
    match read_optional(&path)? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("reading {}", path.display())),
        None => Ok(None),
    }
}

/// The saved standby identity, made (and saved with mode 0600) on first
/// use: a fixed user name and 32 random bytes of password, hex.
pub fn standby_identity(layout: &Layout) -> Result<(StandbyIdentity, PathBuf)> {
    let path = layout.root.join(STANDBY_IDENTITY_FILE);
    if let Some(id) = read_standby_identity(&layout.root)? {
        return Ok((id, path));
    }
    let mut raw = [0u8; 32];
    std::io::Read::read_exact(
        &mut File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut raw,
    )
    .context("reading /dev/urandom")?;
    let id = StandbyIdentity {
        user: etcd_standby_sink::AUTO_STANDBY_USER.to_owned(),
        password: raw.iter().map(|b| format!("{b:02x}")).collect(),
    };
    write_atomic_mode(&path, &serde_json::to_vec(&id)?, 0o600)?;
    Ok((id, path))
}

/// Records the running daemon's admin listener address.
pub fn write_admin_addr(layout: &Layout, addr: &str) -> Result<()> {
    write_atomic(&layout.root.join(ADMIN_ADDR_FILE), addr.as_bytes())
}

/// The admin address the last `run` recorded, if any.
pub fn read_admin_addr(layout: &Layout) -> Option<String> {
    std::fs::read_to_string(layout.root.join(ADMIN_ADDR_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A promote under way: who started it, and when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Promoting {
    /// PID of the promote process.
    pub pid: u32,
    /// Operator and host.
    pub by: String,
    /// Start time (RFC 3339).
    pub started_at: String,
}

/// Marks the data dir as being promoted.
pub fn write_promoting(layout: &Layout, p: &Promoting) -> Result<()> {
    write_atomic(
        &layout.root.join(PROMOTING_FILE),
        &serde_json::to_vec_pretty(p)?,
    )
}

/// The promote-in-progress marker, if present.
pub fn read_promoting(layout: &Layout) -> Result<Option<Promoting>> {
    let path = layout.root.join(PROMOTING_FILE);
    match read_optional(&path)? {
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display()))?,
        )),
        None => Ok(None),
    }
}

/// Removes the promote-in-progress marker.
pub fn clear_promoting(layout: &Layout) -> Result<()> {
    remove_optional(&layout.root.join(PROMOTING_FILE))
}

/// Marks the data dir promoted, with the audit record.
pub fn write_promoted(layout: &Layout, record: &serde_json::Value) -> Result<()> {
    write_atomic(
        &layout.root.join(PROMOTED_FILE),
        &serde_json::to_vec_pretty(record)?,
    )
}

/// The audit record of a promotion made from this data dir, if any.
pub fn read_promoted(layout: &Layout) -> Result<Option<serde_json::Value>> {
    let path = layout.root.join(PROMOTED_FILE);
    match read_optional(&path)? {
        Some(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display()))?,
        )),
        None => Ok(None),
    }
}

/// Refuses to `run` from a data dir that was promoted or is being promoted.
pub fn refuse_if_promoted(layout: &Layout) -> Result<()> {
    if let Some(rec) = read_promoted(layout)? {
        return Err(Error::refusal(
            crate::codes::PROMOTED,
            format!(
                "this data dir promoted its standby to primary at {} (epoch {}); it never replicates again. \
             To protect the new primary, seed a fresh standby and start from an empty data dir (see `{}`)",
                rec["at"].as_str().unwrap_or("?"),
                rec["epoch"].as_u64().unwrap_or(0),
                layout.root.join(PROMOTED_FILE).display()
            ),
        ));
    }
    if let Some(p) = read_promoting(layout)? {
        return Err(Error::refusal(
            crate::codes::PROMOTION_IN_PROGRESS,
            format!(
                "a promote started at {} by {} (pid {}) has not finished; run `etcd-standby promote` again to finish or abandon it, \
             or remove {} if you are sure no promote is running",
                p.started_at,
                p.by,
                p.pid,
                layout.root.join(PROMOTING_FILE).display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_is_made_private_or_narrowed_to_0700() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let fresh = tmp.path().join("a/b");
        make_private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        make_private_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
    }

    #[test]
    fn standby_identity_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let l = layout(dir.path());
        assert!(
            read_standby_identity(dir.path())
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
        let (a, path) = standby_identity(&l).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.user, etcd_standby_sink::AUTO_STANDBY_USER);
        assert_eq!(a.password.len(), 64);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let (b, _) = standby_identity(&l).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.password, b.password, "made once, then read back");
    }

    fn layout(dir: &Path) -> Layout {
        Layout {
            root: dir.to_path_buf(),
            segment_bytes: None,
        }
    }

    #[test]
    fn a_second_lock_on_the_same_data_dir_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let l = layout(dir.path());
        write_admin_addr(&l, "127.0.0.1:9479").unwrap_or_else(|e| panic!("{e}"));
        let held = lock(&l).unwrap_or_else(|e| panic!("{e}"));
        assert!(is_locked(&l).unwrap_or(false));
        let second = lock(&l).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(second.contains("in use by another"), "{second}");
        assert!(second.contains("127.0.0.1:9479"), "{second}");
        drop(held);
        assert!(!is_locked(&l).unwrap_or(true));
        assert!(lock(&l).is_ok());
    }

    #[test]
    fn run_is_refused_while_promoting_and_after_promotion() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let l = layout(dir.path());
        assert!(refuse_if_promoted(&l).is_ok());
        let p = Promoting {
            pid: 7,
            by: "ops@host".into(),
            started_at: "2026-12-02T00:00:00Z".into(),
        };
        write_promoting(&l, &p).unwrap_or_else(|e| panic!("{e}"));
        let why = refuse_if_promoted(&l)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(why.contains("has not finished"), "{why}");
        clear_promoting(&l).unwrap_or_else(|e| panic!("{e}"));
        assert!(refuse_if_promoted(&l).is_ok());
        write_promoted(
            &l,
            &serde_json::json!({"at": "2026-12-02T00:00:01Z", "epoch": 2}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let why = refuse_if_promoted(&l)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(why.contains("never replicates again"), "{why}");
        assert!(why.contains("epoch 2"), "{why}");
    }
}
