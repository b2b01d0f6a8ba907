//! `etcd-standby promote`: flags, the confirmation, and the rendering of the
//! plan and the report. The work is `etcd_standby_daemon::promote`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use etcd_standby_daemon::promote::{
    self, Choices, Decision, Inspection, Plan, PromoteOptions, Report, Target, Verdict,
};

use crate::output::{EXIT_ALREADY_PROMOTED, EXIT_OK, EXIT_REFUSED, WriteOut};
use crate::{
    PrefixArgs, ReconcileArgs, SourceArgs, StandbyArgs, UsageError, replay_options, runtime,
};

/// `etcd-standby promote` flags.
#[derive(clap::Args)]
pub struct PromoteArgs {
    /// The replicator's data dir (a running replicator on it is found
    /// through the admin address it recorded there).
    #[arg(long, env = "ETCD_STANDBY_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    standby: StandbyArgs,
    /// The old primary (optional): checked, fenced and left when reachable.
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    prefixes: PrefixArgs,
    #[command(flatten)]
    reconcile: ReconcileArgs,
    /// Print the checks and the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Override the checks that allow it (each says what forcing gives up).
    #[arg(long)]
    force: bool,
    /// Make a reachable old primary refuse writes (a CORRUPT alarm; undo with
    /// `etcdctl alarm disarm`) before the final drain: a planned switchover.
    #[arg(long)]
    fence_old_primary: bool,
    /// Also apply the entries received but not confirmed committed (a new
    /// raft leader may have committed them).
    #[arg(long)]
    apply_unconfirmed_tail: bool,
    /// Promote to this raft index (apply up to it, no further).
    #[arg(long, conflicts_with = "to_time")]
    to_index: Option<u64>,
    /// Promote to the entries received up to this time (RFC 3339, e.g.
    /// 2026-12-02T18:30:00Z).
    #[arg(long)]
    to_time: Option<String>,
    /// Why (recorded in the audit record; required unless --dry-run).
    #[arg(long, default_value = "")]
    reason: String,
    /// Who (recorded; default $SUDO_USER or $USER).
    #[arg(long)]
    operator: Option<String>,
    /// Output format (`table` is the same as `simple`, which is tables).
    #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
    write_out: WriteOut,
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "ok",
        Verdict::Warn => "WARN",
        Verdict::Fail => "FAIL",
    }
}

fn print_plan(i: &Inspection) {
    let f = &i.facts;
    let p = &i.plan;
    println!(
        "Promotion of standby {} (replicating cluster {:x} as learner {:x})",
        f.standby.endpoints.join(","),
        f.cluster_id,
        f.member_id
    );
    println!();
    println!("{:<22} {:<6} DETAIL", "CHECK", "RESULT");
    for c in &p.checks {
        if c.verdict == Verdict::Pass {
            println!("{:<22} {:<6} {}", c.name, verdict(c.verdict), c.detail);
        } else {
            println!(
                "{:<22} {:<6} {} [{}]",
                c.name,
                verdict(c.verdict),
                c.detail,
                c.code
            );
        }
        if let Some(g) = &c.force_gives_up
            && c.verdict == Verdict::Fail
        {
            println!("{:<22} {:<6} --force gives up: {g}", "", "");
        }
    }
    println!();
    print_rpo(p);
    if !p.actions.is_empty() {
        println!();
        println!("Steps:");
        for (n, a) in p.actions.iter().enumerate() {
            println!("  {}. {a}", n + 1);
        }
    }
    println!();
    println!(
        "Decision: {}",
        match p.decision {
            Decision::Proceed => "promote".to_owned(),
            Decision::Resume => "finish the interrupted promotion".to_owned(),
            Decision::Refused => format!(
                "REFUSED (exit {EXIT_REFUSED}){}",
                if p.checks
                    .iter()
                    .any(|c| c.verdict == Verdict::Fail && c.force_gives_up.is_some())
                    && !p
                        .checks
                        .iter()
                        .any(|c| c.verdict == Verdict::Fail && c.force_gives_up.is_none())
                {
                    "; --force would override, giving up what is listed above"
                } else {
                    ""
                }
            ),
            Decision::AlreadyPromoted =>
                format!("REFUSED: already promoted (exit {EXIT_ALREADY_PROMOTED})"),
        }
    );
}

fn print_rpo(p: &Plan) {
    let r = &p.rpo;
    println!("Target: raft index {}", p.target_index);
    println!("RPO: {}", r.summary);
    println!(
        "  committed not applied {} ({} bytes)   unconfirmed tail {} ({} bytes, {})   primary commit known {}   last contact {}",
        r.committed_not_applied,
        r.committed_not_applied_bytes,
        r.unconfirmed_tail_entries,
        r.unconfirmed_tail_bytes,
        if r.unconfirmed_tail_applied {
            "applied"
        } else {
            "not applied"
        },
        r.primary_commit_known,
        r.last_contact.as_deref().unwrap_or("unknown")
    );
}

fn print_report(r: &Report) {
    println!();
    println!(
        "PROMOTED: the standby is the primary now (epoch {}, raft index {} term {}, revision {}).",
        r.epoch, r.applied_index, r.applied_term, r.standby_revision
    );
    if let Some(i) = r.old_primary_fenced_at {
        println!("Old primary fenced (CORRUPT alarm) at raft index {i}.");
    }
    println!(
        "Leases: {} refreshed to a full TTL, {} already gone{}.",
        r.leases_refreshed,
        r.leases_gone,
        if r.leases_missing.is_empty() {
            String::new()
        } else {
            format!(
                ", {} of the primary's leases missing on the standby: {}",
                r.leases_missing.len(),
                r.leases_missing.join(",")
            )
        }
    );
    println!("Learner: {}.", r.learner_removal);
    println!(
        "Audit record: {} (also in the log and the data dir).",
        r.audit_key
    );
    print_rpo(&r.plan);
    println!();
    println!("Next steps:");
    for s in &r.next_steps {
        println!("  - {s}");
    }
}

fn exit_code(d: Decision) -> i32 {
    match d {
        Decision::Proceed | Decision::Resume => EXIT_OK,
        Decision::Refused => EXIT_REFUSED,
        Decision::AlreadyPromoted => EXIT_ALREADY_PROMOTED,
    }
}

fn confirm() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "promote asks for confirmation on a terminal; pass --yes to run it unattended".into(),
        )
        .into());
    }
    print!("Type 'promote' to promote the standby: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "promote")
}

/// Runs `promote`; returns the process exit code.
pub fn promote(a: PromoteArgs) -> anyhow::Result<i32> {
    if a.standby.standby_endpoints.is_empty() {
        return Err(UsageError("promote needs --standby-endpoints".into()).into());
    }
    if !a.dry_run && a.reason.trim().is_empty() {
        return Err(UsageError(
            "promote needs --reason \"...\" (it goes into the audit record)".into(),
        )
        .into());
    }
    let target = match (a.to_index, &a.to_time) {
        (Some(i), _) => Target::Index(i),
        (None, Some(t)) => Target::Time(etcd_standby_daemon::clock::unix_ms(
            etcd_standby_daemon::clock::parse_rfc3339(t)
                .map_err(|e| UsageError(format!("--to-time: {e}")))?,
        )),
        (None, None) => Target::Latest,
    };
    let mut replay = replay_options(&a.standby, &a.prefixes, &a.reconcile);
    // The identity `run` made for itself on the standby, when none is configured.
    if replay.sink.client.user.is_none()
        && replay.sink.standby_user.is_none()
        && let Some(id) = etcd_standby_daemon::datadir::read_standby_identity(&a.data_dir)?
    {
        replay.sink.client.user = Some((id.user, id.password));
    }
    let opts = PromoteOptions {
        data_dir: a.data_dir.clone(),
        replay,
        source: a.source.optional(),
        choices: Choices {
            target,
            apply_unconfirmed_tail: a.apply_unconfirmed_tail,
            force: a.force,
            fence_old_primary: a.fence_old_primary,
        },
        reason: a.reason.clone(),
        operator: a.operator.clone().unwrap_or_else(promote::default_operator),
        host: promote::default_host(),
    };
    let json = a.write_out == WriteOut::Json;
    let rt = runtime()?;
    let inspection = rt.block_on(promote::inspect(&opts))?;
    let decision = inspection.plan.decision;
    if a.dry_run || matches!(decision, Decision::Refused | Decision::AlreadyPromoted) {
        if json {
            println!(
                "{}",
                serde_json::json!({"dry_run": a.dry_run, "executed": false, "inspection": inspection})
            );
        } else {
            print_plan(&inspection);
            if a.dry_run {
                println!("Dry run: nothing was changed.");
            }
        }
        return Ok(exit_code(decision));
    }
    if !json {
        print_plan(&inspection);
    }
    if !a.yes && !confirm()? {
        println!("Not confirmed: nothing was changed.");
        return Ok(EXIT_REFUSED);
    }
    let report = rt.block_on(promote::execute(&opts, inspection))?;
    if json {
        println!(
            "{}",
            serde_json::json!({"dry_run": false, "executed": true, "report": report})
        );
    } else {
        print_report(&report);
    }
    Ok(EXIT_OK)
}
