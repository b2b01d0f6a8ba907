//! Machine-wide cap on how many test processes run etcd clusters at once.
//!
//! Test runners start many test processes (nextest: one per test) and
//! etcd is fsync- and CPU-heavy; on a 2-core machine more than a couple of
//! clusters at a time makes election timeouts fire and tests flake. Each
//! process that starts a cluster takes one of `ETCD_STANDBY_MAX_CLUSTERS`
//! (default 2; `0` = unlimited) slots, implemented as `flock`ed files in the
//! system temp dir. A process holds at most one slot no matter how many
//! clusters it starts (so a test that needs two clusters cannot deadlock
//! against another one), and the kernel releases it if the process dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Result, TestkitError};

/// Environment variable overriding the number of slots.
pub const MAX_CLUSTERS_ENV: &str = "ETCD_STANDBY_MAX_CLUSTERS";
const DEFAULT_MAX_CLUSTERS: usize = 2;
const MAX_WAIT: Duration = Duration::from_secs(30 * 60);

struct State {
    file: Option<File>,
    refs: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    file: None,
    refs: 0,
});

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Held while a cluster of this process is alive; the last guard of the
/// process releases the slot.
#[derive(Debug)]
pub struct SlotGuard {
    _private: (),
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut st = state();
        st.refs = st.refs.saturating_sub(1);
        if st.refs == 0 {
            // Closing the file releases the flock.
            st.file = None;
        }
    }
}

fn max_clusters() -> usize {
    std::env::var(MAX_CLUSTERS_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_CLUSTERS)
}

fn slot_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("etcd-standby-testkit-slot-{i}.lock"))
}

fn open_lock_file(path: &Path) -> Result<File> {
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path);
    match rw {
        Ok(f) => Ok(f),
        // Created by another user: flock works on read-only descriptors too.
        Err(e) if e.kind() == ErrorKind::PermissionDenied => File::open(path)
            .map_err(|e| TestkitError::io(format!("open lock file {}", path.display()), e)),
        Err(e) => Err(TestkitError::io(
            format!("open lock file {}", path.display()),
            e,
        )),
    }
}

/// Takes (or shares, if this process already holds one) a cluster slot,
/// blocking until one is free.
pub fn acquire() -> Result<SlotGuard> {
    let mut st = state();
    if st.refs > 0 {
        st.refs += 1;
        return Ok(SlotGuard { _private: () });
    }
    let max = max_clusters();
    if max == 0 {
        st.refs = 1;
        return Ok(SlotGuard { _private: () });
    }
    let dir = std::env::temp_dir();
    let start = Instant::now();
    let mut announced = false;
    loop {
        for i in 0..max {
            let path = slot_path(&dir, i);
            let file = open_lock_file(&path)?;
            match file.try_lock() {
                Ok(()) => {
                    st.file = Some(file);
                    st.refs = 1;
                    return Ok(SlotGuard { _private: () });
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(TestkitError::io(format!("flock {}", path.display()), e));
                }
            }
        }
        let waited = start.elapsed();
        if waited > MAX_WAIT {
            return Err(TestkitError::io(
                "waiting for an etcd cluster slot",
                std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "all {max} slots ({}) stayed busy for {waited:?}; \
                         raise {MAX_CLUSTERS_ENV} or look for stuck test processes",
                        slot_path(&dir, 0).display()
                    ),
                ),
            ));
        }
        if !announced && waited > Duration::from_secs(10) {
            announced = true;
            eprintln!(
                "testkit: waiting for one of {max} etcd cluster slots ({MAX_CLUSTERS_ENV})..."
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
