//! The lease keeper: one keep-alive stream for every mirrored lease, with a
//! bounded number of requests per second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_standby_client::Client;
use tokio::time::Instant;

/// How often the keeper looks for due leases.
const TICK: Duration = Duration::from_millis(250);
/// Wait before reopening a broken stream.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Tracked {
    ttl: i64,
    next_due: Instant,
}

#[derive(Debug, Default)]
struct Shared {
    leases: Mutex<BTreeMap<i64, Tracked>>,
    stopped: AtomicBool,
    sent: AtomicU64,
    ok: AtomicU64,
    failures: AtomicU64,
    lost: AtomicU64,
}

/// Keeper counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeeperStats {
    /// Leases kept alive now.
    pub leases: u64,
    /// Keep-alive requests sent.
    pub sent: u64,
    /// Answers with a live lease.
    pub ok: u64,
    /// Stream failures (open errors, broken streams).
    pub failures: u64,
    /// Leases the standby reported gone (TTL 0) while mirrored.
    pub lost: u64,
}

/// Handle to the lease keeper task (cheap to clone). The sink feeds it from
/// `LeaseGrant` / `LeaseRevoke` effects and from the standby's leases at
/// connect; the task refreshes each lease about every third of its TTL over
/// one keep-alive stream, sending at most `per_sec` requests per second
/// (most overdue first), and reopens the stream after a failure.
#[derive(Debug, Clone)]
pub struct LeaseKeeper {
    shared: Arc<Shared>,
}

fn lock(m: &Mutex<BTreeMap<i64, Tracked>>) -> MutexGuard<'_, BTreeMap<i64, Tracked>> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Refresh interval for a TTL: a third of it, at least 500 ms.
fn refresh_after(ttl: i64) -> Duration {
    let ms = u64::try_from(ttl.max(1)).unwrap_or(1).saturating_mul(1000) / 3;
    Duration::from_millis(ms.max(500))
}

impl LeaseKeeper {
    /// Starts the keeper task on the current tokio runtime.
    pub(crate) fn spawn(
        client: Client,
        per_sec: u32,
    ) -> (LeaseKeeper, tokio::task::JoinHandle<()>) {
        let keeper = LeaseKeeper {
            shared: Arc::new(Shared::default()),
        };
        let k = keeper.clone();
        let handle = tokio::spawn(async move { k.run(client, per_sec.max(1)).await });
        (keeper, handle)
    }

    /// Keeps lease `id` (granted TTL `ttl` seconds) alive from now on.
    pub fn track(&self, id: i64, ttl: i64) {
        let next_due = Instant::now() + refresh_after(ttl);
        lock(&self.shared.leases).insert(id, Tracked { ttl, next_due });
    }

    /// Stops keeping lease `id` alive.
    pub fn untrack(&self, id: i64) {
        lock(&self.shared.leases).remove(&id);
    }

    /// The mirrored lease IDs, ascending.
    pub fn leases(&self) -> Vec<i64> {
        lock(&self.shared.leases).keys().copied().collect()
    }

    /// Whether lease `id` is kept alive.
    pub fn is_tracked(&self, id: i64) -> bool {
        lock(&self.shared.leases).contains_key(&id)
    }

    /// Stops sending keep-alives (after fencing: the promoted standby's
    /// clients own the leases now). The task ends at its next tick.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
    }

    /// Counters.
    pub fn stats(&self) -> KeeperStats {
        let s = &self.shared;
        KeeperStats {
            leases: lock(&s.leases).len() as u64,
            sent: s.sent.load(Ordering::Relaxed),
            ok: s.ok.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
        }
    }

    /// Due leases, most overdue first, at most `budget`; each is given a
    /// provisional next due time (retried in a second if no answer comes).
    fn take_due(&self, budget: usize) -> Vec<i64> {
        let now = Instant::now();
        let mut leases = lock(&self.shared.leases);
        let mut due: Vec<(Instant, i64)> = leases
            .iter()
            .filter(|(_, t)| t.next_due <= now)
            .map(|(id, t)| (t.next_due, *id))
            .collect();
        due.sort_unstable();
        due.truncate(budget);
        for (_, id) in &due {
            if let Some(t) = leases.get_mut(id) {
                t.next_due = now + Duration::from_secs(1).min(refresh_after(t.ttl));
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    fn answered(&self, id: i64, ttl: i64) {
        let s = &self.shared;
        let mut leases = lock(&s.leases);
        if ttl <= 0 {
            if leases.remove(&id).is_some() {
                s.lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    lease = format_args!("{id:#x}"),
                    "the standby lost a mirrored lease (expired or revoked there); verify will report its keys"
                );
            }
            return;
        }
        s.ok.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = leases.get_mut(&id) {
            t.next_due = Instant::now() + refresh_after(t.ttl.min(ttl).max(1));
        }
    }

    async fn run(self, client: Client, per_sec: u32) {
        // Budget per tick, spread evenly over a second.
        let ticks_per_sec = (Duration::from_secs(1).as_millis() / TICK.as_millis()).max(1) as u32;
        let per_tick = per_sec.div_ceil(ticks_per_sec).max(1) as usize;
        while !self.shared.stopped.load(Ordering::Relaxed) {
            if lock(&self.shared.leases).is_empty() {
                tokio::time::sleep(TICK).await;
                continue;
            }
            let (tx, mut rx) = match client.lease_keep_alive().await {
                Ok(s) => s,
                Err(e) => {
                    self.shared.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "lease keep-alive stream: open failed");
                    tokio::time::sleep(REOPEN_BACKOFF).await;
                    continue;
                }
            };
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let broken = loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if self.shared.stopped.load(Ordering::Relaxed) {
                            break None;
                        }
                        let mut failed = None;
                        for id in self.take_due(per_tick) {
                            if let Err(e) = tx.keep_alive(id).await {
                                failed = Some(e.to_string());
                                break;
                            }
                            self.shared.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        if failed.is_some() {
                            break failed;
                        }
                    }
                    m = rx.message() => match m {
                        Ok(Some(resp)) => self.answered(resp.id, resp.ttl),
                        Ok(None) => break Some("closed by the standby".to_owned()),
                        Err(e) => break Some(e.to_string()),
                    }
                }
            };
            if let Some(why) = broken {
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %why, "lease keep-alive stream broke; reopening");
                tokio::time::sleep(REOPEN_BACKOFF).await;
            }
        }
    }
}
