//! Replay's watchdog and progress log.
//!
//! Once a second the daemon shows the [`Monitor`] how far replay got and
//! what is committed. The monitor is pure (it is given the time), so its
//! decisions are unit-tested:
//!
//! * **stall**: committed entries are pending and nothing was applied for
//!   `stall_after` → one warning with the reason (replay's state and last
//!   error), repeated every minute while it lasts, `stalled_seconds` in
//!   `/status` and the `etcd_standby_replay_stalled_seconds` gauge;
//! * **progress**: every `progress_every` while replay moves, one line with
//!   the applied index, the lag and the apply rate.

use std::time::{Duration, Instant};

use crate::status::ReplayState;

/// What the monitor looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// Replay's applied index.
    pub applied: u64,
    /// The committed index handed out by the node loop.
    pub committed: u64,
    /// Replay's state.
    pub state: ReplayState,
}

/// What the monitor wants said.
#[derive(Debug, Clone, PartialEq)]
pub enum Say {
    /// Replay has not moved for `for_secs` with `pending` entries committed.
    Stalled {
        /// Seconds since the last applied entry.
        for_secs: u64,
        /// Committed entries not applied.
        pending: u64,
        /// Replay's state at the time.
        state: ReplayState,
    },
    /// A stall ended.
    Resumed {
        /// How long it lasted, in seconds.
        after_secs: u64,
    },
    /// Periodic progress.
    Progress {
        /// Applied index.
        applied: u64,
        /// Committed index.
        committed: u64,
        /// Entries applied per second since the last progress line.
        rate: f64,
    },
}

/// Tunables.
#[derive(Debug, Clone, Copy)]
pub struct MonitorOptions {
    /// A stall is declared after this long without progress.
    pub stall_after: Duration,
    /// A continuing stall is repeated this often.
    pub stall_repeat: Duration,
    /// Progress lines at most this often.
    pub progress_every: Duration,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            stall_after: Duration::from_secs(30),
            stall_repeat: Duration::from_secs(60),
            progress_every: Duration::from_secs(10),
        }
    }
}

/// The watchdog's memory.
#[derive(Debug)]
pub struct Monitor {
    opts: MonitorOptions,
    /// Last applied index seen and when it last moved.
    applied: (u64, Instant),
    /// Last progress line (applied, when).
    progress: (u64, Instant),
    /// When the current stall was last reported.
    reported: Option<Instant>,
}

impl Monitor {
    /// A monitor starting at `now`.
    pub fn new(opts: MonitorOptions, now: Instant) -> Monitor {
        Monitor {
            opts,
            applied: (0, now),
            progress: (0, now),
            reported: None,
        }
    }

    /// Seconds without progress while entries are pending (0 when none are).
    pub fn stalled_for(&self, o: &Observation, now: Instant) -> Duration {
        if o.committed > o.applied && o.applied == self.applied.0 {
            now.saturating_duration_since(self.applied.1)
        } else {
            Duration::ZERO
        }
    }

    /// Takes one observation; returns what to log.
    pub fn observe(&mut self, o: Observation, now: Instant) -> Vec<Say> {
        let mut out = Vec::new();
        if o.applied != self.applied.0 {
            if self.reported.take().is_some() {
                out.push(Say::Resumed {
                    after_secs: now.saturating_duration_since(self.applied.1).as_secs(),
                });
            }
            self.applied = (o.applied, now);
        }
        let stalled = self.stalled_for(&o, now);
        if stalled >= self.opts.stall_after
            && self
                .reported
                .is_none_or(|t| now.saturating_duration_since(t) >= self.opts.stall_repeat)
        {
            self.reported = Some(now);
            out.push(Say::Stalled {
                for_secs: stalled.as_secs(),
                pending: o.committed - o.applied,
                state: o.state,
            });
        }
        let since = now.saturating_duration_since(self.progress.1);
        if since >= self.opts.progress_every {
            if o.applied != self.progress.0 {
                out.push(Say::Progress {
                    applied: o.applied,
                    committed: o.committed,
                    rate: o.applied.saturating_sub(self.progress.0) as f64 / since.as_secs_f64(),
                });
            }
            self.progress = (o.applied, now);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(applied: u64, committed: u64) -> Observation {
        Observation {
            applied,
            committed,
            state: ReplayState::Replaying,
        }
    }

    #[test]
    fn a_stall_is_reported_once_then_every_minute_and_its_end_too() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut m = Monitor::new(MonitorOptions::default(), t0);
        assert!(
            m.observe(obs(10, 20), s(1)).is_empty(),
            "progress is not due yet"
        );
        // Stuck at 10 with 10 pending since second 1.
        let mut said = Vec::new();
        for sec in 2..=100 {
            said.extend(
                m.observe(obs(10, 20), s(sec))
                    .into_iter()
                    .filter(|x| matches!(x, Say::Stalled { .. }))
                    .map(|_| sec),
            );
        }
        assert_eq!(said, vec![31, 91], "after 30 s, then a minute later");
        assert_eq!(m.stalled_for(&obs(10, 20), s(100)), Duration::from_secs(99));
        let got = m.observe(obs(11, 20), s(101));
        assert!(got.contains(&Say::Resumed { after_secs: 100 }), "{got:?}");
        assert_eq!(m.stalled_for(&obs(11, 20), s(101)), Duration::ZERO);
    }

    #[test]
    fn nothing_pending_is_no_stall_however_long() {
        let t0 = Instant::now();
        let mut m = Monitor::new(MonitorOptions::default(), t0);
        for sec in 1..=300 {
            let got = m.observe(obs(50, 50), t0 + Duration::from_secs(sec));
            assert!(!got.iter().any(|x| matches!(x, Say::Stalled { .. })));
        }
    }

    #[test]
    fn progress_lines_come_at_most_every_ten_seconds_and_only_when_moving() {
        let t0 = Instant::now();
        let mut m = Monitor::new(MonitorOptions::default(), t0);
        let mut lines = Vec::new();
        for sec in 1..=40u64 {
            // Moves for 25 s, then idle (nothing pending).
            let applied = sec.min(25) * 100;
            for x in m.observe(obs(applied, applied), t0 + Duration::from_secs(sec)) {
                if let Say::Progress { applied, rate, .. } = x {
                    lines.push((sec, applied, rate.round() as u64));
                }
            }
        }
        assert_eq!(
            lines,
            vec![(10, 1000, 100), (20, 2000, 100), (30, 2500, 50)]
        );
    }
}
