//! `model_state`: an etcd db read into the shadow model's snapshot state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, read_fixture};
use etcd_standby_bolt::{BoltFile, model_state};
use etcd_standby_model::{Password, PermType};

#[test]
fn etcd_3_4_db_becomes_the_model_state_the_readme_describes() {
    let db = BoltFile::open(fixture("etcd-3.4.23/data/member/snap/db")).unwrap();
    let s = model_state(&db).unwrap();
    let names: Vec<&[u8]> = s.keys.iter().map(|k| k.key.as_ref()).collect();
    assert_eq!(
        names,
        [
            &b"/a/x"[..],
            b"/a/y",
            b"after-wait",
            b"ck",
            b"f1",
            b"final",
            b"foo"
        ]
    );
    assert_eq!((s.consistent_index, s.term), (60, 0));
    assert_eq!(s.compacted, 13);
    assert!(s.revision >= s.keys.iter().map(|k| k.state.mod_revision).max().unwrap());
    assert!(s.extras.is_none());
    assert_eq!(
        s.leases.iter().map(|l| (l.id, l.ttl)).collect::<Vec<_>>(),
        [(0x73baa200c69f6823, 1200)]
    );
    assert_eq!((s.auth.enabled, s.auth.revision), (false, 12));
    assert!(matches!(
        s.auth.users["alice"].password,
        Password::Hashed(_)
    ));
    assert_eq!(s.auth.users["bob"].password, Password::None);
    assert_eq!(s.auth.users["root"].roles, ["root"]);
    let perm = &s.auth.roles["r1"].perms[0];
    assert_eq!(perm.perm_type, PermType::ReadWrite);
    assert_eq!(
        (perm.key.as_ref(), perm.range_end.as_ref()),
        (&b"/a/"[..], &b"/a0"[..])
    );
}

#[test]
fn etcd_3_5_db_has_a_term() {
    let db = BoltFile::open(fixture("etcd-3.5.1/data/member/snap/db")).unwrap();
    let s = model_state(&db).unwrap();
    assert!(!s.keys.is_empty());
    assert!(
        s.consistent_index > 0 && s.term > 0,
        "{} {}",
        s.consistent_index,
        s.term
    );
}

#[test]
fn a_damaged_db_is_an_error_never_a_panic() {
    let mut image = read_fixture("etcd-3.4.23/data/member/snap/db");
    // Zero every page after the metas: the trees are gone.
    for b in image.iter_mut().skip(2 * 4096) {
        *b = 0;
    }
    let err = match BoltFile::from_bytes(image) {
        Ok(db) => model_state(&db).expect_err("a damaged db must not read"),
        Err(e) => e,
    };
    // The error names the damaged page, as every BoltError does.
    assert!(
        err.to_string().contains("page header carries id 0"),
        "{err}"
    );
}
