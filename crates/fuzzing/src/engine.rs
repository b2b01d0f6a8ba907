//! A deterministic mutation fuzzer that runs on stable Rust as an ordinary
//! test: from a seed corpus, each execution applies a few structure-blind
//! mutations (bit flips, interesting integers and protobuf varints, chunk
//! insertion, deletion, duplication, splicing with another input,
//! truncation) and runs the target under `catch_unwind`. The same seed
//! gives the same inputs, so a failure found in CI reproduces exactly.
//!
//! It is not coverage guided (stable Rust has no sanitizer coverage); the
//! cargo-fuzz targets in `fuzz/` run the same bodies with libFuzzer for
//! that. A crash is shrunk and written out to be kept as a regression input.
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// A small, fast, deterministic PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// How long a run is and where it starts.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The PRNG seed (the run is a function of it and the corpus).
    pub seed: u64,
    /// Mutated executions after the corpus itself.
    pub iterations: u64,
    /// Inputs are cut to this length.
    pub max_len: usize,
}

/// What a clean run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Target executions (corpus replays included).
    pub executions: u64,
    /// Inputs in the starting corpus.
    pub corpus: usize,
}

/// A panicking input, shrunk.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The shrunk input.
    pub input: Vec<u8>,
    /// The panic message.
    pub message: String,
    /// The execution that found it (0-based; corpus inputs first).
    pub execution: u64,
}

const INTERESTING_8: [u8; 7] = [0, 1, 0x7f, 0x80, 0xfe, 0xff, 0x10];
const INTERESTING_64: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Applies one random mutation to `data` (`other`: a splice partner).
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8], max_len: usize) {
    let len = data.len();
    match rng.below(11) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.next_u64() as u8;
        }
        2 if len > 0 => {
            let i = rng.below(len);
            data[i] = INTERESTING_8[rng.below(INTERESTING_8.len())];
        }
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, bytes);
        }
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            data.drain(at..at + n);
        }
        5 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            let chunk = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, chunk);
        }
        6 if len >= 8 => {
            let v = INTERESTING_64[rng.below(INTERESTING_64.len())];
            let at = rng.below(len - 7);
            let bytes = if rng.below(2) == 0 {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            let width = [1, 2, 4, 8][rng.below(4)];
            data[at..at + width].copy_from_slice(&bytes[..width]);
        }
        7 if len > 0 => {
            // A protobuf length or tag replaced by an interesting varint.
            let at = rng.below(len);
            let mut v = Vec::new();
            varint(INTERESTING_64[rng.below(INTERESTING_64.len())], &mut v);
            let end = (at + 1 + rng.below(3)).min(len);
            data.splice(at..end, v);
        }
        8 if len > 0 => data.truncate(rng.below(len)),
        9 if !other.is_empty() => {
            let at = rng.below(len + 1);
            let from = rng.below(other.len());
            let n = 1 + rng.below((other.len() - from).min(256));
            data.truncate(at);
            data.extend_from_slice(&other[from..from + n]);
        }
        _ => {
            let i = rng.below(len + 1);
            data.insert(i, INTERESTING_8[rng.below(INTERESTING_8.len())]);
        }
    }
    data.truncate(max_len);
}

/// Runs `target` on `input`; the panic message if it panicked.
pub fn run_one(target: &dyn Fn(&[u8]), input: &[u8]) -> Option<String> {
    catch_unwind(AssertUnwindSafe(|| target(input)))
        .err()
        .map(|p| {
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into())
        })
}

/// Removes chunks of a crashing input while it still crashes.
pub fn shrink(target: &dyn Fn(&[u8]), input: &[u8]) -> Vec<u8> {
    let mut best = input.to_vec();
    let mut chunk = best.len() / 2;
    while chunk > 0 {
        let mut at = 0;
        while at < best.len() {
            let mut candidate = best.clone();
            candidate.drain(at..(at + chunk).min(best.len()));
            if run_one(target, &candidate).is_some() {
                best = candidate;
            } else {
                at += chunk;
            }
        }
        chunk /= 2;
    }
    best
}

/// Replays `corpus`, then runs `cfg.iterations` mutated inputs. The first
/// panic ends the run with the input shrunk.
pub fn fuzz(target: &dyn Fn(&[u8]), corpus: &[Vec<u8>], cfg: Config) -> Result<Report, Crash> {
    let mut rng = Rng::new(cfg.seed);
    let crash = |input: &[u8], message: String, execution: u64| Crash {
        input: shrink(target, input),
        message,
        execution,
    };
    let mut executions = 0u64;
    for input in corpus {
        if let Some(m) = run_one(target, input) {
            return Err(crash(input, m, executions));
        }
        executions += 1;
    }
    let empty = Vec::new();
    for _ in 0..cfg.iterations {
        let base = if corpus.is_empty() {
            &empty
        } else {
            &corpus[rng.below(corpus.len())]
        };
        let other = if corpus.is_empty() {
            &empty
        } else {
            &corpus[rng.below(corpus.len())]
        };
        let mut input = base.clone();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input, other, cfg.max_len);
        }
        if let Some(m) = run_one(target, &input) {
            return Err(crash(&input, m, executions));
        }
        executions += 1;
    }
    Ok(Report {
        executions,
        corpus: corpus.len(),
    })
}

/// Every file of `dir` (sorted by name); nothing when it does not exist.
pub fn load_dir(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    paths.sort();
    paths.iter().map(std::fs::read).collect()
}

/// A stable name for a crashing input (FNV-1a of its bytes).
pub fn crash_name(input: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("crash-{h:016x}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let inputs = |seed| {
            let mut rng = Rng::new(seed);
            (0..200)
                .map(|_| {
                    let mut d = b"hello, raft".to_vec();
                    mutate(&mut rng, &mut d, b"other input", 64);
                    d
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(inputs(7), inputs(7));
        assert_ne!(inputs(7), inputs(8));
    }

    #[test]
    fn mutations_respect_the_length_limit() {
        let mut rng = Rng::new(1);
        let mut d = vec![0u8; 30];
        for _ in 0..10_000 {
            mutate(&mut rng, &mut d, &[9u8; 100], 32);
            assert!(d.len() <= 32);
        }
    }

    #[test]
    fn the_engine_finds_and_shrinks_a_planted_bug() {
        // Panics when byte 3 is 0xff: reachable by one interesting-byte write.
        let target = |d: &[u8]| {
            if d.len() > 3 && d[3] == 0xff {
                panic!("planted bug");
            }
        };
        let cfg = Config {
            seed: 42,
            iterations: 100_000,
            max_len: 64,
        };
        let crash = fuzz(&target, &[b"abcdefgh".to_vec()], cfg).expect_err("the bug is found");
        assert_eq!(crash.message, "planted bug");
        assert_eq!(crash.input.len(), 4, "shrunk to the bytes that matter");
        assert_eq!(crash.input[3], 0xff);
        // A clean target runs every iteration.
        let ok = fuzz(&|_: &[u8]| {}, &[b"x".to_vec()], cfg).unwrap_or_else(|c| panic!("{c:?}"));
        assert_eq!(ok.executions, 100_001);
    }
}
