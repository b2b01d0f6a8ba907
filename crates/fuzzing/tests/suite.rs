//! Every fuzz target, run by the deterministic engine in the test suite:
//! the seed corpus (`fuzz/corpus/<target>`), the kept crashes
//! (`fuzz/regressions/<target>`), then a fixed number of mutated inputs.
//! `ETCD_STANDBY_FUZZ_ITERATIONS` (a multiplier) and
//! `ETCD_STANDBY_FUZZ_SEED` make longer or different runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};

use etcd_standby_fuzzing::engine::{self, Config};
use etcd_standby_fuzzing::targets;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `name`'s corpus, regressions and `iterations` mutations (times the
/// multiplier); on a panic, writes the shrunk input where it can be kept.
fn run(name: &str, target: &dyn Fn(&[u8]), iterations: u64, max_len: usize) {
    let mut corpus = engine::load_dir(&fuzz_dir().join("corpus").join(name)).unwrap();
    assert!(!corpus.is_empty(), "no seed corpus for {name}");
    corpus.extend(engine::load_dir(&fuzz_dir().join("regressions").join(name)).unwrap());
    let cfg = Config {
        seed: env_u64("ETCD_STANDBY_FUZZ_SEED", 0x5eed_0000) ^ name.len() as u64,
        iterations: iterations * env_u64("ETCD_STANDBY_FUZZ_ITERATIONS", 1),
        max_len,
    };
    match engine::fuzz(target, &corpus, cfg) {
        Ok(report) => {
            eprintln!(
                "fuzz {name}: {} executions from {} inputs (seed {:#x}), no failure",
                report.executions, report.corpus, cfg.seed
            );
        }
        Err(crash) => {
            let dir = std::env::temp_dir()
                .join("etcd-standby-fuzz-crashes")
                .join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(engine::crash_name(&crash.input));
            std::fs::write(&file, &crash.input).unwrap();
            panic!(
                "fuzz {name}: execution {} panicked: {}\n  input ({} bytes, shrunk) in {}\n  \
                 fix the bug, then keep the input as fuzz/regressions/{name}/{}",
                crash.execution,
                crash.message,
                crash.input.len(),
                file.display(),
                engine::crash_name(&crash.input)
            );
        }
    }
}

#[test]
fn fuzz_wal_reader_never_panics() {
    run("wal_reader", &targets::wal_reader, 30_000, 16 << 10);
}

#[test]
fn fuzz_entry_decode_never_panics() {
    run("entry_decode", &targets::entry_decode, 200_000, 4 << 10);
}

#[test]
fn fuzz_bolt_walker_never_panics() {
    run("bolt_walker", &targets::bolt_walker, 5_000, 64 << 10);
}

#[test]
fn fuzz_peer_message_stream_decodes_the_same_at_once_and_bytewise() {
    run(
        "peer_message_stream",
        &targets::peer_message_stream,
        50_000,
        4 << 10,
    );
}

#[test]
fn fuzz_peer_msgappv2_stream_decodes_the_same_at_once_and_bytewise() {
    run(
        "peer_msgappv2_stream",
        &targets::peer_msgappv2_stream,
        50_000,
        4 << 10,
    );
}

#[test]
fn fuzz_saved_model_reader_never_panics_and_round_trips() {
    run("saved_model", &targets::saved_model, 200_000, 4 << 10);
}

#[test]
fn fuzz_peer_http_requests_never_panic_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = targets::PeerHttp::start(dir.path()).unwrap();
    // The harness reaches the real server: it answers the seeds as etcd would.
    let seed = |f: &str| std::fs::read(fuzz_dir().join("corpus/peer_http").join(f)).unwrap();
    let answer = |f: &str| String::from_utf8_lossy(&server.run(&seed(f))).into_owned();
    let version = answer("seed-version");
    assert!(version.starts_with("HTTP/1.1 200"), "/version: {version:?}");
    let pipeline = answer("seed-pipeline");
    assert!(
        pipeline.starts_with("HTTP/1.1 204"),
        "pipeline: {pipeline:?}"
    );
    let wrong = answer("seed-wrong-cluster");
    assert!(
        wrong.starts_with("HTTP/1.1 412") && wrong.contains("cluster ID mismatch"),
        "{wrong:?}"
    );
    run(
        "peer_http",
        &|d: &[u8]| {
            server.run(d);
        },
        15_000,
        8 << 10,
    );
}
