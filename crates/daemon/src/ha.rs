//! `run --ha`: one active replicator among several, chosen by a lock on the
//! standby ([`etcd_standby_sink::ha`]).
//!
//! A passive instance waits (polling every [`POLL`]) until the lock key is
//! free, then creates it attached to a standby lease of `--ha-lock-ttl`.
//! Holding it, the instance runs the learner and replay exactly like a
//! single one, with the lock compared in every standby txn. The lock is
//! kept alive from [`keep_lock`]; when the lease could have expired — no
//! keep-alive confirmed for `ttl − margin` ([`LockClock`]) — or etcd says
//! it is gone, the instance stops at once and exits with
//! [`EXIT_LOST_LOCK`]: it must not run a second learner with the member
//! ID the new holder uses. A clean stop (SIGTERM) releases the lock so a
//! passive instance takes over without waiting for the TTL.

use std::time::{Duration, Instant};

use etcd_standby_client::Client;
use etcd_standby_sink::ReservedKeys;
use etcd_standby_sink::ha::{self, Acquire, HeldLock, LockHolder};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// Exit code when this instance lost the HA lock (another one is active).
pub const EXIT_LOST_LOCK: i32 = 6;

/// How often a passive instance looks at the lock.
pub const POLL: Duration = Duration::from_millis(500);

/// HA settings of one instance.
#[derive(Debug, Clone)]
pub struct HaOptions {
    /// This instance's name (shown in the lock and the logs).
    pub instance: String,
    /// The lock lease's TTL: how long a dead active instance keeps the
    /// lock (takeover time is about this plus [`POLL`] plus the start).
    pub lock_ttl: Duration,
}

/// The self-fencing clock of a held lock (pure). The lease was refreshed
/// for a full TTL when etcd answered a keep-alive that was *sent* at
/// `confirmed`; the holder considers the lock lost `margin` before that
/// TTL runs out, so it has stopped before another instance can acquire it.
#[derive(Debug, Clone, Copy)]
pub struct LockClock {
    confirmed: Instant,
    ttl: Duration,
    margin: Duration,
}

impl LockClock {
    /// A lock acquired by a request sent at `sent`.
    pub fn new(sent: Instant, ttl: Duration) -> LockClock {
        LockClock {
            confirmed: sent,
            ttl,
            margin: (ttl / 4).max(Duration::from_millis(500)).min(ttl / 2),
        }
    }

    /// etcd answered (TTL > 0) a keep-alive sent at `sent`.
    pub fn confirm(&mut self, sent: Instant) {
        self.confirmed = self.confirmed.max(sent);
    }

    /// When the holder must consider the lock lost.
    pub fn deadline(&self) -> Instant {
        self.confirmed + self.ttl - self.margin
    }

    /// Whether the lock must be considered lost at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }

    /// How often to send keep-alives: several tries before the deadline.
    pub fn interval(&self) -> Duration {
        ((self.ttl - self.margin) / 4).max(Duration::from_millis(100))
    }
}

/// Waits until this instance holds the lock (`shown`: who holds it now,
/// for `/status`). `Ok(None)` when `stop` fired first. A promoted standby
/// is an error (no instance may become active).
pub async fn wait_for_lock(
    standby: &Client,
    keys: &ReservedKeys,
    me: LockHolder,
    opts: &HaOptions,
    shown: &std::sync::Mutex<String>,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<(HeldLock, Instant)>> {
    let show = |s: String| {
        if let Ok(mut v) = shown.lock() {
            *v = s;
        }
    };
    let ttl = opts.lock_ttl.as_secs().max(1) as i64;
    let mut last_holder: Option<LockHolder> = None;
    let mut said = Instant::now();
    loop {
        let sent = Instant::now();
        match ha::try_acquire(standby, keys, me.clone(), ttl).await {
            Ok(Acquire::Acquired(held)) => {
                tracing::info!(instance = %me.instance, lease = %held.holder.lease, "acquired the HA lock: this instance is active");
                return Ok(Some((held, sent)));
            }
            Ok(Acquire::HeldBy(h)) => {
                show(h.to_string());
                if !h.peer_url.is_empty() && h.peer_url != me.peer_url {
                    return Err(Error::refusal(
                        crate::codes::PEER_URL_MISMATCH,
                        format!(
                            "the active HA instance ({h}) advertises peer URL {}, this one {}: every --ha \
                         instance of one source must use the same --advertise-peer-url (a VIP, DNS \
                         name or Service that routes to the active instance), because the primary \
                         dials one URL for the learner and etcd-standby never changes it",
                            h.peer_url, me.peer_url
                        ),
                    ));
                }
                if last_holder.as_ref() != Some(&h) || said.elapsed() > Duration::from_secs(30) {
                    tracing::info!(holder = %h, "passive: another instance holds the HA lock");
                    said = Instant::now();
                    last_holder = Some(h);
                }
            }
            Ok(Acquire::OnHold(record)) => {
                show(format!("a promotion under way ({record})"));
                if said.elapsed() > Duration::from_secs(10) || last_holder.is_some() {
                    tracing::warn!(%record, "passive: a promotion holds the standby; waiting");
                    said = Instant::now();
                    last_holder = None;
                }
            }
            Err(e @ etcd_standby_sink::SinkError::Promoted { .. }) => {
                return Err(Error::from(e));
            }
            Err(e) => {
                if said.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(error = %e, "passive: cannot reach the HA lock on the standby; retrying");
                    said = Instant::now();
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return Ok(None),
        }
        if *stop.borrow() {
            return Ok(None);
        }
    }
}

/// Keeps the held lock's lease alive until `release`; sets `lost` (and
/// returns) as soon as the lock must be considered lost. On `release`
/// (sent once nothing more is written) it gives the lock up, so a passive
/// instance takes over at once.
pub async fn keep_lock(
    standby: Client,
    held: HeldLock,
    mut clock: LockClock,
    lost: watch::Sender<bool>,
    mut release: watch::Receiver<bool>,
) {
    let mut stream = None;
    loop {
        if clock.expired(Instant::now()) {
            tracing::error!(
                "no keep-alive of the HA lock was confirmed in time: its lease may have expired; stopping"
            );
            let _ = lost.send(true);
            return;
        }
        let sent = Instant::now();
        if stream.is_none() {
            stream = standby.lease_keep_alive().await.ok();
        }
        let answer = match &mut stream {
            Some((tx, rx)) => {
                let wait = clock.deadline().saturating_duration_since(sent);
                match tx.keep_alive(held.lease).await {
                    Ok(()) => tokio::time::timeout(wait, rx.message()).await.ok(),
                    Err(_) => None,
                }
            }
            None => None,
        };
        match answer {
            Some(Ok(Some(r))) if r.ttl > 0 => clock.confirm(sent),
            Some(Ok(Some(_))) => {
                tracing::error!(lease = %held.holder.lease, "the HA lock's lease is gone on the standby; stopping");
                let _ = lost.send(true);
                return;
            }
            other => {
                tracing::warn!(answer = ?other.map(|r| r.map(|_| ())), "HA lock keep-alive failed; retrying");
                stream = None;
            }
        }
        let next = clock
            .interval()
            .min(clock.deadline().saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = release.changed() => {
                if *release.borrow() {
                    match tokio::time::timeout(Duration::from_secs(3), ha::release(&standby, &held)).await {
                        Ok(Ok(())) => tracing::info!("released the HA lock"),
                        _ => tracing::warn!("could not release the HA lock; it expires with its lease"),
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_given_up_before_its_lease_can_expire() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(6);
        let mut c = LockClock::new(t0, ttl);
        // Never later than the TTL after the last confirmed send.
        assert!(c.deadline() < t0 + ttl);
        assert!(!c.expired(t0 + Duration::from_secs(4)));
        assert!(c.expired(t0 + Duration::from_millis(4500)));
        // A confirmation counts from when its request was sent.
        c.confirm(t0 + Duration::from_secs(3));
        assert!(!c.expired(t0 + Duration::from_secs(7)));
        assert!(c.expired(t0 + Duration::from_millis(7500)));
        // An older answer arriving late never moves the deadline back.
        c.confirm(t0 + Duration::from_secs(1));
        assert!(!c.expired(t0 + Duration::from_secs(7)));
        // Several keep-alives fit before the deadline.
        assert!(c.interval() * 3 < c.deadline() - (t0 + Duration::from_secs(3)));
    }

    #[test]
    fn a_short_ttl_still_keeps_a_margin() {
        let t0 = Instant::now();
        let c = LockClock::new(t0, Duration::from_secs(1));
        assert_eq!(c.deadline(), t0 + Duration::from_millis(500));
        assert!(c.interval() >= Duration::from_millis(100));
    }
}
