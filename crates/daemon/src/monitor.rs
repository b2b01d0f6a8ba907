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
//!
//! Replay's stall watch only compares replay with the commit point our own
//! node loop publishes: a learner that stops *learning* commits (the
//! leader's messages no longer reach us, our acknowledgements no longer
//! reach the leader, a half-open peer connection) sees both equal and says
//! nothing. [`PrimaryWatch`] closes that blind spot with the primary's own
//! raft index, read now and then through its client API (`Status`):
//!
//! * **behind the primary**: our commit index has not reached, within
//!   `stall_after`, an index the primary had already reached `stall_after`
//!   ago → one warning with the reason, repeated every `stall_repeat` while
//!   it lasts, a line when it ends, `behind_primary_seconds` in `/status`
//!   and the `etcd_standby_learner_behind_primary_seconds` gauge. Load does
//!   not matter: a learner that follows a busy primary closely passes every
//!   index the primary reported within moments of the report.

use std::collections::VecDeque;
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
        } else if o.committed <= o.applied {
            // Idle with nothing pending: a stall can only start once
            // something is (the clock is not the time since the last move).
            self.applied.1 = now;
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

/// What [`PrimaryWatch`] wants said.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSay {
    /// Our commit index has not reached an index the primary had reached
    /// `for_secs` ago.
    Behind {
        /// Seconds since the primary reported an index we have not reached.
        for_secs: u64,
        /// Our commit index.
        commit: u64,
        /// The oldest index the primary reported that we have not reached.
        primary_index: u64,
        /// The newest index the primary reported.
        primary_latest: u64,
        /// Seconds since our commit index last moved (a frozen learner
        /// stopped learning commits; a moving one is catching up too slowly).
        commit_unchanged_secs: u64,
    },
    /// A behind-the-primary episode ended.
    CaughtUp {
        /// How long it lasted (from the primary's report we had not reached),
        /// in seconds.
        after_secs: u64,
        /// Our commit index now.
        commit: u64,
    },
}

/// How many primary samples are kept (older ones are thinned, the oldest
/// unreached one is always kept).
const PRIMARY_SAMPLES: usize = 64;

/// The "learner behind the primary" watchdog's memory: the primary's raft
/// index as reported over time, against our commit index. Pure: it is
/// given the time.
#[derive(Debug)]
pub struct PrimaryWatch {
    opts: MonitorOptions,
    /// (primary index, when it was seen), oldest first; only indexes above
    /// our commit index as last observed.
    samples: VecDeque<(u64, Instant)>,
    /// The newest index the primary reported (0: none yet).
    latest: u64,
    /// Our commit index and when it last moved.
    commit: (u64, Instant),
    /// The current episode: when it started (the unreached report's time)
    /// and when it was last reported.
    episode: Option<(Instant, Instant)>,
}

impl PrimaryWatch {
    /// A watch starting at `now` (uses `stall_after` and `stall_repeat`).
    pub fn new(opts: MonitorOptions, now: Instant) -> PrimaryWatch {
        PrimaryWatch {
            opts,
            samples: VecDeque::new(),
            latest: 0,
            commit: (0, now),
            episode: None,
        }
    }

    /// The primary reported raft index `index` (its committed index, as
    /// `Status` answers) at `now`. Call it with the time the answer came
    /// back: the primary had reached the index by then at the latest.
    pub fn primary_at(&mut self, index: u64, now: Instant) {
        self.latest = index;
        if index <= self.commit.0 {
            return;
        }
        // A quiet primary: the same index again adds nothing (the older
        // report of it is the one that counts). A lower one (another
        // member answered, a follower behind its leader) is implied by an
        // older, higher report only if one is kept.
        if self.samples.iter().any(|&(i, _)| i >= index) {
            return;
        }
        if self.samples.len() >= PRIMARY_SAMPLES {
            // Thin the middle; the oldest unreached report stays.
            self.samples.remove(1);
        }
        self.samples.push_back((index, now));
    }

    /// How long ago the primary reported an index our commit `commit` has
    /// not reached (zero when we reached every report).
    pub fn behind_for(&self, commit: u64, now: Instant) -> Duration {
        self.samples
            .iter()
            .find(|&&(i, _)| i > commit)
            .map_or(Duration::ZERO, |&(_, at)| now.saturating_duration_since(at))
    }

    /// The newest index the primary reported (0: none yet).
    pub fn primary_latest(&self) -> u64 {
        self.latest
    }

    /// Whether a behind-the-primary episode is declared now.
    pub fn is_behind(&self) -> bool {
        self.episode.is_some()
    }

    /// Takes our commit index at `now`; returns what to log.
    pub fn observe(&mut self, commit: u64, now: Instant) -> Vec<SourceSay> {
        let mut out = Vec::new();
        if commit != self.commit.0 {
            self.commit = (commit, now);
        }
        // Reports we reached (a commit never moves back, but a restarted
        // learner's first observation may be below older reports).
        self.samples.retain(|&(i, _)| i > commit);
        let behind = self.behind_for(commit, now);
        if behind >= self.opts.stall_after {
            let due = self.episode.is_none_or(|(_, said)| {
                now.saturating_duration_since(said) >= self.opts.stall_repeat
            });
            if due {
                let started = self.samples.front().map_or(now, |&(_, at)| at);
                let first = self.episode.map_or(started, |(s, _)| s);
                self.episode = Some((first, now));
                out.push(SourceSay::Behind {
                    for_secs: behind.as_secs(),
                    commit,
                    primary_index: self.samples.front().map_or(0, |&(i, _)| i),
                    primary_latest: self.latest,
                    commit_unchanged_secs: now.saturating_duration_since(self.commit.1).as_secs(),
                });
            }
        } else if let Some((started, _)) = self.episode.take() {
            out.push(SourceSay::CaughtUp {
                after_secs: now.saturating_duration_since(started).as_secs(),
                commit,
            });
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
    fn a_long_idle_spell_does_not_count_towards_a_stall_once_entries_arrive() {
        // Seen in `bench replay`: 5 idle minutes, then a load; the first
        // observation with entries pending reported a 299 s stall.
        let t0 = Instant::now();
        let mut m = Monitor::new(MonitorOptions::default(), t0);
        for sec in 1..=300 {
            m.observe(obs(50, 50), t0 + Duration::from_secs(sec));
        }
        let got = m.observe(obs(50, 1330), t0 + Duration::from_secs(301));
        assert!(
            !got.iter().any(|x| matches!(x, Say::Stalled { .. })),
            "{got:?}"
        );
        assert_eq!(
            m.stalled_for(&obs(50, 1330), t0 + Duration::from_secs(301)),
            Duration::from_secs(1)
        );
        // Still not moving 30 s after entries arrived: that is a stall.
        let got = m.observe(obs(50, 1330), t0 + Duration::from_secs(331));
        assert!(
            got.iter()
                .any(|x| matches!(x, Say::Stalled { for_secs: 31, .. })),
            "{got:?}"
        );
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

    /// A busy primary (1000 entries/s), sampled every 5 s; our commit
    /// trails it by `lag` and is observed every second.
    fn follow(lag: Duration, secs: u64) -> (Vec<SourceSay>, Duration) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let primary = |ms: u64| 100_000 + ms; // one entry per millisecond
        let mut w = PrimaryWatch::new(MonitorOptions::default(), t0);
        let (mut said, mut worst) = (Vec::new(), Duration::ZERO);
        for sec in 1..=secs {
            let ms = sec * 1000;
            if sec % 5 == 0 {
                w.primary_at(primary(ms), at(ms));
            }
            let ours = primary(ms) - lag.as_millis() as u64;
            said.extend(w.observe(ours, at(ms)));
            worst = worst.max(w.behind_for(ours, at(ms)));
        }
        (said, worst)
    }

    #[test]
    fn a_learner_that_follows_a_busy_primary_closely_never_trips_the_primary_watch() {
        for lag in [0, 200, 2_000, 20_000] {
            let lag = Duration::from_millis(lag);
            let (said, worst) = follow(lag, 3_600);
            assert!(said.is_empty(), "lag {lag:?}: {said:?}");
            // Behind by at most the lag plus one sampling period.
            assert!(
                worst <= lag + Duration::from_secs(5),
                "lag {lag:?}: {worst:?}"
            );
        }
    }

    #[test]
    fn a_learner_that_trails_by_more_than_the_threshold_is_behind_even_while_moving() {
        let (said, _) = follow(Duration::from_secs(45), 120);
        let first = said.first();
        assert!(
            matches!(first, Some(SourceSay::Behind { for_secs, commit_unchanged_secs: 0, .. }) if *for_secs >= 30),
            "{said:?}"
        );
    }

    #[test]
    fn a_learner_whose_commit_froze_is_behind_after_the_threshold_then_every_minute_then_caught_up()
    {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut w = PrimaryWatch::new(MonitorOptions::default(), t0);
        let mut said = Vec::new();
        // The primary takes 100 entries a second throughout; we follow it
        // until second 100, then our commit stays at 10_000.
        for sec in 1..=200u64 {
            let primary = sec * 100;
            if sec % 5 == 0 {
                w.primary_at(primary, s(sec));
            }
            let ours = primary.min(10_000);
            for x in w.observe(ours, s(sec)) {
                said.push((sec, x));
            }
        }
        // First unreached report: second 105 (10_500). Behind from 135,
        // then a minute later, and again.
        let secs: Vec<u64> = said.iter().map(|(s, _)| *s).collect();
        assert_eq!(secs, vec![135, 195], "{said:?}");
        assert_eq!(
            said[0].1,
            SourceSay::Behind {
                for_secs: 30,
                commit: 10_000,
                primary_index: 10_500,
                primary_latest: 13_500,
                commit_unchanged_secs: 35,
            }
        );
        assert!(w.is_behind());
        assert_eq!(w.behind_for(10_000, s(200)), Duration::from_secs(95));
        // The link heals: we catch up with everything the primary reported.
        let got = w.observe(20_000, s(201));
        assert_eq!(
            got,
            vec![SourceSay::CaughtUp {
                after_secs: 96,
                commit: 20_000
            }]
        );
        assert!(!w.is_behind());
        assert_eq!(w.behind_for(20_000, s(201)), Duration::ZERO);
        assert!(w.observe(20_000, s(300)).is_empty());
    }

    #[test]
    fn a_quiet_primary_we_have_reached_is_never_a_stall_however_long() {
        let t0 = Instant::now();
        let mut w = PrimaryWatch::new(MonitorOptions::default(), t0);
        for sec in 1..=600u64 {
            let now = t0 + Duration::from_secs(sec);
            if sec % 5 == 0 {
                w.primary_at(777, now);
            }
            assert!(w.observe(777, now).is_empty(), "second {sec}");
        }
        assert_eq!(w.primary_latest(), 777);
    }

    #[test]
    fn a_quiet_primary_ahead_of_a_frozen_learner_is_a_stall_counted_from_its_first_report() {
        // The original report: the primary took its last write and went
        // quiet; the learner never learned that it was committed.
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut w = PrimaryWatch::new(MonitorOptions::default(), t0);
        let mut first = None;
        for sec in 1..=100u64 {
            if sec % 5 == 0 {
                w.primary_at(501, s(sec));
            }
            for x in w.observe(500, s(sec)) {
                first.get_or_insert((sec, x));
            }
        }
        assert_eq!(
            first,
            Some((
                35,
                SourceSay::Behind {
                    for_secs: 30,
                    commit: 500,
                    primary_index: 501,
                    primary_latest: 501,
                    commit_unchanged_secs: 34,
                }
            ))
        );
    }

    #[test]
    fn a_lower_report_from_a_lagging_member_does_not_restart_the_clock() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut w = PrimaryWatch::new(MonitorOptions::default(), t0);
        w.primary_at(900, s(1));
        w.primary_at(850, s(6)); // a follower behind its leader answered
        w.observe(800, s(7));
        assert_eq!(w.behind_for(800, s(31)), Duration::from_secs(30));
        // 850 is implied by the older 900: reaching it does not end anything.
        assert_eq!(w.behind_for(860, s(31)), Duration::from_secs(30));
        assert_eq!(w.behind_for(900, s(31)), Duration::ZERO);
    }

    #[test]
    fn the_primary_samples_stay_bounded_and_the_oldest_unreached_one_is_kept() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut w = PrimaryWatch::new(MonitorOptions::default(), t0);
        w.observe(10, s(0));
        for sec in 1..=10_000u64 {
            w.primary_at(10 + sec, s(sec));
        }
        assert!(w.samples.len() <= PRIMARY_SAMPLES);
        assert_eq!(w.behind_for(10, s(10_000)), Duration::from_secs(9_999));
        // The newest report is kept too.
        assert_eq!(w.behind_for(10_009, s(10_000)), Duration::ZERO);
        assert_eq!(w.behind_for(10_008, s(10_000)), Duration::from_secs(1));
    }
}
