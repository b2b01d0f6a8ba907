//! Typed JSON writer for the hot request kinds of a dump.
//!
//! `wal dump --json` spends most of its time rendering requests through
//! schema reflection ([`crate::render::render_entry`]: a second decode into a
//! `DynamicMessage`, a `Node` tree, then JSON). Nearly every entry of a real
//! WAL is a put, range, delete-range, txn, lease grant/revoke or compaction,
//! so those are written here straight from the already decoded prost structs,
//! byte for byte as the reflection renderer writes them (same rules: fields in
//! field-number order, proto3 scalars only when not default, messages and
//! oneof members when present, enum names or the number when unknown, IDs of
//! [`crate::render`]'s hex list as unsigned numbers, bytes as text or `0x`
//! hex). Anything else returns `false` and the caller falls back to
//! reflection. None of these kinds carries a secret, so redaction does not
//! apply; requests that may (auth) always take the reflection path.
//!
//! Guards: `tests/typed_json.rs` (a proptest over generated requests and every
//! fixture entry: typed output equals the reflection output).
use crate::Decoded;
use crate::render::{write_bytes_json, write_json_str};
use etcd_standby_proto::etcdserverpb as pb;

/// Appends the JSON of `decoded`'s request to `out` if it is one of the hot
/// kinds (the leader no-op, or an `InternalRaftRequest` with only header, ID,
/// range, put, delete_range, txn, compaction, lease_grant or lease_revoke);
/// returns `false`, leaving `out` untouched, for anything else.
pub fn write_typed_request(decoded: &Decoded, out: &mut Vec<u8>) -> bool {
    match decoded {
        Decoded::Empty => {
            out.extend_from_slice(b"{}");
            true
        }
        Decoded::Internal(r) => internal(r, out),
        _ => false,
    }
}

/// A JSON object being written: remembers whether a comma is due.
pub(crate) struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    pub(crate) fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Writes `"name":` (with a leading comma after the first field).
    pub(crate) fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    pub(crate) fn u64(&mut self, name: &str, v: u64) {
        if v != 0 {
            write_u64(self.key(name), v);
        }
    }

    fn i64(&mut self, name: &str, v: i64) {
        if v != 0 {
            write_i64(self.key(name), v);
        }
    }

    /// An int64 ID the reflection renderer shows as hex on terminals: JSON
    /// holds it as the unsigned number of the same bits.
    fn hex_id(&mut self, name: &str, v: i64) {
        if v != 0 {
            write_u64(self.key(name), v as u64);
        }
    }

    fn bool(&mut self, name: &str, v: bool) {
        if v {
            self.key(name).extend_from_slice(b"true");
        }
    }

    fn bytes(&mut self, name: &str, v: &[u8]) {
        if !v.is_empty() {
            write_bytes_json(self.key(name), v);
        }
    }

    fn str(&mut self, name: &str, v: &str) {
        if !v.is_empty() {
            write_json_str(self.key(name), v);
        }
    }

    /// A proto3 enum: omitted when 0, its value name when known, else the number.
    fn enumeration(&mut self, name: &str, v: i32, known: Option<&'static str>) {
        if v == 0 {
            return;
        }
        let out = self.key(name);
        match known {
            Some(n) => write_json_str(out, n),
            None => write_i64(out, i64::from(v)),
        }
    }

    pub(crate) fn close(self) {
        self.out.push(b'}');
    }
}

use crate::render::write_uint as write_u64;

fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
}

fn internal(r: &pb::InternalRaftRequest, out: &mut Vec<u8>) -> bool {
    // Exhaustive on purpose: a field added to the schema must be decided here.
    let pb::InternalRaftRequest {
        header,
        id,
        v2,
        range,
        put,
        delete_range,
        txn,
        compaction,
        lease_grant,
        lease_revoke,
        alarm,
        lease_checkpoint,
        auth_enable,
        auth_disable,
        auth_status,
        authenticate,
        auth_user_add,
        auth_user_delete,
        auth_user_get,
        auth_user_change_password,
        auth_user_grant_role,
        auth_user_revoke_role,
        auth_user_list,
        auth_role_list,
        auth_role_add,
        auth_role_delete,
        auth_role_get,
        auth_role_grant_permission,
        auth_role_revoke_permission,
        cluster_version_set,
        cluster_member_attr_set,
        downgrade_info_set,
    } = r;
    let cold = v2.is_some()
        || alarm.is_some()
        || lease_checkpoint.is_some()
        || auth_enable.is_some()
        || auth_disable.is_some()
        || auth_status.is_some()
        || authenticate.is_some()
        || auth_user_add.is_some()
        || auth_user_delete.is_some()
        || auth_user_get.is_some()
        || auth_user_change_password.is_some()
        || auth_user_grant_role.is_some()
        || auth_user_revoke_role.is_some()
        || auth_user_list.is_some()
        || auth_role_list.is_some()
        || auth_role_add.is_some()
        || auth_role_delete.is_some()
        || auth_role_get.is_some()
        || auth_role_grant_permission.is_some()
        || auth_role_revoke_permission.is_some()
        || cluster_version_set.is_some()
        || cluster_member_attr_set.is_some()
        || downgrade_info_set.is_some();
    if cold {
        return false;
    }
    // Field-number order: ID 1, range 3, put 4, delete_range 5, txn 6,
    // compaction 7, lease_grant 8, lease_revoke 9, header 100.
    let mut o = Obj::open(out);
    o.u64("ID", *id);
    if let Some(x) = range {
        range_json(o.key("range"), x);
    }
    if let Some(x) = put {
        put_json(o.key("put"), x);
    }
    if let Some(x) = delete_range {
        delete_json(o.key("delete_range"), x);
    }
    if let Some(x) = txn {
        txn_json(o.key("txn"), x);
    }
    if let Some(x) = compaction {
        let mut c = Obj::open(o.key("compaction"));
        c.i64("revision", x.revision);
        c.bool("physical", x.physical);
        c.close();
    }
    if let Some(x) = lease_grant {
        let mut c = Obj::open(o.key("lease_grant"));
        c.i64("TTL", x.ttl);
        c.hex_id("ID", x.id);
        c.close();
    }
    if let Some(x) = lease_revoke {
        let mut c = Obj::open(o.key("lease_revoke"));
        c.hex_id("ID", x.id);
        c.close();
    }
    if let Some(h) = header {
        header_fields_json(
            o.key("header"),
            &HeaderFields {
                id: h.id,
                username: &h.username,
                auth_revision: h.auth_revision,
            },
        );
    }
    o.close();
    true
}

fn range_json(out: &mut Vec<u8>, r: &pb::RangeRequest) {
    use pb::range_request::{SortOrder, SortTarget};
    let mut o = Obj::open(out);
    o.bytes("key", &r.key);
    o.bytes("range_end", &r.range_end);
    o.i64("limit", r.limit);
    o.i64("revision", r.revision);
    o.enumeration(
        "sort_order",
        r.sort_order,
        SortOrder::try_from(r.sort_order)
            .ok()
            .map(|e| e.as_str_name()),
    );
    o.enumeration(
        "sort_target",
        r.sort_target,
        SortTarget::try_from(r.sort_target)
            .ok()
            .map(|e| e.as_str_name()),
    );
    o.bool("serializable", r.serializable);
    o.bool("keys_only", r.keys_only);
    o.bool("count_only", r.count_only);
    o.i64("min_mod_revision", r.min_mod_revision);
    o.i64("max_mod_revision", r.max_mod_revision);
    o.i64("min_create_revision", r.min_create_revision);
    o.i64("max_create_revision", r.max_create_revision);
    o.close();
}

/// A `RequestHeader`'s fields, from prost or straight from the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeaderFields<'a> {
    pub(crate) id: u64,
    pub(crate) username: &'a str,
    pub(crate) auth_revision: u64,
}

pub(crate) fn header_fields_json(out: &mut Vec<u8>, h: &HeaderFields<'_>) {
    let mut c = Obj::open(out);
    c.u64("ID", h.id);
    c.str("username", h.username);
    c.u64("auth_revision", h.auth_revision);
    c.close();
}

/// A `PutRequest`'s fields, from prost or straight from the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PutFields<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
    pub(crate) lease: i64,
    pub(crate) prev_kv: bool,
    pub(crate) ignore_value: bool,
    pub(crate) ignore_lease: bool,
}

pub(crate) fn put_fields_json(out: &mut Vec<u8>, p: &PutFields<'_>) {
    let mut o = Obj::open(out);
    o.bytes("key", p.key);
    o.bytes("value", p.value);
    o.hex_id("lease", p.lease);
    o.bool("prev_kv", p.prev_kv);
    o.bool("ignore_value", p.ignore_value);
    o.bool("ignore_lease", p.ignore_lease);
    o.close();
}

fn put_json(out: &mut Vec<u8>, p: &pb::PutRequest) {
    put_fields_json(
        out,
        &PutFields {
            key: &p.key,
            value: &p.value,
            lease: p.lease,
            prev_kv: p.prev_kv,
            ignore_value: p.ignore_value,
            ignore_lease: p.ignore_lease,
        },
    );
}

pub(crate) fn delete_fields_json(out: &mut Vec<u8>, key: &[u8], range_end: &[u8], prev_kv: bool) {
    let mut o = Obj::open(out);
    o.bytes("key", key);
    o.bytes("range_end", range_end);
    o.bool("prev_kv", prev_kv);
    o.close();
}

fn delete_json(out: &mut Vec<u8>, d: &pb::DeleteRangeRequest) {
    delete_fields_json(out, &d.key, &d.range_end, d.prev_kv);
}

fn compare_json(out: &mut Vec<u8>, c: &pb::Compare) {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let mut o = Obj::open(out);
    o.enumeration(
        "result",
        c.result,
        CompareResult::try_from(c.result)
            .ok()
            .map(|e| e.as_str_name()),
    );
    o.enumeration(
        "target",
        c.target,
        CompareTarget::try_from(c.target)
            .ok()
            .map(|e| e.as_str_name()),
    );
    o.bytes("key", &c.key);
    // A oneof member is shown whenever it is set, even with a default value.
    match &c.target_union {
        Some(TargetUnion::Version(v)) => write_i64(o.key("version"), *v),
        Some(TargetUnion::CreateRevision(v)) => write_i64(o.key("create_revision"), *v),
        Some(TargetUnion::ModRevision(v)) => write_i64(o.key("mod_revision"), *v),
        Some(TargetUnion::Value(v)) => write_bytes_json(o.key("value"), v),
        Some(TargetUnion::Lease(v)) => write_u64(o.key("lease"), *v as u64),
        None => {}
    }
    o.bytes("range_end", &c.range_end);
    o.close();
}

fn ops_json(out: &mut Vec<u8>, ops: &[pb::RequestOp]) {
    use pb::request_op::Request;
    out.push(b'[');
    for (i, op) in ops.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut o = Obj::open(out);
        match &op.request {
            Some(Request::RequestRange(r)) => range_json(o.key("request_range"), r),
            Some(Request::RequestPut(p)) => put_json(o.key("request_put"), p),
            Some(Request::RequestDeleteRange(d)) => delete_json(o.key("request_delete_range"), d),
            Some(Request::RequestTxn(t)) => txn_json(o.key("request_txn"), t),
            None => {}
        }
        o.close();
    }
    out.push(b']');
}

fn txn_json(out: &mut Vec<u8>, t: &pb::TxnRequest) {
    let mut o = Obj::open(out);
    if !t.compare.is_empty() {
        let out = o.key("compare");
        out.push(b'[');
        for (i, c) in t.compare.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            compare_json(out, c);
        }
        out.push(b']');
    }
    if !t.success.is_empty() {
        ops_json(o.key("success"), &t.success);
    }
    if !t.failure.is_empty() {
        ops_json(o.key("failure"), &t.failure);
    }
    o.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_like_display() {
        for v in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            12345,
            123456,
            u64::MAX,
        ]
        .into_iter()
        .chain((0..20).flat_map(|k| [10u64.pow(k) - 1, 10u64.pow(k), 10u64.pow(k) + 7]))
        {
            let mut out = Vec::new();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
        for v in [0i64, -1, 7, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_i64(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }
}
