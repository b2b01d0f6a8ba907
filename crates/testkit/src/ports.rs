//! Free loopback ports.
//!
//! Ports come from the kernel (`bind 127.0.0.1:0`), then the listener is
//! closed so etcd can bind the port itself. A process-wide set makes sure the
//! same port is never handed out twice by this process. Another process may
//! still grab a port between our probe and etcd's bind; the cluster start-up
//! detects "address already in use" and retries with fresh ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::sync::{Mutex, OnceLock};

use crate::error::{Result, TestkitError};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static SET: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    SET.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Returns a currently free TCP port on 127.0.0.1 that this process has not
/// returned before.
pub fn free_port() -> Result<u16> {
    const ATTEMPTS: usize = 1000;
    let mut set = handed_out()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..ATTEMPTS {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| TestkitError::io("bind 127.0.0.1:0 to find a free port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| TestkitError::io("local_addr of probe listener", e))?
            .port();
        if set.insert(port) {
            return Ok(port);
        }
    }
    Err(TestkitError::io(
        "finding a free port",
        std::io::Error::other(format!("no unused port after {ATTEMPTS} attempts")),
    ))
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
}
