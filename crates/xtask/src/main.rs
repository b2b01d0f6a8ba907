//! Project automation, run as `cargo xtask <command>`.
//!
//! Commands:
//! * `install-etcd` — provision etcd 3.4.23 and 3.5.1 into `.tools/`;
//! * `install-ops-tools` — provision promtool/prometheus, kubectl and
//!   kubernetes-validate (the deploy/ tests) into `.tools/`;
//! * `test [--soak] [-- ARGS]` — the whole suite against real etcd;
//!   `test --chaos ...` — the chaos campaign;
//! * `demo [NAME] [--keep] [--release]` — end-to-end demonstrations;
//! * `fuzz [--seconds N] [TARGET...]` — the coverage-guided cargo-fuzz campaign;
//! * `bench NAME` — benchmarks.

mod bench;
mod bench_learner;
mod bench_memory;
mod bench_primary;
mod bench_replay;
mod bench_revisions;
mod bench_wan;
mod cmd;
mod demo;
mod etcd;
mod fuzz;
mod opstools;
mod test;

use std::process::ExitCode;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  install-etcd                 provision etcd 3.4.23 and 3.5.1 into .tools/ (idempotent) and
                               print `export ETCD_STANDBY_ETCD_3_x=...` lines
  install-ops-tools            provision prometheus/promtool 2.42, kubectl 1.20 and
                               kubernetes-validate into .tools/ (deploy/ tests); print exports
  test [--soak] [-- ARGS...]   run the whole test suite against real etcd (nextest if
                               available, else cargo test); ARGS go to the test runner;
                               --soak sets ETCD_STANDBY_SOAK=1 for long tests
  test --chaos [--seed S] [--minutes M] [--replay FILE] [--versions 3.4|3.5]
                               only the chaos campaign: a seeded schedule of overlapping
                               faults (default 5 min per version) under a bank/lease/delete
                               workload; the schedule is written to target/chaos/ and
                               --replay repeats one
  demo [NAME] [--keep] [--release]
                               run a demo: replicate (default: a 3-member primary kept in step
                               with a standby by `etcd-standby run`, then status, verify and
                               reads from the standby) or inspect (the offline inspection
                               tool on a stopped etcd's data dir); --keep keeps the temp dirs,
                               --release builds etcd-standby with --release
  bench NAME                   run a benchmark (available: wal, learner, replay, wan, primary, memory, revisions);
                               `bench replay` knobs: ETCD_STANDBY_BENCH_KEYS, _SECS,
                               _BACKLOG, _VERSIONS (e.g. 3.5), _MEMBERS, _CONC;
                               `bench wan` (root: network namespaces, an emulated link with
                               delay, loss and rate) also _RATE, _WAN_DELAY_MS, _WAN_LOSS,
                               _WAN_RATE, _SNAPSHOT_COUNT; `bench primary` _SECS, _RATE,
                               _MEMBERS, _CONC, _VERSIONS; both honour _BIN (a prebuilt binary)
  fuzz [--seconds N] [TARGET...]
                               coverage-guided fuzzing with cargo-fuzz (installed if missing,
                               stable Rust, no sanitizer) over scratch copies of fuzz/corpus,
                               N seconds per target (default 60), then cmin; the suite runs
                               the same targets with a deterministic engine
  help                         show this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<u8> {
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return Ok(2);
    };
    match command.as_str() {
        "install-etcd" => {
            no_more_args(command, rest)?;
            let provisioned = etcd::install(&cmd::workspace_root())?;
            for (name, dir) in provisioned.env_vars() {
                println!("export {name}={}", dir.display());
            }
            Ok(0)
        }
        "install-ops-tools" => {
            no_more_args(command, rest)?;
            let tools = opstools::install(&cmd::workspace_root())?;
            for (name, dir) in tools.env_vars() {
                println!("export {name}={}", dir.display());
            }
            Ok(0)
        }
        "test" => {
            let mut soak = false;
            let mut chaos: Option<test::Chaos> = None;
            let mut extra = Vec::new();
            let mut iter = rest.iter();
            let value = |flag: &str, it: &mut std::slice::Iter<'_, String>| {
                it.next()
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("{flag} takes a value"))
            };
            while let Some(arg) = iter.next() {
                match arg.as_str() {
                    "--soak" => soak = true,
                    "--chaos" => {
                        chaos.get_or_insert_with(Default::default);
                    }
                    "--seed" => {
                        chaos.get_or_insert_with(Default::default).seed =
                            Some(value(arg, &mut iter)?)
                    }
                    "--minutes" => {
                        chaos.get_or_insert_with(Default::default).minutes =
                            Some(value(arg, &mut iter)?)
                    }
                    "--replay" => {
                        chaos.get_or_insert_with(Default::default).replay =
                            Some(value(arg, &mut iter)?)
                    }
                    "--versions" => {
                        chaos.get_or_insert_with(Default::default).versions =
                            Some(value(arg, &mut iter)?)
                    }
                    "--" => extra.extend(iter.by_ref().cloned()),
                    _ => extra.push(arg.clone()),
                }
            }
            let ok = test::run(&test::TestArgs { soak, chaos, extra })?;
            Ok(if ok { 0 } else { 1 })
        }
        "demo" => {
            let mut demo = demo::Demo::DEFAULT;
            let (mut keep, mut release) = (false, false);
            for arg in rest {
                match arg.as_str() {
                    "--keep" => keep = true,
                    "--release" => release = true,
                    flag if flag.starts_with('-') => bail!("unknown demo flag `{flag}`\n\n{USAGE}"),
                    name => demo = demo::Demo::parse(name)?,
                }
            }
            demo::run(&demo::DemoArgs {
                demo,
                keep,
                release,
            })?;
            Ok(0)
        }
        "bench" => match rest {
            [name] => bench::run(bench::Bench::parse(name)?),
            _ => bail!(
                "usage: cargo xtask bench NAME (available: {})",
                bench::names()
            ),
        },
        "fuzz" => {
            let mut seconds = 60;
            let mut targets = Vec::new();
            let mut iter = rest.iter();
            while let Some(arg) = iter.next() {
                match arg.as_str() {
                    "--seconds" => {
                        seconds = iter
                            .next()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| anyhow::anyhow!("--seconds takes a number"))?
                    }
                    flag if flag.starts_with('-') => bail!("unknown fuzz flag `{flag}`\n\n{USAGE}"),
                    t => targets.push(t.to_string()),
                }
            }
            Ok(if fuzz::run(&cmd::workspace_root(), seconds, &targets)? {
                0
            } else {
                1
            })
        }
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(0)
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

fn no_more_args(command: &str, rest: &[String]) -> Result<()> {
    if let Some(arg) = rest.first() {
        bail!("`{command}` takes no arguments (got `{arg}`)");
    }
    Ok(())
}
