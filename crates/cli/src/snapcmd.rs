//! `etcd-standby snap dump`: a `.snap` file's checks, raft metadata and the
//! membership it carries in the v2 store.
use crate::output::{Out, Verdict, table};
use anyhow::Result;
use etcd_standby_wal::WalError;
use etcd_standby_wal::snap::{SnapFile, list_snap_files, read_snap_file};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn hex_ids(v: &[u64]) -> Vec<String> {
    v.iter().map(|x| format!("{x:016x}")).collect()
}

/// Membership facts read from the v2 store tree (`/0/members`, `/0/version`).
struct V2Summary {
    members: Vec<Value>,
    removed: Vec<String>,
    cluster_version: Option<String>,
    nodes: u64,
}

fn walk_v2(node: &Value, s: &mut V2Summary) {
    s.nodes += 1;
    let path = node.get("Path").and_then(Value::as_str).unwrap_or("");
    if path == "/0/version" {
        s.cluster_version = node.get("Value").and_then(Value::as_str).map(str::to_owned);
    }
    if let Some(id) = path.strip_prefix("/0/removed_members/") {
        s.removed.push(id.to_owned());
    }
    if let Some(rest) = path.strip_prefix("/0/members/")
        && !rest.contains('/')
    {
        let mut m = json!({"id": rest});
        if let Some(children) = node.get("Children").and_then(Value::as_object) {
            for child in children.values() {
                let name = child.get("Path").and_then(Value::as_str).unwrap_or("");
                let val = child.get("Value").and_then(Value::as_str).unwrap_or("");
                let parsed: Value = serde_json::from_str(val).unwrap_or(Value::Null);
                if name.ends_with("/raftAttributes") {
                    m["raftAttributes"] = parsed;
                } else if name.ends_with("/attributes") {
                    m["attributes"] = parsed;
                }
            }
        }
        s.members.push(m);
    }
    if let Some(children) = node.get("Children").and_then(Value::as_object) {
        for c in children.values() {
            walk_v2(c, s);
        }
    }
}

fn resolve(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let dir = etcd_standby_wal::resolve_snap_dir(path).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: not a .snap file or a data dir with member/snap",
            path.display()
        )
    })?;
    list_snap_files(&dir)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}: no .snap files", dir.display()))
}

/// `snap dump`.
pub fn dump(path: &Path, json_out: bool) -> Result<Verdict> {
    let file = resolve(path)?;
    let snap: SnapFile = match read_snap_file(&file) {
        Ok(s) => s,
        Err(e @ WalError::BadSnapshot { .. }) => {
            let mut out = Out::new();
            if json_out {
                out.json(&json!({"file": file.display().to_string(), "ok": false, "problem": e.to_string()}))?;
            } else {
                out.line(&format!("file      {}", file.display()))?;
                out.line(&format!("result    BAD SNAPSHOT: {e}"))?;
                out.line("meaning   etcd renames such a file to .broken and falls back to an older snapshot")?;
            }
            out.flush()?;
            return Ok(Verdict::Problem);
        }
        Err(e) => return Err(e.into()),
    };
    let md = snap.snapshot.metadata.clone().unwrap_or_default();
    let cs = md.conf_state.clone().unwrap_or_default();
    let data = snap.snapshot.data.clone().unwrap_or_default();
    let store: Value = serde_json::from_slice(&data).unwrap_or(Value::Null);
    let mut summary = V2Summary {
        members: Vec::new(),
        removed: Vec::new(),
        cluster_version: None,
        nodes: 0,
    };
    if let Some(root) = store.get("Root") {
        walk_v2(root, &mut summary);
    }
    let mut out = Out::new();
    if json_out {
        out.json(&json!({
            "file": file.display().to_string(), "ok": true, "crc": format!("{:08x}", snap.crc),
            "term": md.term, "index": md.index,
            "conf_state": {"voters": hex_ids(&cs.voters), "learners": hex_ids(&cs.learners),
                           "voters_outgoing": hex_ids(&cs.voters_outgoing),
                           "learners_next": hex_ids(&cs.learners_next), "auto_leave": cs.auto_leave},
            "v2_store_bytes": data.len(),
            "v2_nodes": summary.nodes,
            "cluster_version": summary.cluster_version,
            "members": summary.members,
            "removed_members": summary.removed,
            "v2_root": store.get("Root"),
        }))?;
    } else {
        let mut rows = vec![
            vec!["file".into(), file.display().to_string()],
            vec!["crc".into(), format!("{:08x} OK", snap.crc)],
            vec!["term".into(), md.term.to_string()],
            vec!["index".into(), md.index.to_string()],
            vec!["voters".into(), hex_ids(&cs.voters).join(" ")],
            vec!["learners".into(), hex_ids(&cs.learners).join(" ")],
            vec![
                "v2 store".into(),
                format!("{} bytes, {} nodes", data.len(), summary.nodes),
            ],
            vec![
                "cluster ver".into(),
                summary.cluster_version.clone().unwrap_or_default(),
            ],
        ];
        for m in &summary.members {
            rows.push(vec!["member".into(), m.to_string()]);
        }
        for r in &summary.removed {
            rows.push(vec!["removed".into(), r.clone()]);
        }
        for l in table(&rows) {
            out.line(&l)?;
        }
    }
    out.flush()?;
    Ok(Verdict::Clean)
}
