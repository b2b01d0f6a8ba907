//! A fault-injecting TCP proxy for the chaos suite: one listener on
//! loopback forwarding to one target, whose link can be switched at any
//! time between passing, a silent partition, resets, delay and a slow link.
//!
//! It runs on a thread of its own (a current-thread tokio runtime), so the
//! faults it injects do not depend on the test's runtime. Modes apply to the
//! connections already open as well as to new ones:
//!
//! * [`Mode::Drop`]: nothing is forwarded either way and the connections
//!   stay open: both ends see a half-open connection, as across a
//!   blackholed link. Data waits in the kernel buffers; when the link
//!   heals it flows again (as TCP retransmission would deliver it).
//!   Connections made meanwhile are accepted but not forwarded.
//! * [`Mode::Reset`]: every open connection is reset (RST, both sides) and
//!   new ones are reset at once.
//! * [`Mode::OneWay`]: only one direction flows; the other is dropped as
//!   in `Drop` (an asymmetric partition).
//! * [`Mode::Slow`]: each chunk is delivered `delay` after it was read, and
//!   each direction is limited to `bytes_per_sec` (a weak link).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use etcd_standby_testkit::EtcdCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which way data flows in [`Mode::OneWay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting side to the target.
    ToTarget,
    /// From the target back to the connecting side.
    FromTarget,
}

/// What the link does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Forward nothing; keep the connections open (half-open).
    Drop,
    /// Reset every connection, and new ones at once.
    Reset,
    /// Forward only this direction.
    OneWay(Direction),
    /// Deliver each chunk `delay` late, at most `bytes_per_sec` each way.
    Slow {
        /// Added one-way latency.
        delay: Duration,
        /// Bandwidth per direction.
        bytes_per_sec: u64,
    },
}

impl Mode {
    fn flows(self, dir: Direction) -> bool {
        match self {
            Mode::Pass | Mode::Slow { .. } => true,
            Mode::Drop | Mode::Reset => false,
            Mode::OneWay(d) => d == dir,
        }
    }
}

/// What the proxy did, for the run's report.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections reset by [`Mode::Reset`].
    pub resets: AtomicU64,
    /// Bytes forwarded (both directions).
    pub bytes: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it forwards to.
    pub target: SocketAddr,
    mode: watch::Sender<Mode>,
    /// What it did.
    pub counters: Arc<ProxyCounters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port forwarding to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy address");
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let counters = Arc::new(ProxyCounters::default());
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("proxy listener");
                    tokio::select! {
                        _ = accept_loop(listener, target, mode_rx, c) => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime aborts every connection task.
            })
            .expect("proxy thread");
        Proxy {
            addr,
            target,
            mode,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Switches the link (applies to open connections too).
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The links between the replicator and the clusters, each through a
/// fault-injecting proxy: the leader dials our peer listener through
/// `learner_in`, we dial each primary member through `learner_out`
/// (`--peer-dial-via`), and write to each standby member through `standby`.
pub struct Links {
    /// In front of our peer listener (the advertised peer URL).
    pub learner_in: Proxy,
    /// In front of each primary member's peer URL.
    pub learner_out: Vec<Proxy>,
    /// In front of each standby member's client URL.
    pub standby: Vec<Proxy>,
}

impl Links {
    /// Proxies for `primary`'s members and `standby`'s, and a free port
    /// for our peer listener behind `learner_in`.
    pub fn new(primary: &EtcdCluster, standby: &EtcdCluster) -> Links {
        let peer_port = etcd_standby_testkit::free_port().unwrap();
        let addr = |url: &str| -> SocketAddr {
            url.trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .unwrap()
        };
        Links {
            learner_in: Proxy::start(SocketAddr::from(([127, 0, 0, 1], peer_port))),
            learner_out: primary
                .peer_urls()
                .iter()
                .map(|u| Proxy::start(addr(u)))
                .collect(),
            standby: standby
                .client_urls()
                .iter()
                .map(|u| Proxy::start(addr(u)))
                .collect(),
        }
    }

    /// The replicator's flags that route it through the proxies.
    pub fn flags(&self) -> Vec<String> {
        let via: Vec<String> = self
            .learner_out
            .iter()
            .map(|p| format!("{}={}", p.target, p.addr))
            .collect();
        vec![
            "--advertise-peer-url".into(),
            self.learner_in.url(),
            "--peer-listen".into(),
            self.learner_in.target.to_string(),
            "--peer-dial-via".into(),
            via.join(","),
        ]
    }

    /// The standby's members through their proxies.
    pub fn standby_endpoints(&self) -> String {
        let urls: Vec<String> = self.standby.iter().map(Proxy::url).collect();
        urls.join(",")
    }

    /// Sets the learner ↔ primary link. `OneWay(FromTarget)` on the
    /// inbound proxy's terms: the learner hears the leader, not the reverse.
    pub fn learner(&self, m: Mode) {
        let (inbound, outbound) = match m {
            Mode::OneWay(Direction::ToTarget) => (
                Mode::OneWay(Direction::ToTarget),
                Mode::OneWay(Direction::FromTarget),
            ),
            Mode::OneWay(Direction::FromTarget) => (
                Mode::OneWay(Direction::FromTarget),
                Mode::OneWay(Direction::ToTarget),
            ),
            m => (m, m),
        };
        self.learner_in.set(inbound);
        for p in &self.learner_out {
            p.set(outbound);
        }
    }

    /// Sets the replicator ↔ standby link.
    pub fn standby(&self, m: Mode) {
        for p in &self.standby {
            p.set(m);
        }
    }

    /// What crossed the links, for a run's report.
    pub fn report(&self) -> String {
        let sum = |ps: &[&Proxy]| {
            let f = |g: fn(&ProxyCounters) -> u64| ps.iter().map(|p| g(&p.counters)).sum::<u64>();
            (
                f(|c| c.accepted.load(Ordering::Relaxed)),
                f(|c| c.resets.load(Ordering::Relaxed)),
                f(|c| c.bytes.load(Ordering::Relaxed)),
            )
        };
        let mut learner: Vec<&Proxy> = vec![&self.learner_in];
        learner.extend(self.learner_out.iter());
        let standby: Vec<&Proxy> = self.standby.iter().collect();
        let (la, lr, lb) = sum(&learner);
        let (sa, sr, sb) = sum(&standby);
        format!(
            "learner link {la} connections, {lr} reset, {lb} bytes; standby link {sa} connections, \
             {sr} reset, {sb} bytes"
        )
    }
}

fn reset(s: &TcpStream) {
    // SO_LINGER 0: close sends RST instead of FIN.
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<Mode>,
    c: Arc<ProxyCounters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        c.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(client, target, mode.clone(), c.clone()));
    }
}

async fn connection(
    client: TcpStream,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    c: Arc<ProxyCounters>,
) {
    let _ = client.set_nodelay(true);
    // A connection made during a partition waits for the link (its SYN
    // "retransmitted"); one made during a reset is reset.
    loop {
        let m = *mode.borrow_and_update();
        if m == Mode::Reset {
            reset(&client);
            c.resets.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if m != Mode::Drop {
            break;
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
    let Ok(server) = TcpStream::connect(target).await else {
        reset(&client);
        return;
    };
    let _ = server.set_nodelay(true);
    let (client, server) = (Arc::new(client), Arc::new(server));
    let up = pump(
        client.clone(),
        server.clone(),
        Direction::ToTarget,
        mode.clone(),
        c.clone(),
    );
    let down = pump(
        server.clone(),
        client.clone(),
        Direction::FromTarget,
        mode.clone(),
        c.clone(),
    );
    let resetting = async {
        let _ = mode.wait_for(|m| *m == Mode::Reset).await;
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = resetting => {
            reset(&client);
            reset(&server);
            c.resets.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Copies `from` → `to` while the mode lets `dir` flow: a reader that
/// stamps each chunk with when the link delivers it, and a writer that
/// delivers it then (a delay line: latency does not cap throughput, only
/// the bandwidth does).
async fn pump(
    from: Arc<TcpStream>,
    to: Arc<TcpStream>,
    dir: Direction,
    mode: watch::Receiver<Mode>,
    c: Arc<ProxyCounters>,
) {
    // About one socket buffer in flight on the "wire".
    let (tx, rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(64);
    tokio::join!(
        read_side(from, dir, mode.clone(), tx),
        write_side(to, dir, mode, rx, c),
    );
}

async fn read_side(
    from: Arc<TcpStream>,
    dir: Direction,
    mut mode: watch::Receiver<Mode>,
    tx: tokio::sync::mpsc::Sender<(tokio::time::Instant, Vec<u8>)>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // When the link has sent everything queued so far (bandwidth).
    let mut link_free = tokio::time::Instant::now();
    loop {
        // Wait until this direction may flow (a partition reads nothing:
        // the sender's data waits in the kernel, as behind a dead link).
        if mode.wait_for(|m| m.flows(dir)).await.is_err() {
            return;
        }
        let n = loop {
            tokio::select! {
                r = from.readable() => {
                    if r.is_err() { return; }
                    match from.try_read(&mut buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(_) => return,
                    }
                }
                _ = mode.changed() => {
                    let flows = mode.borrow().flows(dir);
                    if !flows {
                        // Partitioned while waiting: stop reading.
                        if mode.wait_for(|m| m.flows(dir)).await.is_err() { return; }
                    }
                }
            }
        };
        if n == 0 {
            // EOF: the writer passes the half-close on once the queue is out.
            return;
        }
        let now = tokio::time::Instant::now();
        let current = *mode.borrow();
        let due = match current {
            Mode::Slow {
                delay,
                bytes_per_sec,
            } => {
                let wire = Duration::from_secs_f64(n as f64 / bytes_per_sec.max(1) as f64);
                link_free = link_free.max(now) + wire;
                link_free + delay
            }
            _ => {
                link_free = now;
                now
            }
        };
        if tx.send((due, buf[..n].to_vec())).await.is_err() {
            return;
        }
    }
}

async fn write_side(
    to: Arc<TcpStream>,
    dir: Direction,
    mut mode: watch::Receiver<Mode>,
    mut rx: tokio::sync::mpsc::Receiver<(tokio::time::Instant, Vec<u8>)>,
    c: Arc<ProxyCounters>,
) {
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        // What was read before a partition waits for the link.
        if mode.wait_for(|m| m.flows(dir)).await.is_err() {
            return;
        }
        if write_all(&to, &chunk).await.is_err() {
            return;
        }
        c.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    // The reader saw EOF: pass the half-close on.
    let _ = socket2::SockRef::from(&*to).shutdown(std::net::Shutdown::Write);
}

async fn write_all(to: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a whole answer to `request` through `addr` (a test helper).
pub async fn roundtrip(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    fn echo() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                    let _ = s.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        addr
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn passes_then_drops_silently_then_delivers_what_waited() {
        let p = Proxy::start(echo());
        let rt = rt();
        assert_eq!(rt.block_on(roundtrip(p.addr, b"hello")).unwrap(), b"hello");
        p.set(Mode::Drop);
        let addr = p.addr;
        let waiting = rt.spawn(async move { roundtrip(addr, b"later").await });
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
        assert!(!waiting.is_finished(), "data crossed a dropped link");
        p.set(Mode::Pass);
        assert_eq!(rt.block_on(waiting).unwrap().unwrap(), b"later");
    }

    #[test]
    fn reset_breaks_open_connections_and_refuses_new_ones() {
        let p = Proxy::start(echo());
        let rt = rt();
        p.set(Mode::Reset);
        let r = rt.block_on(roundtrip(p.addr, b"x"));
        assert!(r.is_err() || r.unwrap().is_empty(), "a reset link answered");
        assert!(p.counters.resets.load(Ordering::Relaxed) >= 1);
        p.set(Mode::Pass);
        assert_eq!(rt.block_on(roundtrip(p.addr, b"again")).unwrap(), b"again");
    }

    #[test]
    fn one_way_lets_one_direction_through_only() {
        let p = Proxy::start(echo());
        let rt = rt();
        p.set(Mode::OneWay(Direction::ToTarget));
        let addr = p.addr;
        let waiting = rt.spawn(async move { roundtrip(addr, b"echo").await });
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
        assert!(!waiting.is_finished(), "the answer crossed a one-way link");
        p.set(Mode::Pass);
        assert_eq!(rt.block_on(waiting).unwrap().unwrap(), b"echo");
    }

    #[test]
    fn slow_delivers_everything_in_order() {
        let p = Proxy::start(echo());
        let rt = rt();
        p.set(Mode::Slow {
            delay: Duration::from_millis(5),
            bytes_per_sec: 1_000_000,
        });
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(rt.block_on(roundtrip(p.addr, &data)).unwrap(), data);
    }
}
