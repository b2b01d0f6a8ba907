//! The chaos suite's fault schedule: drawn from a seed, written as JSON
//! lines, read back to repeat a run exactly. Pure (no IO but the file).
//!
//! Faults hit three targets, the replicator, the primary's members and the
//! standby; faults on different targets overlap (the bad day), faults on
//! one target do not (a process cannot be killed while it is paused). At
//! most one primary member is down at a time, so the primary keeps quorum.
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::load::Rng;

/// The default suite's short runs: 45 s of faults, a seed per version
/// chosen so that each draws every fault kind (a unit test keeps it so).
pub const SHORT_MS: u64 = 45_000;
/// The seed of the short run on etcd 3.5.
pub const SHORT_SEED_3_5: u64 = 8;
/// The seed of the short run on etcd 3.4.
pub const SHORT_SEED_3_4: u64 = 2;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL the replicator; restart it after the duration.
    KillReplicator,
    /// SIGKILL the replicator and leave a torn record (a write that never
    /// completed) after the end of its last WAL segment; restart it after
    /// the duration.
    KillReplicatorTornTail,
    /// SIGSTOP the replicator (hung, not dead); SIGCONT after the duration.
    PauseReplicator,
    /// SIGKILL the primary's leader; restart it after the duration.
    KillPrimaryLeader,
    /// SIGKILL a primary follower; restart it after the duration.
    KillPrimaryFollower,
    /// SIGSTOP the primary's leader (the others elect a new one).
    PausePrimaryLeader,
    /// Stop every standby member; start them after the duration.
    StandbyOutage,
    /// SIGKILL the standby's leader (the others elect a new one); restart it
    /// after the duration.
    KillStandbyLeader,
    /// Partition the learner from the primary: nothing crosses either way
    /// and the connections stay open (half-open).
    PartitionLearner,
    /// Reset every connection between the learner and the primary, and
    /// new ones, for the duration.
    ResetLearner,
    /// The learner hears the primary but the primary does not hear it
    /// (its acknowledgements are lost).
    OneWayLearner,
    /// A weak link between the learner and the primary: added latency and
    /// little bandwidth.
    SlowLearner,
    /// Partition the replicator from the standby (half-open connections).
    PartitionStandby,
    /// Reset every connection from the replicator to the standby.
    ResetStandby,
    /// Fill the replicator's data dir's filesystem; free it after the duration.
    DiskFull,
    /// Compact the primary at its current revision (instant).
    Compact,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 16] = [
        Fault::KillReplicator,
        Fault::KillReplicatorTornTail,
        Fault::PauseReplicator,
        Fault::KillPrimaryLeader,
        Fault::KillPrimaryFollower,
        Fault::PausePrimaryLeader,
        Fault::StandbyOutage,
        Fault::KillStandbyLeader,
        Fault::PartitionLearner,
        Fault::ResetLearner,
        Fault::OneWayLearner,
        Fault::SlowLearner,
        Fault::PartitionStandby,
        Fault::ResetStandby,
        Fault::DiskFull,
        Fault::Compact,
    ];

    /// Its name in schedule files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillReplicator => "kill_replicator",
            Fault::KillReplicatorTornTail => "kill_replicator_torn_tail",
            Fault::PauseReplicator => "pause_replicator",
            Fault::KillPrimaryLeader => "kill_primary_leader",
            Fault::KillPrimaryFollower => "kill_primary_follower",
            Fault::PausePrimaryLeader => "pause_primary_leader",
            Fault::StandbyOutage => "standby_outage",
            Fault::KillStandbyLeader => "kill_standby_leader",
            Fault::PartitionLearner => "partition_learner",
            Fault::ResetLearner => "reset_learner",
            Fault::OneWayLearner => "one_way_learner",
            Fault::SlowLearner => "slow_learner",
            Fault::PartitionStandby => "partition_standby",
            Fault::ResetStandby => "reset_standby",
            Fault::DiskFull => "disk_full",
            Fault::Compact => "compact",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s)
    }

    /// What it hits (faults on one target never overlap).
    pub fn target(self) -> &'static str {
        match self {
            Fault::KillReplicator
            | Fault::KillReplicatorTornTail
            | Fault::PauseReplicator
            | Fault::DiskFull => "replicator",
            Fault::KillPrimaryLeader | Fault::KillPrimaryFollower | Fault::PausePrimaryLeader => {
                "primary"
            }
            Fault::StandbyOutage | Fault::KillStandbyLeader => "standby",
            Fault::PartitionLearner
            | Fault::ResetLearner
            | Fault::OneWayLearner
            | Fault::SlowLearner => "learner_link",
            Fault::PartitionStandby | Fault::ResetStandby => "standby_link",
            Fault::Compact => "none",
        }
    }

    /// How long it lasts, in ms: (min, max), in a run of `run_ms`. In a
    /// campaign of 10 minutes or more a standby outage lasts minutes and a
    /// learner partition long enough to force a leader snapshot.
    fn duration_range(self, run_ms: u64) -> (u64, u64) {
        match self {
            Fault::StandbyOutage if run_ms >= 600_000 => (60_000, 180_000),
            // Cut off long enough for the leader to compact past us (it
            // keeps 5000 entries behind its snapshot): a leader snapshot.
            Fault::PartitionLearner if run_ms >= 600_000 => (20_000, 60_000),
            Fault::KillReplicator | Fault::KillReplicatorTornTail => (300, 3_000),
            Fault::PauseReplicator => (1_000, 5_000),
            Fault::KillPrimaryLeader | Fault::KillPrimaryFollower => (1_000, 4_000),
            Fault::PausePrimaryLeader => (1_000, 4_000),
            Fault::StandbyOutage => (2_000, 8_000),
            Fault::KillStandbyLeader => (1_000, 4_000),
            Fault::PartitionLearner | Fault::OneWayLearner => (2_000, 8_000),
            Fault::ResetLearner | Fault::ResetStandby => (1_000, 3_000),
            Fault::SlowLearner => (3_000, 8_000),
            Fault::PartitionStandby => (2_000, 6_000),
            Fault::DiskFull => (2_000, 6_000),
            Fault::Compact => (0, 0),
        }
    }
}

/// One fault: when it starts (ms after the workload started) and how long it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Start, ms after the workload started.
    pub at_ms: u64,
    /// Its kind.
    pub fault: Fault,
    /// Duration in ms (0 for instant faults).
    pub duration_ms: u64,
}

/// A run's faults, in start order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it was drawn from (0 when read from a file).
    pub seed: u64,
    /// The steps, by start time.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// Draws faults for `duration_ms` from `seed`: a new fault every 1–4 s,
    /// started when its target is free again. Kinds come from a shuffled
    /// deck of every kind, dealt in turn and reshuffled when empty, so every
    /// [`Fault::ALL`].len() consecutive faults hold each kind once.
    pub fn generate(seed: u64, duration_ms: u64) -> Schedule {
        let mut rng = Rng(seed);
        let mut busy: BTreeMap<&str, u64> = BTreeMap::new();
        let mut steps = Vec::new();
        let mut deck: Vec<Fault> = Vec::new();
        let mut t = 2_000;
        while t < duration_ms {
            if deck.is_empty() {
                deck = Fault::ALL.to_vec();
                for i in (1..deck.len()).rev() {
                    deck.swap(i, rng.below(i as u64 + 1) as usize);
                }
            }
            let Some(fault) = deck.pop() else { break };
            let (lo, hi) = fault.duration_range(duration_ms);
            let duration_ms = lo + rng.below(hi - lo + 1);
            let target = fault.target();
            let at_ms = if target == "none" {
                t
            } else {
                t.max(busy.get(target).copied().unwrap_or(0))
            };
            if target != "none" {
                // At least 500 ms before the next fault on the same target.
                busy.insert(target, at_ms + duration_ms + 500);
            }
            steps.push(Step {
                at_ms,
                fault,
                duration_ms,
            });
            t += 1_000 + rng.below(3_000);
        }
        steps.sort_by_key(|s| (s.at_ms, s.fault));
        Schedule { seed, steps }
    }

    /// The schedule as JSON lines (one header line, one line per step).
    pub fn to_json_lines(&self) -> String {
        let mut out = json!({"schedule": "etcd-standby chaos", "seed": self.seed}).to_string();
        out.push('\n');
        for s in &self.steps {
            out.push_str(
                &json!({"at_ms": s.at_ms, "fault": s.fault.name(), "duration_ms": s.duration_ms})
                    .to_string(),
            );
            out.push('\n');
        }
        out
    }

    /// Reads [`Schedule::to_json_lines`] output.
    pub fn from_json_lines(text: &str) -> Result<Schedule, String> {
        let mut seed = 0;
        let mut steps = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: Value =
                serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
            if v.get("schedule").is_some() {
                seed = v["seed"].as_u64().unwrap_or(0);
                continue;
            }
            let field = |k: &str| v[k].as_u64().ok_or(format!("line {}: no {k}", n + 1));
            let name = v["fault"]
                .as_str()
                .ok_or(format!("line {}: no fault", n + 1))?;
            steps.push(Step {
                at_ms: field("at_ms")?,
                fault: Fault::parse(name).ok_or(format!("line {}: unknown fault {name}", n + 1))?,
                duration_ms: field("duration_ms")?,
            });
        }
        steps.sort_by_key(|s| (s.at_ms, s.fault));
        Ok(Schedule { seed, steps })
    }

    /// Reads a schedule file.
    pub fn read(path: &Path) -> Result<Schedule, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Schedule::from_json_lines(&text)
    }

    /// When the last fault ends, in ms.
    pub fn end_ms(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| s.at_ms + s.duration_ms)
            .max()
            .unwrap_or(0)
    }

    /// Fault counts by kind name.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for s in &self.steps {
            *out.entry(s.fault.name()).or_default() += 1;
        }
        out
    }
}

/// A start or end of a step, in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Step `i` starts.
    Start(usize),
    /// Step `i` ends (restart, SIGCONT, ...).
    End(usize),
}

/// The schedule's events by time (an end before a start at the same ms).
pub fn events(s: &Schedule) -> Vec<(u64, Event)> {
    let mut ev: Vec<(u64, u8, Event)> = Vec::new();
    for (i, st) in s.steps.iter().enumerate() {
        ev.push((st.at_ms, 1, Event::Start(i)));
        if st.duration_ms > 0 {
            ev.push((st.at_ms + st.duration_ms, 0, Event::End(i)));
        }
    }
    ev.sort_by_key(|(t, o, e)| {
        (
            *t,
            *o,
            match e {
                Event::Start(i) | Event::End(i) => *i,
            },
        )
    });
    ev.into_iter().map(|(t, _, e)| (t, e)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_and_a_file_repeats_it() {
        let a = Schedule::generate(7, 60_000);
        assert_eq!(a, Schedule::generate(7, 60_000));
        assert_ne!(a.steps, Schedule::generate(8, 60_000).steps);
        let back = Schedule::from_json_lines(&a.to_json_lines()).unwrap();
        assert_eq!(back, a);
        assert!(a.steps.len() >= 15, "{}", a.steps.len());
    }

    #[test]
    fn faults_on_one_target_never_overlap_and_different_targets_do() {
        let mut overlapped = false;
        for seed in 0..50 {
            let s = Schedule::generate(seed, 120_000);
            for (i, a) in s.steps.iter().enumerate() {
                for b in &s.steps[i + 1..] {
                    let overlap =
                        b.at_ms < a.at_ms + a.duration_ms && a.at_ms < b.at_ms + b.duration_ms;
                    if a.fault.target() == b.fault.target() && a.fault.target() != "none" {
                        assert!(!overlap, "seed {seed}: {a:?} and {b:?}");
                    } else if overlap {
                        overlapped = true;
                    }
                }
            }
        }
        assert!(overlapped, "no two faults ever overlap");
    }

    #[test]
    fn a_campaign_of_ten_minutes_takes_the_standby_down_for_minutes() {
        let s = Schedule::generate(5, 600_000);
        let outages: Vec<u64> = s
            .steps
            .iter()
            .filter(|st| st.fault == Fault::StandbyOutage)
            .map(|st| st.duration_ms)
            .collect();
        assert!(!outages.is_empty());
        assert!(outages.iter().all(|d| *d >= 60_000), "{outages:?}");
        let short = Schedule::generate(5, SHORT_MS);
        assert!(
            short
                .steps
                .iter()
                .filter(|st| st.fault == Fault::StandbyOutage)
                .all(|st| st.duration_ms <= 8_000)
        );
    }

    #[test]
    fn the_default_suites_short_runs_draw_every_fault_kind() {
        for seed in [SHORT_SEED_3_5, SHORT_SEED_3_4] {
            let s = Schedule::generate(seed, SHORT_MS);
            assert_eq!(
                s.counts().len(),
                Fault::ALL.len(),
                "seed {seed}: {:?}",
                s.counts()
            );
        }
    }

    #[test]
    fn every_fault_kind_is_drawn_and_events_end_before_they_start_again() {
        let s = Schedule::generate(3, 300_000);
        assert_eq!(s.counts().len(), Fault::ALL.len(), "{:?}", s.counts());
        let ev = events(&s);
        assert!(ev.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut open: BTreeMap<&str, bool> = BTreeMap::new();
        for (_, e) in ev {
            match e {
                Event::Start(i) => {
                    let t = s.steps[i].fault.target();
                    if s.steps[i].duration_ms > 0 {
                        assert!(
                            !open.get(t).copied().unwrap_or(false),
                            "{t} hit twice at once"
                        );
                        open.insert(t, true);
                    }
                }
                Event::End(i) => {
                    open.insert(s.steps[i].fault.target(), false);
                }
            }
        }
    }
}
