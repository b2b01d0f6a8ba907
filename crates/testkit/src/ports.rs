//! Free loopback ports.
//!
//! A port handed out must still be free when etcd or the replicator binds
//! it moments later, after the probe listener is closed. Two things could
//! take it in between: an outgoing connection (every process's `connect`
//! picks its local port from the kernel's ephemeral range) and another test
//! process picking the same port. So ports come from *below* the ephemeral
//! range (`ip_local_port_range`), where no outgoing connection lands, and
//! each is reserved across processes by an advisory lock on a file named
//! after it in the temp dir. The lock is held until this process exits; the
//! kernel drops it when the process dies, so a crashed run leaves nothing
//! stale. A probe bind checks that nothing else listens there. Where the
//! ephemeral range leaves no room below it, the kernel's `bind :0` pick is
//! used, and etcd start-up still retries on "address already in use".

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use crate::error::{Result, TestkitError};

/// The lowest port handed out from below the ephemeral range.
const LOWEST: u16 = 10_000;
/// Fewer ports than this below the ephemeral range: use the kernel's pick.
const MIN_SPAN: u16 = 2_000;
/// Tries before giving up.
const ATTEMPTS: usize = 1000;

/// This process's picks: the ports handed out and the locks reserving them.
struct Picks {
    handed_out: HashSet<u16>,
    locks: Vec<File>,
    random: u64,
}

impl Picks {
    /// xorshift64: enough to spread picks; the locks decide ownership.
    fn next(&mut self) -> u64 {
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        x
    }

    /// A port in `[LOWEST, below)` no live process holds the lock of and
    /// nothing listens on; its lock is kept until the process exits.
    fn reserve_below(&mut self, below: u16) -> Result<u16> {
        let dir = lock_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| TestkitError::io(format!("creating {}", dir.display()), e))?;
        let span = u64::from(below - LOWEST);
        for _ in 0..ATTEMPTS {
            // `next() % span < span <= u16::MAX`, so the sum fits.
            let port = LOWEST + u16::try_from(self.next() % span).unwrap_or(0);
            if self.handed_out.contains(&port) {
                continue;
            }
            let path = dir.join(port.to_string());
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| TestkitError::io(format!("opening {}", path.display()), e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => {
                    return Err(TestkitError::io(format!("locking {}", path.display()), e));
                }
            }
            if TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_err() {
                continue;
            }
            self.handed_out.insert(port);
            self.locks.push(file);
            return Ok(port);
        }
        Err(no_port())
    }

    /// The kernel's pick (`bind 127.0.0.1:0`), not one handed out before.
    fn kernel_pick(&mut self) -> Result<u16> {
        for _ in 0..ATTEMPTS {
            let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
                .map_err(|e| TestkitError::io("bind 127.0.0.1:0 to find a free port", e))?;
            let port = listener
                .local_addr()
                .map_err(|e| TestkitError::io("local_addr of probe listener", e))?
                .port();
            if self.handed_out.insert(port) {
                return Ok(port);
            }
        }
        Err(no_port())
    }
}

fn no_port() -> TestkitError {
    TestkitError::io(
        "finding a free port",
        std::io::Error::other(format!("no unused port after {ATTEMPTS} attempts")),
    )
}

fn picks() -> &'static Mutex<Picks> {
    static PICKS: OnceLock<Mutex<Picks>> = OnceLock::new();
    PICKS.get_or_init(|| {
        // A per-process random seed (never 0, xorshift's fixed point).
        let seed = std::hash::RandomState::new().hash_one(std::process::id());
        Mutex::new(Picks {
            handed_out: HashSet::new(),
            locks: Vec::new(),
            random: seed | 1,
        })
    })
}

/// Where the per-port lock files live (shared by every test process).
fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("etcd-standby-test-ports")
}

/// The first port of the kernel's ephemeral range, if it can be read.
fn ephemeral_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Returns a currently free TCP port on 127.0.0.1 that this process has not
/// returned before and no other test process holds.
pub fn free_port() -> Result<u16> {
    let mut picks = picks()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match ephemeral_start() {
        Some(start) if start >= LOWEST.saturating_add(MIN_SPAN) => picks.reserve_below(start),
        _ => picks.kernel_pick(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ports_are_unique_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        for p in ports.iter().take(5) {
            TcpListener::bind(("127.0.0.1", *p)).unwrap();
        }
    }

    #[test]
    fn ports_come_from_below_the_ephemeral_range_where_connections_never_land() {
        let Some(start) = ephemeral_start().filter(|s| *s >= LOWEST + MIN_SPAN) else {
            return; // no room below it here: the kernel's pick is used
        };
        for _ in 0..20 {
            let p = free_port().unwrap();
            assert!(
                (LOWEST..start).contains(&p),
                "{p} not in [{LOWEST}, {start})"
            );
        }
    }

    #[test]
    fn a_port_handed_out_stays_locked_against_other_processes() {
        if ephemeral_start().is_none_or(|s| s < LOWEST + MIN_SPAN) {
            return;
        }
        let p = free_port().unwrap();
        // Another open file description is what another process would have.
        let other = File::open(lock_dir().join(p.to_string())).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
    }
}
