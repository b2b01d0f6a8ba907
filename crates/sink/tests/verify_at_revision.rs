//! `verify --at-revision R` on real etcd: two fresh clusters given the same
//! writes share one revision sequence (as a revision-preserving standby
//! does), so both are read at the same revision R and each key's create
//! revision, mod revision and version are compared as well as its value and
//! lease; the standby's reserved keys are left out; a revision compacted
//! or not reached yet on either side is a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use etcd_standby_client::{Client, pb};
use etcd_standby_sink::KeyMap;
use etcd_standby_sink::verify::{
    Difference, DifferenceKind, ReadPoint, VerifyOptions, verify_with,
};
use etcd_standby_testkit::EtcdVersion;

both_versions!(verify_at_revision_reports_revision_and_version_differences);

/// The revision an answer's header carries.
fn revision_of(header: Option<pb::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

/// Puts `key` = `value` (with `lease`, 0: none); the revision it made.
async fn put_kv(c: &Client, key: &str, value: &str, lease: i64) -> i64 {
    let req = pb::PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        lease,
        ..Default::default()
    };
    revision_of(c.put(req).await.unwrap().header)
}

/// Deletes `key`; the revision after it.
async fn del_kv(c: &Client, key: &str) -> i64 {
    let req = pb::DeleteRangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..Default::default()
    };
    revision_of(c.delete_range(req).await.unwrap().header)
}

/// Options comparing both sides at revision `r`, metadata included or not.
fn at(r: i64, compare_revisions: bool) -> VerifyOptions {
    VerifyOptions {
        at: Some(ReadPoint {
            index: 0,
            source_revision: r,
            standby_revision: r,
        }),
        compare_revisions,
        ..Default::default()
    }
}

async fn diffs_at(src: &Client, dst: &Client, r: i64, compare: bool) -> Vec<Difference> {
    verify_with(src, dst, &KeyMap::new(), &at(r, compare))
        .await
        .unwrap()
}

async fn verify_at_revision_reports_revision_and_version_differences(version: EtcdVersion) {
    let primary = start(version);
    let standby = start(version);
    let src = client(&primary).await;
    let dst = client(&standby).await;

    // The same writes on both sides: the same revisions (a lease grant
    // makes none).
    const LEASE: i64 = 0x77;
    for c in [&src, &dst] {
        c.lease_grant(LEASE, 600).await.unwrap();
    }
    let mut revs = Vec::new();
    for c in [&src, &dst] {
        revs.push(vec![
            put_kv(c, "app/a", "1", 0).await,
            put_kv(c, "app/b", "2", 0).await,
            put_kv(c, "app/a", "11", 0).await,
            del_kv(c, "app/b").await,
            put_kv(c, "app/c", "3", LEASE).await,
        ]);
    }
    assert_eq!(revs[0], revs[1], "fresh clusters, same writes");
    let (r_a2, r_c) = (revs[0][2], revs[0][4]);
    assert_eq!(r_c, r_a2 + 2);
    for r in [r_a2, r_c] {
        let d = diffs_at(&src, &dst, r, true).await;
        assert!(d.is_empty(), "at revision {r}: {d:#?}");
    }

    // Now app/d has the same value at revision r on both sides, but on
    // the primary it was put twice (created one revision earlier, version
    // 2) while the standby's revision r-1 went to a reserved key, which
    // verify leaves out.
    let p1 = put_kv(&src, "app/d", "x", 0).await;
    let p2 = put_kv(&src, "app/d", "y", 0).await;
    let s1 = put_kv(&dst, "__etcd_standby__/pad", "p", 0).await;
    let s2 = put_kv(&dst, "app/d", "y", 0).await;
    assert_eq!((p1, p2), (s1, s2));
    let r = p2;
    assert!(
        diffs_at(&src, &dst, r, false).await.is_empty(),
        "values and leases agree"
    );
    let d = diffs_at(&src, &dst, r, true).await;
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].kind, DifferenceKind::KeyRevisionsDiffer);
    assert_eq!(d[0].key.as_deref(), Some("app/d"));
    assert_eq!(
        d[0].source.as_deref(),
        Some(format!("create={p1} mod={p2} version=2").as_str())
    );
    assert_eq!(
        d[0].standby.as_deref(),
        Some(format!("create={r} mod={r} version=1").as_str())
    );
    let json = serde_json::to_string(&d[0]).unwrap();
    assert!(json.contains(r#""kind":"key_revisions_differ""#), "{json}");
    assert!(
        d[0].to_string()
            .starts_with("key_revisions_differ key=app/d")
    );
    // Earlier revisions are still clean: the difference is only from r on.
    assert!(diffs_at(&src, &dst, r_c, true).await.is_empty());

    // A revision the standby has not reached, then one neither has.
    let ahead = put_kv(&src, "app/e", "1", 0).await;
    let err = verify_with(&src, &dst, &KeyMap::new(), &at(ahead, true))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("revision {ahead} is in the future on the standby")),
        "{err}"
    );
    let far = ahead + 100;
    let err = verify_with(&src, &dst, &KeyMap::new(), &at(far, true))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("revision {far} is in the future on the primary")),
        "{err}"
    );

    // A revision the primary compacted away.
    src.compact(r_c, false).await.unwrap();
    let err = verify_with(&src, &dst, &KeyMap::new(), &at(r_a2, true))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("the primary has compacted past revision {r_a2}")),
        "{err}"
    );
    assert!(err.contains("compacted"), "{err}");
}
