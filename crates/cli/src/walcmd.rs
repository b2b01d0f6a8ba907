//! `etcd-standby wal dump | verify | stats`.
use crate::output::{Out, Verdict, WriteOut, bordered_table, table};
use crate::progress::{self, Progress};
use anyhow::{Context, Result};
use bytes::Bytes;
use etcd_standby_daemon::times::{self, ReceiveTimes};
use etcd_standby_decode::raw_json::{RawRequest, parse_entry};
use etcd_standby_decode::render::{
    Node, RenderOptions, render_entry, write_entry_json, write_json_str, write_uint,
};
use etcd_standby_decode::{Decoded, RequestKind, decode_entry, keys};
use etcd_standby_proto::raftpb;
use etcd_standby_wal::names::parse_segment_name;
use etcd_standby_wal::{RecordRef, Segment, WalError, WalReader, WalRecord};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Longest string/bytes value shown on a terminal line.
const TEXT_VALUE_LIMIT: usize = 96;

/// Finds the segments for a data dir, member dir, wal dir or single `.wal` file.
pub fn resolve_segments(path: &Path) -> Result<(PathBuf, Vec<Segment>)> {
    if path.is_file() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let (seq, index) = parse_segment_name(name).unwrap_or((0, 0));
        return Ok((
            path.to_path_buf(),
            vec![Segment {
                path: path.to_path_buf(),
                seq,
                index,
            }],
        ));
    }
    if !path.exists() {
        anyhow::bail!("{}: no such file or directory", path.display());
    }
    let dir = etcd_standby_wal::resolve_wal_dir(path).with_context(|| {
        format!(
            "{}: no WAL found (looked in member/wal, wal and the directory itself)",
            path.display()
        )
    })?;
    let segs = etcd_standby_wal::list_segments(&dir)?;
    Ok((dir, segs))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A record-level problem as JSON.
fn problem_json(e: &WalError) -> Value {
    match e.location() {
        Some(loc) => json!({
            "record": "problem",
            "problem": if e.is_torn_tail() { "torn_tail" } else { "corruption" },
            "file": loc.file.display().to_string(),
            "offset": loc.offset,
            "record_index": loc.record_index,
            "detail": e.to_string(),
        }),
        None => json!({"record": "problem", "problem": "error", "detail": e.to_string()}),
    }
}

/// Explains what etcd would do about a problem.
fn consequence(e: &WalError) -> &'static str {
    if e.is_torn_tail() {
        "a torn write in the last segment: etcd would repair it by truncating the file here (copying the original to .broken); records after this point are lost on this member"
    } else {
        "corruption before the end of the log: etcd refuses to start on this WAL; restore the member from a snapshot or re-add it"
    }
}

/// Tells the operator about the problem that ended a walk (stderr) and maps
/// it to the command's verdict.
fn report(problem: Option<WalError>) -> Verdict {
    match problem {
        Some(p) => {
            eprintln!("etcd-standby: {p}\n  {}", consequence(&p));
            Verdict::Problem
        }
        None => Verdict::Clean,
    }
}

/// The receive times of the data dir `path` is in, when it is one of ours
/// (it has a `received-times.log`): `path` is the data dir, its `member/`
/// or `member/wal` dir, or a segment in it. `None` for etcd's own data dirs.
/// Opened read-only: inspecting never repairs (truncates) the file.
fn receive_times_for(path: &Path) -> Option<ReceiveTimes> {
    let dir = if path.is_file() { path.parent()? } else { path };
    let named = |p: &Path, n: &str| p.file_name().is_some_and(|f| f == n);
    let mut candidates = vec![dir.to_path_buf()];
    if named(dir, "member") {
        candidates.extend(dir.parent().map(Path::to_path_buf));
    }
    if named(dir, "wal")
        && let Some(member) = dir.parent().filter(|m| named(m, "member"))
    {
        candidates.extend(member.parent().map(Path::to_path_buf));
    }
    let file = candidates
        .into_iter()
        .map(|d| d.join(times::FILE_NAME))
        .find(|f| f.is_file())?;
    match ReceiveTimes::read_only(&file) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("etcd-standby: receive times not shown: {e}");
            None
        }
    }
}

/// `received_at` of an entry: RFC 3339 UTC, or `None` when no record covers it.
fn received_text(t: &ReceiveTimes, index: u64) -> Option<String> {
    t.received_at(index)
        .map(etcd_standby_daemon::clock::rfc3339)
}

/// Options of `wal dump`.
pub struct DumpOptions {
    /// One JSON object per line.
    pub json: bool,
    /// First entry index shown.
    pub start_index: Option<u64>,
    /// Last entry index shown.
    pub end_index: Option<u64>,
    /// Kinds shown (`None`: all).
    pub kinds: Option<Vec<RequestKind>>,
    /// Only entries touching keys with this prefix.
    pub key_prefix: Option<Vec<u8>>,
    /// Print secrets.
    pub show_secrets: bool,
    /// Explain each entry's outcome with the shadow model (etcd's apply rules).
    pub outcome: Option<etcd_standby_model::ModelConfig>,
}

fn entry_type_short(t: i32) -> &'static str {
    match t {
        0 => "norm",
        1 => "conf",
        2 => "conf2",
        _ => "?",
    }
}

/// The names of etcd's entry types, without allocating (the dump hot path).
fn entry_type_str(t: i32) -> Option<&'static str> {
    raftpb::EntryType::try_from(t).ok().map(|e| e.as_str_name())
}

fn entry_type_name(t: i32) -> String {
    raftpb::EntryType::try_from(t)
        .map(|e| e.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("EntryType({t})"))
}

fn is_default(n: &Node) -> bool {
    match n {
        Node::Bool(b) => !b,
        Node::Int(i) => *i == 0,
        Node::UInt(u) => *u == 0,
        Node::Str(s) => s.is_empty(),
        _ => false,
    }
}

/// Terminal text of a request: the header's user/auth revision as a prefix,
/// its request ID dropped (noise on a terminal; JSON keeps it).
fn request_text(node: &Node, drop_defaults: bool) -> String {
    let Node::Msg(fields) = node else {
        return node.to_text_limited(TEXT_VALUE_LIMIT);
    };
    let mut prefix = String::new();
    let mut rest = Vec::new();
    for (k, v) in fields {
        if k == "header" {
            if let Some(Node::Str(u)) = v.get("username") {
                prefix.push_str(&format!("user={u:?} "));
            }
            if let Some(Node::UInt(r)) = v.get("auth_revision") {
                prefix.push_str(&format!("auth_rev={r} "));
            }
        } else if k == "NodeID_hex" {
            // NodeID is already printed in hex on terminals.
        } else if !is_default(v) || !drop_defaults {
            rest.push((k.clone(), v.clone()));
        }
    }
    // A single request field: show its contents directly.
    let body = match rest.as_slice() {
        [(_, inner @ Node::Msg(_))] => inner.to_text_limited(TEXT_VALUE_LIMIT),
        _ => Node::Msg(rest).to_text_limited(TEXT_VALUE_LIMIT),
    };
    format!("{prefix}{body}")
}

fn entry_selected(e: &raftpb::Entry, decoded: &Decoded, opts: &DumpOptions) -> bool {
    if opts.start_index.is_some_and(|s| e.index < s) || opts.end_index.is_some_and(|x| e.index > x)
    {
        return false;
    }
    if let Some(kinds) = &opts.kinds
        && !kinds.contains(&RequestKind::of(decoded))
    {
        return false;
    }
    if let Some(p) = &opts.key_prefix
        && !keys(decoded).iter().any(|k| k.overlaps_prefix(p))
    {
        return false;
    }
    true
}

/// Reads every record, handing each to `f`; returns the problem that ended
/// reading early, if any (IO errors are returned as errors). `f` returns a
/// data problem it found in the record, if any, which also ends the walk.
/// Total size of the segment files (the progress bar's length).
fn segments_bytes(segments: &[Segment]) -> u64 {
    segments
        .iter()
        .filter_map(|s| std::fs::metadata(&s.path).ok())
        .map(|m| m.len())
        .sum()
}

/// Reads every record of `segments` in order, calling `f` until it reports a
/// problem; a progress bar (`msg`, over the files' bytes) follows along on a
/// terminal.
fn walk_raw(
    segments: Vec<Segment>,
    (msg, stdout): (&'static str, progress::Stdout),
    mut f: impl FnMut(&RecordRef<'_>) -> Result<Option<WalError>>,
) -> Result<(WalReader, Option<WalError>)> {
    /// The bar is moved once per this many bytes, off the per-record path.
    const STEP: u64 = 1 << 20;
    let bar = Progress::bytes(msg, segments_bytes(&segments), stdout);
    let (mut done, mut shown) = (0u64, 0u64);
    let mut reader = WalReader::from_segments(segments);
    let problem = loop {
        let rec = match reader.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => break None,
            Err(e @ (WalError::TornTail { .. } | WalError::Corrupt { .. })) => break Some(e),
            Err(e) => return Err(e.into()),
        };
        done += rec.frame_size();
        if shown == 0 || done - shown >= STEP {
            bar.set(done);
            shown = done;
        }
        if let Some(p) = f(&rec)? {
            break Some(p);
        }
    };
    bar.finish();
    Ok((reader, problem))
}

/// [`walk_raw`] with every record decoded.
fn walk(
    segments: Vec<Segment>,
    bar: (&'static str, progress::Stdout),
    mut f: impl FnMut(&RecordRef<'_>, WalRecord) -> Result<()>,
) -> Result<(WalReader, Option<WalError>)> {
    walk_raw(segments, bar, |rec| match rec.decode() {
        Ok(d) => f(rec, d).map(|()| None),
        Err(e) => Ok(Some(e)),
    })
}

/// Pending JSON lines are written out once they reach this many bytes.
const LINES_FLUSH: usize = 1 << 20;

/// Writes the collected lines (each ending in '\n') and empties the buffer.
fn flush_lines(out: &mut Out, lines: &mut Vec<u8>) -> Result<()> {
    if let Some((b'\n', body)) = lines.split_last() {
        out.raw_line(body)?;
    }
    lines.clear();
    Ok(())
}

/// What a JSON entry line says besides the request.
struct EntryLine<'a> {
    term: u64,
    index: u64,
    entry_type: i32,
    kind: RequestKind,
    /// The model's outcome and number of effects (`--outcome`).
    outcome: Option<(&'a str, usize)>,
    /// `None`: not our data dir; `Some(None)`: no receive time known.
    received: Option<Option<&'a str>>,
    /// The segment's file name as a JSON string.
    file_json: &'a [u8],
    offset: u64,
}

/// Appends a name of a fixed set (entry types, request kinds: letters,
/// digits, `_`, `(`, `)`) as a JSON string: nothing in them needs escaping
/// (see the test `static_names_need_no_escaping`).
fn write_name(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
}

/// Appends an entry's JSON line (with its '\n') to `out`; `request` writes
/// the request's JSON. No `write!`: the formatting machinery showed up in
/// profiles of large dumps.
fn write_entry_line(out: &mut Vec<u8>, l: EntryLine<'_>, request: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"{\"record\":\"entry\",\"term\":");
    write_uint(out, l.term);
    out.extend_from_slice(b",\"index\":");
    write_uint(out, l.index);
    out.extend_from_slice(b",\"type\":");
    match entry_type_str(l.entry_type) {
        Some(t) => write_name(out, t),
        None => write_json_str(out, &entry_type_name(l.entry_type)),
    }
    out.extend_from_slice(b",\"kind\":");
    write_name(out, l.kind.name());
    out.extend_from_slice(b",\"request\":");
    request(out);
    if let Some((o, n)) = l.outcome {
        out.extend_from_slice(b",\"outcome\":");
        write_json_str(out, o);
        out.extend_from_slice(b",\"effects\":");
        write_uint(out, n as u64);
    }
    match l.received {
        Some(Some(at)) => {
            out.extend_from_slice(b",\"received_at\":");
            write_json_str(out, at);
        }
        Some(None) => out.extend_from_slice(b",\"received_at\":null"),
        None => {}
    }
    out.extend_from_slice(b",\"file\":");
    out.extend_from_slice(l.file_json);
    out.extend_from_slice(b",\"offset\":");
    write_uint(out, l.offset);
    out.extend_from_slice(b"}\n");
}

/// `wal dump`.
pub fn dump(path: &Path, opts: &DumpOptions) -> Result<Verdict> {
    let (dir, segments) = resolve_segments(path)?;
    let receive_times = receive_times_for(path);
    let mut out = Out::new();
    let total_bytes = segments_bytes(&segments);
    if !opts.json {
        out.line(&format!(
            "WAL       {} ({} segment(s), {} bytes)",
            dir.display(),
            segments.len(),
            total_bytes
        ))?;
    }
    let ropts = RenderOptions {
        show_secrets: opts.show_secrets,
    };
    let mut metadata_shown = false;
    let mut header_shown = false;
    // JSON lines collect here and go out a megabyte at a time (each line
    // ends in '\n'); anything written to `out` directly flushes them first.
    let mut lines: Vec<u8> = Vec::with_capacity(LINES_FLUSH + (64 << 10));
    let mut last_state: Option<raftpb::HardState> = None;
    let (mut shown, mut read) = (0u64, 0u64);
    let (mut first, mut last) = (None::<u64>, None::<u64>);
    let mut model = opts
        .outcome
        .clone()
        .map(etcd_standby_model::Model::with_config);
    // (segment, file name, file name as a JSON string)
    let mut file_of: Option<(usize, String, Vec<u8>)> = None;
    // The fast path (payload bytes straight to JSON) serves JSON dumps of
    // puts and delete-ranges when no filter needs the decoded request and
    // the model is off.
    let fast = opts.json && model.is_none() && opts.key_prefix.is_none();
    let (_reader, problem) =
        walk_raw(segments, ("dumping WAL", progress::Stdout::Stream), |rec| {
            // The file name is built once per segment, not once per record.
            if file_of
                .as_ref()
                .is_none_or(|(seg, _, _)| *seg != rec.segment)
            {
                let name = file_name(rec.location().file.as_path());
                let mut json = Vec::new();
                write_json_str(&mut json, &name);
                file_of = Some((rec.segment, name, json));
            }
            let (file, file_json) = file_of
                .as_ref()
                .map(|(_, f, j)| (f.as_str(), j.as_slice()))
                .unwrap_or_default();
            if fast
                && rec.rtype == etcd_standby_wal::RecordType::Entry
                && let Some(e) = parse_entry(rec.raw.data.unwrap_or_default())
                && e.entry_type == etcd_standby_decode::ENTRY_NORMAL
                && let Some(req) = e.data.and_then(RawRequest::parse)
            {
                read += 1;
                let kind = req.kind();
                if opts.start_index.is_some_and(|s| e.index < s)
                    || opts.end_index.is_some_and(|x| e.index > x)
                    || opts.kinds.as_ref().is_some_and(|k| !k.contains(&kind))
                {
                    return Ok(None);
                }
                shown += 1;
                first.get_or_insert(e.index);
                last = Some(e.index);
                let received = receive_times.as_ref().map(|t| received_text(t, e.index));
                write_entry_line(
                    &mut lines,
                    EntryLine {
                        term: e.term,
                        index: e.index,
                        entry_type: e.entry_type,
                        kind,
                        outcome: None,
                        received: received.as_ref().map(Option::as_deref),
                        file_json,
                        offset: rec.offset,
                    },
                    |out| req.write_json(out),
                );
                if lines.len() >= LINES_FLUSH {
                    flush_lines(&mut out, &mut lines)?;
                }
                return Ok(None);
            }
            let r = match rec.decode() {
                Ok(r) => r,
                Err(e) => return Ok(Some(e)),
            };
            match r {
                WalRecord::Metadata(m) if !metadata_shown => {
                    metadata_shown = true;
                    if opts.json {
                        flush_lines(&mut out, &mut lines)?;
                        out.json(&json!({
                            "record": "metadata",
                            "node_id": format!("{:016x}", m.node_id),
                            "cluster_id": format!("{:016x}", m.cluster_id),
                            "file": file, "offset": rec.offset,
                        }))?;
                    } else {
                        out.line(&format!(
                            "member    {:016x}   cluster {:016x}",
                            m.node_id, m.cluster_id
                        ))?;
                    }
                }
                WalRecord::Metadata(_) | WalRecord::Crc(_) => {}
                WalRecord::Snapshot(s) => {
                    if opts.json {
                        let cs = s.conf_state.as_ref().map(|c| {
                            json!({"voters": c.voters, "learners": c.learners,
                               "voters_outgoing": c.voters_outgoing,
                               "learners_next": c.learners_next, "auto_leave": c.auto_leave})
                        });
                        flush_lines(&mut out, &mut lines)?;
                        out.json(
                            &json!({"record": "snapshot", "index": s.index, "term": s.term,
                                     "conf_state": cs, "file": file, "offset": rec.offset}),
                        )?;
                    } else {
                        let cs = s
                            .conf_state
                            .as_ref()
                            .map(|c| {
                                let ids = |v: &[u64]| {
                                    v.iter()
                                        .map(|x| format!("{x:x}"))
                                        .collect::<Vec<_>>()
                                        .join(",")
                                };
                                format!(
                                    " voters=[{}] learners=[{}]",
                                    ids(&c.voters),
                                    ids(&c.learners)
                                )
                            })
                            .unwrap_or_default();
                        out.line(&format!(
                            "snapshot  index={} term={}{cs}   ({file} @{})",
                            s.index, s.term, rec.offset
                        ))?;
                    }
                }
                WalRecord::State(hs) => last_state = Some(hs),
                WalRecord::Entry(e) => {
                    read += 1;
                    let decoded = decode_entry(&e);
                    // The model sees every entry (state matters), shown or not.
                    let outcome = model.as_mut().map(|m| {
                        if e.index <= m.applied_index() {
                            // A rewritten (uncommitted, then replaced) entry.
                            ("rewritten-after-apply".to_owned(), 0)
                        } else {
                            let a = m.apply(e.index, e.term, &decoded);
                            (a.outcome.to_string(), a.effects.len())
                        }
                    });
                    if !entry_selected(&e, &decoded, opts) {
                        return Ok(None);
                    }
                    shown += 1;
                    first.get_or_insert(e.index);
                    last = Some(e.index);
                    let kind = RequestKind::of(&decoded);
                    let data = e.data.as_deref().unwrap_or_default();
                    // Only our data dirs have times (`None`: etcd's own).
                    let received = receive_times.as_ref().map(|t| received_text(t, e.index));
                    if opts.json {
                        write_entry_line(
                            &mut lines,
                            EntryLine {
                                term: e.term,
                                index: e.index,
                                entry_type: e.r#type,
                                kind,
                                outcome: outcome.as_ref().map(|(o, n)| (o.as_str(), *n)),
                                received: received.as_ref().map(Option::as_deref),
                                file_json,
                                offset: rec.offset,
                            },
                            // Typed writer for the hot kinds, reflection for the rest.
                            |out| write_entry_json(e.r#type, data, &decoded, ropts, out),
                        );
                        if lines.len() >= LINES_FLUSH {
                            flush_lines(&mut out, &mut lines)?;
                        }
                    } else {
                        if !header_shown {
                            header_shown = true;
                            out.line(&format!(
                                "{:>6} {:>10}  {:<5} {:<27} REQUEST",
                                "TERM", "INDEX", "TYPE", "KIND"
                            ))?;
                        }
                        let node = render_entry(e.r#type, data, &decoded, ropts);
                        let received_col = received
                            .as_ref()
                            .map(|r| format!("received={} ", r.as_deref().unwrap_or("?")))
                            .unwrap_or_default();
                        let outcome_col = outcome
                            .as_ref()
                            .map(|(o, n)| format!("[{o}, {n} effect(s)] "))
                            .unwrap_or_default();
                        out.line(&format!(
                            "{:>6} {:>10}  {:<5} {:<27} {received_col}{outcome_col}{}",
                            e.term,
                            e.index,
                            entry_type_short(e.r#type),
                            kind.name(),
                            request_text(&node, matches!(kind.group(), "cluster"))
                        ))?;
                    }
                }
            }
            Ok(None)
        })?;
    flush_lines(&mut out, &mut lines)?;
    if opts.json {
        if let Some(hs) = last_state {
            out.json(&json!({"record": "hardstate", "term": hs.term, "vote": format!("{:016x}", hs.vote), "commit": hs.commit}))?;
        }
        if let Some(p) = &problem {
            out.json(&problem_json(p))?;
        }
    } else {
        if let Some(hs) = last_state {
            out.line(&format!(
                "hardstate term={} vote={:016x} commit={}",
                hs.term, hs.vote, hs.commit
            ))?;
        }
        let range = match (first, last) {
            (Some(a), Some(b)) => format!(", index {a}..{b}"),
            _ => String::new(),
        };
        out.line(&format!("entries   {shown} shown of {read} read{range}"))?;
    }
    out.flush()?;
    Ok(report(problem))
}

/// `wal verify`.
pub fn verify(path: &Path, json_out: bool) -> Result<Verdict> {
    let (dir, segments) = resolve_segments(path)?;
    let nseg = segments.len();
    let bar = ResettableBar(Progress::bytes(
        "verifying WAL",
        segments_bytes(&segments),
        progress::Stdout::Summary,
    ));
    // Segments are checked on as many threads as there are cores (joined
    // at the boundaries; a damaged WAL is read again in one pass).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = etcd_standby_wal::summarize(segments, threads, &bar)?;
    bar.0.finish();
    let etcd_standby_wal::WalSummary {
        records,
        bytes,
        entries,
        first_index: first,
        last_index: last,
        rewrites,
        state,
        snapshots,
        ends,
        problem,
        ..
    } = summary;
    let problem = problem.map(|p| p.to_error());
    if json_out {
        let mut out = Out::new();
        let mut v = json!({
            "wal_dir": dir.display().to_string(), "segments": nseg, "records": records,
            "bytes": bytes, "entries": entries, "first_index": first, "last_index": first.map(|_| last),
            "rewritten_entries": rewrites,
            "hardstate": state.map(|h| json!({"term": h.term, "vote": format!("{:016x}", h.vote), "commit": h.commit})),
            "snapshots": snapshots.iter().map(|(i, t)| json!({"index": i, "term": t})).collect::<Vec<_>>(),
            "ok": problem.is_none(),
        });
        if let Some(p) = &problem {
            v["problem"] = problem_json(p);
            v["consequence"] = json!(consequence(p));
        }
        out.json(&v)?;
        out.flush()?;
    } else {
        let mut out = Out::new();
        let range = first
            .map(|f| format!("{f}..{last}"))
            .unwrap_or("none".into());
        let mut rows = vec![
            vec!["wal dir".into(), dir.display().to_string()],
            vec!["segments".into(), format!("{nseg}")],
            vec!["records".into(), format!("{records} ({bytes} bytes)")],
            vec![
                "entries".into(),
                format!("{entries}, index {range}, {rewrites} rewritten by later records"),
            ],
        ];
        if let Some(h) = state {
            rows.push(vec![
                "hardstate".into(),
                format!("term={} vote={:016x} commit={}", h.term, h.vote, h.commit),
            ]);
            if first.is_some() && h.commit > last {
                rows.push(vec![
                    "note".into(),
                    format!("commit {} is beyond the last entry {last}", h.commit),
                ]);
            }
        }
        let snaps: Vec<String> = snapshots.iter().map(|(i, t)| format!("{i}@{t}")).collect();
        rows.push(vec!["snapshots".into(), snaps.join(" ")]);
        for e in ends {
            let tail = e.file_size - e.end_offset;
            rows.push(vec![
                "segment".into(),
                format!(
                    "{}: records end at {} of {} bytes{}",
                    file_name(&e.path),
                    e.end_offset,
                    e.file_size,
                    if tail > 0 {
                        format!(" ({tail} bytes zero tail)")
                    } else {
                        String::new()
                    }
                ),
            ]);
        }
        for l in table(&rows) {
            out.line(&l)?;
        }
        match &problem {
            None => out.line("result    OK: framing and CRC chain verified")?,
            Some(p) => {
                let loc = p.location();
                let kind = if p.is_torn_tail() {
                    "TORN TAIL"
                } else {
                    "CORRUPTION"
                };
                match loc {
                    Some(l) => out.line(&format!(
                        "result    {kind} in {} at byte offset {} (record #{})",
                        file_name(&l.file),
                        l.offset,
                        l.record_index
                    ))?,
                    None => out.line(&format!("result    {kind}"))?,
                }
                out.line(&format!("detail    {p}"))?;
                out.line(&format!("meaning   {}", consequence(p)))?;
            }
        }
        out.flush()?;
    }
    Ok(if problem.is_some() {
        Verdict::Problem
    } else {
        Verdict::Clean
    })
}

/// A progress bar that [`etcd_standby_wal::summarize`] moves from its
/// reading threads and sets back when it reads the WAL again.
struct ResettableBar(Progress);

impl etcd_standby_wal::ReadProgress for ResettableBar {
    fn read(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn restart(&self) {
        self.0.set(0);
    }
}

/// The "busiest prefix" bucket of a key: the first `depth` path components
/// of `/`-separated keys, or the first 8 bytes of other keys.
fn key_bucket(key: &[u8], depth: usize) -> Bytes {
    let mut slashes = 0;
    let skip_leading = usize::from(key.first() == Some(&b'/'));
    for (i, &b) in key.iter().enumerate().skip(skip_leading) {
        if b == b'/' {
            slashes += 1;
            if slashes == depth {
                return Bytes::copy_from_slice(&key[..=i]);
            }
        }
    }
    if slashes > 0 || skip_leading == 1 {
        Bytes::copy_from_slice(key)
    } else {
        Bytes::copy_from_slice(&key[..key.len().min(8)])
    }
}

/// Bound on distinct prefixes tracked, so stats memory stays flat.
const MAX_PREFIXES: usize = 100_000;

/// `wal stats`.
pub fn stats(path: &Path, w: WriteOut, depth: usize, top: usize) -> Result<Verdict> {
    let (dir, segments) = resolve_segments(path)?;
    let nseg = segments.len();
    let mut by_kind: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut prefixes: HashMap<Bytes, (u64, u64)> = HashMap::new();
    let mut other_prefix = (0u64, 0u64);
    let (mut first, mut last) = (None::<u64>, None::<u64>);
    let (mut term_min, mut term_max) = (u64::MAX, 0u64);
    let (mut records, mut bytes, mut data_bytes) = (0u64, 0u64, 0u64);
    let mut leases = (0u64, 0u64, 0u64);
    let mut auth_changes = 0u64;
    let mut conf_changes = Vec::new();
    let (_reader, problem) = walk(
        segments,
        ("reading WAL", progress::Stdout::Summary),
        |rec, r| {
            records += 1;
            bytes += rec.frame_size();
            let WalRecord::Entry(e) = r else {
                return Ok(());
            };
            first.get_or_insert(e.index);
            last = Some(e.index);
            term_min = term_min.min(e.term);
            term_max = term_max.max(e.term);
            let len = e.data.as_ref().map_or(0, |d| d.len() as u64);
            data_bytes += len;
            *by_type.entry(entry_type_name(e.r#type)).or_default() += 1;
            let decoded = decode_entry(&e);
            let kind = RequestKind::of(&decoded);
            let slot = by_kind.entry(kind.name()).or_default();
            slot.0 += 1;
            slot.1 += len;
            match kind {
                RequestKind::LeaseGrant => leases.0 += 1,
                RequestKind::LeaseRevoke => leases.1 += 1,
                RequestKind::LeaseCheckpoint => leases.2 += 1,
                k if k.group() == "auth"
                    && !matches!(
                        k,
                        RequestKind::Authenticate
                            | RequestKind::AuthStatus
                            | RequestKind::AuthUserGet
                            | RequestKind::AuthUserList
                            | RequestKind::AuthRoleGet
                            | RequestKind::AuthRoleList
                    ) =>
                {
                    auth_changes += 1
                }
                k if k.is_conf_change() => {
                    if let Decoded::ConfChange(cc) = &decoded {
                        conf_changes.push(format!(
                            "{} {}:{:x}",
                            e.index,
                            kind.name(),
                            cc.change.node_id
                        ));
                    }
                }
                _ => {}
            }
            if matches!(kind.group(), "kv") {
                for k in keys(&decoded) {
                    let b = key_bucket(&k.key, depth);
                    if let Some(slot) = prefixes.get_mut(&b) {
                        slot.0 += 1;
                        slot.1 += len;
                    } else if prefixes.len() < MAX_PREFIXES {
                        prefixes.insert(b, (1, len));
                    } else {
                        other_prefix.0 += 1;
                        other_prefix.1 += len;
                    }
                }
            }
            Ok(())
        },
    )?;
    let mut busiest: Vec<(Bytes, (u64, u64))> = prefixes.into_iter().collect();
    busiest.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    busiest.truncate(top);
    let mut out = Out::new();
    if w == WriteOut::Json {
        let v = json!({
            "wal_dir": dir.display().to_string(), "segments": nseg, "records": records, "bytes": bytes,
            "entry_data_bytes": data_bytes,
            "first_index": first, "last_index": last,
            "first_term": first.map(|_| term_min), "last_term": first.map(|_| term_max),
            "entries_by_type": by_type,
            "entries_by_kind": by_kind.iter().map(|(k, (n, b))| (k.to_string(), json!({"count": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
            "busiest_prefixes": busiest.iter().map(|(p, (n, b))| json!({"prefix": etcd_standby_decode::render::bytes_json(p), "requests": n, "bytes": b})).collect::<Vec<_>>(),
            "leases": {"granted": leases.0, "revoked": leases.1, "checkpoints": leases.2},
            "auth_changes": auth_changes,
            "conf_changes": conf_changes,
            "problem": problem.as_ref().map(problem_json),
        });
        out.json(&v)?;
    } else {
        let range = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => format!("{a}..{b}"),
            _ => "none".into(),
        };
        let mut rows = vec![
            vec!["wal dir".into(), dir.display().to_string()],
            vec!["segments".into(), nseg.to_string()],
            vec![
                "records".into(),
                format!("{records} ({bytes} bytes; entry data {data_bytes} bytes)"),
            ],
            vec!["index".into(), range(first, last)],
            vec![
                "term".into(),
                range(first.map(|_| term_min), first.map(|_| term_max)),
            ],
            vec![
                "leases".into(),
                format!(
                    "{} granted, {} revoked, {} checkpoints",
                    leases.0, leases.1, leases.2
                ),
            ],
            vec!["auth changes".into(), auth_changes.to_string()],
            vec![
                "conf changes".into(),
                if conf_changes.is_empty() {
                    "none".into()
                } else {
                    conf_changes.join(", ")
                },
            ],
        ];
        for (t, n) in &by_type {
            rows.push(vec![format!("type {t}"), n.to_string()]);
        }
        let krows: Vec<Vec<String>> = by_kind
            .iter()
            .map(|(k, (n, b))| vec![k.to_string(), n.to_string(), b.to_string()])
            .collect();
        let mut prows: Vec<Vec<String>> = busiest
            .iter()
            .map(|(p, (n, b))| {
                vec![
                    etcd_standby_decode::render::bytes_text(p),
                    n.to_string(),
                    b.to_string(),
                ]
            })
            .collect();
        if other_prefix.0 > 0 {
            prows.push(vec![
                "(other prefixes)".into(),
                other_prefix.0.to_string(),
                other_prefix.1.to_string(),
            ]);
        }
        let tables: [(&[&str], Vec<Vec<String>>); 3] = [
            (&["FIELD", "VALUE"], rows),
            (&["KIND", "ENTRIES", "BYTES"], krows),
            (&["BUSIEST PREFIX", "REQUESTS", "BYTES"], prows),
        ];
        for (i, (headers, rows)) in tables.into_iter().enumerate() {
            if i > 0 {
                out.line("")?;
            }
            if w == WriteOut::Table {
                out.line(bordered_table(headers, &rows).trim_end())?;
            } else {
                // The overview reads as "name  value" lines without a header.
                let mut all = Vec::with_capacity(rows.len() + 1);
                if i > 0 {
                    all.push(headers.iter().map(|h| h.to_string()).collect());
                }
                all.extend(rows);
                for l in table(&all) {
                    out.line(&l)?;
                }
            }
        }
    }
    out.flush()?;
    Ok(report(problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_times_are_found_only_in_our_data_dirs() {
        #![allow(clippy::unwrap_used)]
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let wal = root.join("member").join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        let seg = wal.join("0000000000000000-0000000000000000.wal");
        std::fs::write(&seg, b"").unwrap();
        // etcd's own data dir: no times file.
        for p in [root, &root.join("member"), &wal, &seg] {
            assert!(receive_times_for(p).is_none(), "{}", p.display());
        }
        let t = ReceiveTimes::open(&root.join(times::FILE_NAME)).unwrap();
        t.record(
            7,
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_236_301_123),
        )
        .unwrap();
        t.flush().unwrap();
        for p in [root, &root.join("member"), &wal, &seg] {
            let found = receive_times_for(p);
            assert!(found.is_some(), "{}", p.display());
            let found = found.unwrap();
            assert_eq!(
                received_text(&found, 7).as_deref(),
                Some("2026-12-02T18:31:41.123Z")
            );
            assert_eq!(received_text(&found, 8), None);
        }
        // A `wal` dir not under `member/` does not look two levels up.
        let other = root.join("x").join("wal");
        std::fs::create_dir_all(&other).unwrap();
        assert!(receive_times_for(&other).is_none());
    }

    #[test]
    fn static_names_need_no_escaping() {
        let types = (0..3).filter_map(entry_type_str);
        let kinds = RequestKind::ALL.iter().map(|k| k.name());
        let mut n = 0;
        for name in types.chain(kinds) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            write_json_str(&mut a, name);
            write_name(&mut b, name);
            assert_eq!(a, b, "{name}");
            n += 1;
        }
        assert!(n > 30, "{n}");
    }

    #[test]
    fn key_buckets_group_by_leading_path_components() {
        assert_eq!(
            &key_bucket(b"/registry/pods/ns/a", 2)[..],
            b"/registry/pods/"
        );
        assert_eq!(&key_bucket(b"/a/1", 2)[..], b"/a/1");
        assert_eq!(&key_bucket(b"/a/1", 1)[..], b"/a/");
        assert_eq!(&key_bucket(b"foo", 2)[..], b"foo");
        assert_eq!(&key_bucket(b"verylongkey", 2)[..], b"verylong");
    }
}
