//! `etcd-standby db dump`: etcd's view of a bbolt backend — live keys with
//! their revisions, leases, auth, membership and meta — or its raw pages.
use crate::output::{Borders, Out, Verdict, WriteOut, bordered_table, table};
use crate::progress::{self, Progress};
use anyhow::Result;
use etcd_standby_bolt::etcd::{self, LiveKey};
use etcd_standby_bolt::{BoltError, BoltFile, PageKind};
use etcd_standby_decode::render::{bytes_json, bytes_text};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Options of `db dump`.
pub struct DbOptions {
    /// Output format: JSON lines, aligned lines, or bordered tables.
    pub write_out: WriteOut,
    /// Only this bucket.
    pub bucket: Option<String>,
    /// Only keys with this prefix.
    pub key_prefix: Option<Vec<u8>>,
    /// Print password hashes.
    pub show_secrets: bool,
    /// Print the page map instead.
    pub pages: bool,
}

const SECTIONS: &[&str] = &[
    "meta",
    "auth",
    "cluster",
    "members",
    "members_removed",
    "alarm",
    "lease",
    "authUsers",
    "authRoles",
    "key",
];

fn resolve(path: &Path) -> PathBuf {
    if path.is_dir() {
        for p in [
            path.join("member/snap/db"),
            path.join("snap/db"),
            path.join("db"),
        ] {
            if p.is_file() {
                return p;
            }
        }
    }
    path.to_path_buf()
}

fn is_data_problem(e: &BoltError) -> bool {
    !matches!(e, BoltError::Io { .. })
}

fn show(opts: &DbOptions, section: &str) -> bool {
    opts.bucket.as_deref().is_none_or(|b| b == section)
}

fn secret(opts: &DbOptions, b: &[u8]) -> String {
    if b.is_empty() {
        String::new()
    } else if opts.show_secrets {
        bytes_json(b)
    } else {
        "<redacted>".into()
    }
}

fn perm_type(t: i32) -> &'static str {
    match t {
        0 => "READ",
        1 => "WRITE",
        2 => "READWRITE",
        _ => "?",
    }
}

fn key_json(k: &LiveKey) -> Value {
    json!({"record": "key", "key": bytes_json(&k.key), "create_revision": k.create_revision,
           "mod_revision": k.mod_revision, "version": k.version,
           "lease": if k.lease != 0 { Value::from(format!("{:016x}", k.lease)) } else { Value::Null },
           "value": bytes_json(&k.value)})
}

impl DbOptions {
    fn json(&self) -> bool {
        self.write_out == WriteOut::Json
    }
}

/// How much of a value a text dump shows.
const VALUE_SHOWN: usize = 96;

/// The text cells of a key: create and mod revision, version, lease, key,
/// value (shortened).
fn key_cells(k: &LiveKey) -> [String; 6] {
    let lease = if k.lease != 0 {
        format!("{:016x}", k.lease)
    } else {
        "-".into()
    };
    let mut value = bytes_text(&k.value[..k.value.len().min(VALUE_SHOWN)]);
    if k.value.len() > VALUE_SHOWN {
        value.push_str(&format!("…(+{} bytes)", k.value.len() - VALUE_SHOWN));
    }
    [
        k.create_revision.to_string(),
        k.mod_revision.to_string(),
        k.version.to_string(),
        lease,
        bytes_text(&k.key),
        value,
    ]
}

/// Writes a bordered table whose rows come from `rows()`, called twice: once
/// to size the columns and once to print, so no row is held in memory.
fn streamed_table<I>(out: &mut Out, headers: &[&str], rows: impl Fn() -> Result<I>) -> Result<()>
where
    I: Iterator<Item = Result<Vec<String>>>,
{
    let mut b = Borders::new(headers);
    let mut any = false;
    for r in rows()? {
        any = true;
        b.fit(&r?);
    }
    let rule = b.rule();
    out.line(&rule)?;
    out.line(&b.line(headers))?;
    out.line(&rule)?;
    for r in rows()? {
        out.line(&b.line(&r?))?;
    }
    if any {
        out.line(&rule)?;
    }
    Ok(())
}

/// `db dump`.
pub fn dump(path: &Path, opts: &DbOptions) -> Result<Verdict> {
    let path = resolve(path);
    let db = match BoltFile::open(&path) {
        Ok(db) => db,
        Err(e) if is_data_problem(&e) => {
            eprintln!("etcd-standby: {e}");
            return Ok(Verdict::Problem);
        }
        Err(e) => return Err(e.into()),
    };
    match dump_db(&db, &path, opts) {
        Ok(v) => Ok(v),
        Err(e) => match e.downcast_ref::<BoltError>() {
            Some(b) if is_data_problem(b) => {
                eprintln!("etcd-standby: {e:#}");
                Ok(Verdict::Problem)
            }
            _ => Err(e),
        },
    }
}

fn dump_db(db: &BoltFile, path: &Path, opts: &DbOptions) -> Result<Verdict> {
    let mut out = Out::new();
    let mut verdict = Verdict::Clean;
    let meta = db.meta();
    let trailer = db.trailer().map(|t| t.is_valid());
    if trailer == Some(false) {
        verdict = Verdict::Problem;
        eprintln!(
            "etcd-standby: {}: the SHA-256 trailer of this etcdctl snapshot does not match its contents",
            path.display()
        );
    }
    let trailer_text = match trailer {
        None => "none",
        Some(true) => "etcdctl snapshot, sha256 OK",
        Some(false) => "etcdctl snapshot, SHA256 MISMATCH",
    };
    if opts.json() {
        out.json(
            &json!({"record": "db", "path": path.display().to_string(), "file_bytes": db.file_len(),
            "page_size": meta.page_size, "txid": meta.txid, "pgid": meta.pgid,
            "freelist": if meta.has_freelist() { Value::from(meta.freelist) } else { Value::Null },
            "trailer": trailer_text}),
        )?;
    } else {
        out.line(&format!(
            "db        {} ({} bytes, page size {}, txid {}, {} pages; trailer: {trailer_text})",
            path.display(),
            db.file_len(),
            meta.page_size,
            meta.txid,
            meta.pgid
        ))?;
    }
    if opts.pages {
        let map = db.page_map()?;
        let mut rows = vec![vec![
            "PAGE".into(),
            "KIND".into(),
            "COUNT".into(),
            "OVERFLOW".into(),
            "BUCKET".into(),
        ]];
        for p in &map.pages {
            let kind = match p.kind {
                PageKind::Branch => "branch",
                PageKind::Leaf => "leaf",
            };
            let bucket = p
                .bucket
                .as_deref()
                .map(bytes_text)
                .unwrap_or_else(|| "(root)".into());
            if opts.json() {
                out.json(&json!({"record": "page", "id": p.id, "kind": kind, "count": p.count, "overflow": p.overflow, "bucket": p.bucket.as_deref().map(bytes_json)}))?;
            } else {
                rows.push(vec![
                    p.id.to_string(),
                    kind.into(),
                    p.count.to_string(),
                    p.overflow.to_string(),
                    bucket,
                ]);
            }
        }
        if !opts.json() {
            if opts.write_out == WriteOut::Table {
                let (headers, body) = rows.split_at(1);
                let headers: Vec<&str> = headers[0].iter().map(String::as_str).collect();
                out.line(bordered_table(&headers, body).trim_end())?;
            } else {
                for l in table(&rows) {
                    out.line(&l)?;
                }
            }
            out.line(&format!("unreachable pages: {:?}", map.unreachable))?;
        }
        out.flush()?;
        return Ok(verdict);
    }
    if let Some(b) = &opts.bucket
        && !SECTIONS.contains(&b.as_str())
    {
        return dump_raw_bucket(db, b, opts, &mut out)
            .map(|v| if v == Verdict::Problem { v } else { verdict });
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    if show(opts, "meta") {
        let m = etcd::read_meta(db)?;
        let rev = |r: Option<etcd::Revision>| r.map(|r| r.main);
        if opts.json() {
            out.json(
                &json!({"record": "meta", "consistent_index": m.consistent_index, "term": m.term,
                "conf_state": m.conf_state, "scheduled_compact_rev": rev(m.scheduled_compact_rev),
                "finished_compact_rev": rev(m.finished_compact_rev)}),
            )?;
        } else {
            let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or("-".into());
            rows.push(vec![
                "meta".into(),
                format!(
                    "consistent_index={} term={} compacted={} (scheduled {})",
                    m.consistent_index
                        .map(|x| x.to_string())
                        .unwrap_or("-".into()),
                    m.term.map(|x| x.to_string()).unwrap_or("-".into()),
                    opt(rev(m.finished_compact_rev)),
                    opt(rev(m.scheduled_compact_rev)),
                ),
            ]);
            if let Some(cs) = &m.conf_state {
                let ids = |v: &[u64]| {
                    v.iter()
                        .map(|x| format!("{x:016x}"))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                rows.push(vec![
                    "confState".into(),
                    format!(
                        "voters=[{}] learners=[{}]",
                        ids(&cs.voters),
                        ids(&cs.learners)
                    ),
                ]);
            }
        }
    }
    if show(opts, "auth") {
        let a = etcd::read_auth(db)?;
        if opts.json() {
            out.json(&json!({"record": "auth", "enabled": a.enabled, "revision": a.revision}))?;
        } else {
            rows.push(vec![
                "auth".into(),
                format!(
                    "enabled={} revision={}",
                    a.enabled.map(|b| b.to_string()).unwrap_or("-".into()),
                    a.revision.map(|b| b.to_string()).unwrap_or("-".into())
                ),
            ]);
        }
    }
    if show(opts, "cluster") {
        let c = etcd::read_cluster(db)?;
        if opts.json() {
            out.json(
                &json!({"record": "cluster", "version": c.version, "downgrade": c.downgrade}),
            )?;
        } else {
            rows.push(vec![
                "cluster".into(),
                format!("version={}", c.version.unwrap_or("-".into())),
            ]);
        }
    }
    if show(opts, "members") {
        for m in etcd::read_members(db)? {
            if opts.json() {
                out.json(&json!({"record": "member", "id": format!("{:016x}", m.id), "name": m.name,
                    "peer_urls": m.peer_urls, "client_urls": m.client_urls, "is_learner": m.is_learner}))?;
            } else {
                rows.push(vec![
                    "member".into(),
                    format!(
                        "{:016x} name={:?} peers={} clients={}{}",
                        m.id,
                        m.name,
                        m.peer_urls.join(","),
                        m.client_urls.join(","),
                        if m.is_learner { " learner" } else { "" }
                    ),
                ]);
            }
        }
    }
    if show(opts, "members_removed") {
        for id in etcd::read_removed_members(db)? {
            if opts.json() {
                out.json(&json!({"record": "removed_member", "id": format!("{id:016x}")}))?;
            } else {
                rows.push(vec!["removed".into(), format!("{id:016x}")]);
            }
        }
    }
    if show(opts, "alarm") {
        for a in etcd::read_alarms(db)? {
            let name = match a.alarm {
                1 => "NOSPACE",
                2 => "CORRUPT",
                _ => "NONE",
            };
            if opts.json() {
                out.json(&json!({"record": "alarm", "member_id": format!("{:016x}", a.member_id), "alarm": name}))?;
            } else {
                rows.push(vec![
                    "alarm".into(),
                    format!("{name} raised by {:016x}", a.member_id),
                ]);
            }
        }
    }
    if show(opts, "lease") {
        for l in etcd::read_leases(db)? {
            if opts.json() {
                out.json(&json!({"record": "lease", "id": format!("{:016x}", l.id), "ttl": l.ttl, "remaining_ttl": l.remaining_ttl}))?;
            } else {
                let rem = if l.remaining_ttl != 0 {
                    format!(" remaining={}s", l.remaining_ttl)
                } else {
                    String::new()
                };
                rows.push(vec![
                    "lease".into(),
                    format!("{:016x} ttl={}s{rem}", l.id, l.ttl),
                ]);
            }
        }
    }
    if show(opts, "authUsers") {
        for u in etcd::read_users(db)? {
            let no_pw = u.options.as_ref().is_some_and(|o| o.no_password);
            if opts.json() {
                out.json(
                    &json!({"record": "user", "name": bytes_json(&u.name), "roles": u.roles,
                    "no_password": no_pw, "password": secret(opts, &u.password)}),
                )?;
            } else {
                let pw = if no_pw {
                    "no password".to_string()
                } else {
                    format!("password={}", secret(opts, &u.password))
                };
                rows.push(vec![
                    "user".into(),
                    format!("{} roles=[{}] {pw}", bytes_text(&u.name), u.roles.join(",")),
                ]);
            }
        }
    }
    if show(opts, "authRoles") {
        for r in etcd::read_roles(db)? {
            let perms: Vec<Value> = r.key_permission.iter().map(|p| json!({
                "type": perm_type(p.perm_type), "key": bytes_json(&p.key),
                "range_end": if p.range_end.is_empty() { Value::Null } else { Value::from(bytes_json(&p.range_end)) }})).collect();
            if opts.json() {
                out.json(
                    &json!({"record": "role", "name": bytes_json(&r.name), "permissions": perms}),
                )?;
            } else {
                let ps: Vec<String> = r
                    .key_permission
                    .iter()
                    .map(|p| {
                        if p.range_end.is_empty() {
                            format!("{} {}", perm_type(p.perm_type), bytes_text(&p.key))
                        } else {
                            format!(
                                "{} [{}, {})",
                                perm_type(p.perm_type),
                                bytes_text(&p.key),
                                bytes_text(&p.range_end)
                            )
                        }
                    })
                    .collect();
                rows.push(vec![
                    "role".into(),
                    format!("{} {}", bytes_text(&r.name), ps.join("; ")),
                ]);
            }
        }
    }
    if !rows.is_empty() {
        if opts.write_out == WriteOut::Table {
            out.line(bordered_table(&["SECTION", "VALUE"], &rows).trim_end())?;
        } else {
            for l in table(&rows) {
                out.line(&l)?;
            }
        }
    }
    if show(opts, "key") {
        let keys = etcd::live_keys(db)?;
        let st = keys.stats();
        let wanted = |k: &LiveKey| {
            opts.key_prefix
                .as_ref()
                .is_none_or(|p| k.key.starts_with(p))
        };
        if !opts.json() {
            out.line(&format!(
                "keys      {} live ({} revisions, {} tombstones, latest revision {})",
                st.live_keys,
                st.revisions,
                st.tombstones,
                st.latest.map(|r| r.main.to_string()).unwrap_or("-".into())
            ))?;
        }
        let bar = Progress::items("dumping keys", Some(st.live_keys), progress::Stdout::Stream);
        if opts.write_out == WriteOut::Table {
            drop(keys);
            streamed_table(
                &mut out,
                &["CREATE", "MOD", "VER", "LEASE", "KEY", "VALUE"],
                || {
                    let bar = &bar;
                    bar.set(0);
                    Ok(etcd::live_keys(db)?.filter_map(move |k| {
                        bar.inc(1);
                        match k {
                            Ok(k) if !wanted(&k) => None,
                            Ok(k) => Some(Ok(key_cells(&k).to_vec())),
                            Err(e) => Some(Err(e.into())),
                        }
                    }))
                },
            )?;
        } else {
            if !opts.json() {
                out.line(&format!(
                    "{:>8} {:>8} {:>6}  {:<16}  KEY = VALUE",
                    "CREATE", "MOD", "VER", "LEASE"
                ))?;
            }
            for k in keys {
                let k = k?;
                bar.inc(1);
                if !wanted(&k) {
                    continue;
                }
                if opts.json() {
                    out.json(&key_json(&k))?;
                } else {
                    let [c, m, v, lease, key, value] = key_cells(&k);
                    out.line(&format!(
                        "{c:>8} {m:>8} {v:>6}  {lease:<16}  {key} = {value}"
                    ))?;
                }
            }
        }
        bar.finish();
    }
    out.flush()?;
    Ok(verdict)
}

fn dump_raw_bucket(db: &BoltFile, name: &str, opts: &DbOptions, out: &mut Out) -> Result<Verdict> {
    let Some(bucket) = db.bucket(name.as_bytes())? else {
        anyhow::bail!("no bucket {name:?} in this db");
    };
    if opts.write_out == WriteOut::Table {
        streamed_table(out, &["KEY", "VALUE"], || {
            Ok(db.iter(&bucket).map(|e| {
                let e = e?;
                Ok(vec![bytes_text(&e.key), bytes_text(&e.value)])
            }))
        })?;
        out.flush()?;
        return Ok(Verdict::Clean);
    }
    for e in db.iter(&bucket) {
        let e = e?;
        if opts.json() {
            out.json(&json!({"record": "raw", "bucket": name, "key": bytes_json(&e.key), "value": bytes_json(&e.value)}))?;
        } else {
            out.line(&format!(
                "{} = {}",
                bytes_text(&e.key),
                bytes_text(&e.value)
            ))?;
        }
    }
    out.flush()?;
    Ok(Verdict::Clean)
}
