//! Shared test helpers: fixture paths, a parser for `etcdfmt.py` output, and a function that
//! exercises every public read path of the crate on an image.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use etcd_standby_bolt::{BoltError, BoltFile, etcd};

/// `shared/fixtures/<rel>` (the shared tree sits beside the workspace).
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures")
        .join(rel)
}

pub fn read_fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("{}: {e}", fixture(rel).display()))
}

/// One `bucket '…' root=… seq=…` section of an `etcdfmt.py db` dump.
#[derive(Debug)]
pub struct ExpectedBucket {
    pub name: String,
    pub root: u64,
    pub inline: bool,
    pub seq: u64,
    /// Element lines with the three-space indent removed.
    pub lines: Vec<String>,
}

/// Parsed `etcdfmt.py db` output.
#[derive(Debug)]
pub struct ExpectedDb {
    /// (hex, ok) from `sha256 trailer <hex> (OK|MISMATCH)`.
    pub trailer: Option<(String, bool)>,
    pub metas: Vec<serde_json::Value>,
    pub txid: u64,
    pub root: u64,
    pub pgid: u64,
    pub logical_size: u64,
    pub file_size: u64,
    pub buckets: Vec<ExpectedBucket>,
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(name)
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + name.len();
    let rest = &line[start..];
    rest.split([' ', ';']).next().unwrap()
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("number: {s:?}"))
}

pub fn parse_expected_db(text: &str) -> ExpectedDb {
    let mut db = ExpectedDb {
        trailer: None,
        metas: Vec::new(),
        txid: 0,
        root: 0,
        pgid: 0,
        logical_size: 0,
        file_size: 0,
        buckets: Vec::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("sha256 trailer ") {
            let (hex, status) = rest.split_once(' ').unwrap();
            db.trailer = Some((hex.to_owned(), status == "(OK)"));
        } else if let Some(rest) = line.strip_prefix("meta page ") {
            let (_, json) = rest.split_once(": ").unwrap();
            db.metas.push(serde_json::from_str(json).unwrap());
        } else if line.starts_with("using meta ") {
            db.txid = num(field(line, "txid="));
            db.root = num(field(line, "root="));
            db.pgid = num(field(line, "pgid(high water)="));
            db.logical_size = num(field(line, "logical size "));
            db.file_size = num(field(line, "file size "));
        } else if let Some(rest) = line.strip_prefix("bucket '") {
            let (name, rest) = rest.split_once("' ").unwrap();
            db.buckets.push(ExpectedBucket {
                name: name.to_owned(),
                root: num(field(rest, "root=")),
                inline: rest.contains("(inline)"),
                seq: num(field(rest, "seq=")),
                lines: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("   ") {
            db.buckets.last_mut().unwrap().lines.push(rest.to_owned());
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    db
}

/// Parsed `etcdfmt.py pages` output: (id, kind, count, overflow, bucket) and unreachable ids.
#[derive(Debug)]
pub struct ExpectedPages {
    pub pages: Vec<(u64, String, u64, u64, String)>,
    pub pgid: u64,
    pub unreachable: Vec<u64>,
}

pub fn parse_expected_pages(text: &str) -> ExpectedPages {
    let mut out = ExpectedPages {
        pages: Vec::new(),
        pgid: 0,
        unreachable: Vec::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("page ") {
            let mut words = rest.split_whitespace();
            let id = num(words.next().unwrap());
            let kind = words.next().unwrap().to_owned();
            let count = num(field(line, "count="));
            let overflow = num(field(line, "overflow="));
            let bucket = line.split_once("bucket=").unwrap().1.to_owned();
            out.pages.push((id, kind, count, overflow, bucket));
        } else if let Some(rest) = line.strip_prefix("meta.pgid=") {
            out.pgid = num(rest.split(';').next().unwrap());
            let list = rest.rsplit_once('[').unwrap().1.trim_end_matches(']');
            out.unreachable = list
                .split(", ")
                .filter(|s| !s.is_empty())
                .map(num)
                .collect();
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    out
}

/// Runs every read path on `data`; returns the first error. Must never panic or hang.
pub fn exercise(data: Vec<u8>) -> Result<(), BoltError> {
    let db = BoltFile::from_bytes(data)?;
    let _ = db.verify_trailer();
    let map = db.page_map();
    for bucket in db.buckets()? {
        for (i, entry) in db.iter(&bucket).enumerate() {
            let entry = entry?;
            // point lookups must work for what iteration finds (sampled: they are slow)
            if i % 50 == 0 {
                db.get(&bucket, &entry.key)?;
            }
        }
    }
    map?;
    for record in etcd::key_history(&db)? {
        record?;
    }
    for live in etcd::live_keys(&db)? {
        live?;
    }
    etcd::read_meta(&db)?;
    etcd::read_auth(&db)?;
    etcd::read_users(&db)?;
    etcd::read_roles(&db)?;
    etcd::read_leases(&db)?;
    etcd::read_members(&db)?;
    etcd::read_removed_members(&db)?;
    etcd::read_cluster(&db)?;
    etcd::read_alarms(&db)?;
    etcd::summarize(&db)?;
    Ok(())
}
