//! etcd schema layer against the facts stated in the fixture READMEs: live keys, meta,
//! leases, auth, members, summaries, point lookups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::fixture;
use etcd_standby_bolt::etcd::{self, LiveKey, Revision};
use etcd_standby_bolt::{BoltFile, NO_FREELIST};
use etcd_standby_proto::authpb::permission::Type as PermType;

fn open(rel: &str) -> BoltFile {
    BoltFile::open(fixture(rel)).unwrap()
}

fn live(db: &BoltFile) -> Vec<LiveKey> {
    etcd::live_keys(db)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn names(keys: &[LiveKey]) -> Vec<&str> {
    keys.iter()
        .map(|k| std::str::from_utf8(&k.key).unwrap())
        .collect()
}

fn get<'a>(keys: &'a [LiveKey], name: &str) -> &'a LiveKey {
    keys.iter().find(|k| k.key == name.as_bytes()).unwrap()
}

const LIVE_AT_24: [&str; 7] = ["/a/x", "/a/y", "after-wait", "ck", "f1", "final", "foo"];

#[test]
fn etcd_3_4_db_live_keys_are_sorted_and_match_readme() {
    let db = open("etcd-3.4.23/data/member/snap/db");
    let keys = live(&db);
    assert_eq!(names(&keys), LIVE_AT_24);
    let foo = get(&keys, "foo");
    assert_eq!(
        (
            foo.create_revision,
            foo.mod_revision,
            foo.version,
            foo.lease
        ),
        (2, 9, 4, 0)
    );
    assert_eq!(foo.value, "bar3");
    let ck = get(&keys, "ck");
    assert_eq!(
        (ck.lease, ck.value.as_ref()),
        (0x73baa200c69f6823, &b"cv"[..])
    );
    let after = get(&keys, "after-wait");
    assert_eq!(
        (after.create_revision, after.mod_revision, after.version),
        (24, 24, 1)
    );

    let stats = etcd::live_keys(&db).unwrap().stats();
    assert_eq!(stats.revisions, 21);
    assert_eq!(stats.tombstones, 7);
    assert_eq!(stats.live_keys, 7);
    assert_eq!(stats.latest, Some(Revision { main: 24, sub: 0 }));
}

#[test]
fn etcd_3_4_db_buckets_decode_as_readme_says() {
    let db = open("etcd-3.4.23/data/member/snap/db");
    assert_eq!((db.meta().txid, db.meta().pgid), (39, 5));
    assert_eq!(db.meta().freelist, NO_FREELIST);
    assert!(db.trailer().is_none());

    let meta = etcd::read_meta(&db).unwrap();
    assert_eq!(meta.consistent_index, Some(60));
    assert_eq!(meta.term, None);
    assert_eq!(meta.conf_state, None);
    assert_eq!(
        meta.scheduled_compact_rev,
        Some(Revision { main: 13, sub: 0 })
    );
    assert_eq!(
        meta.finished_compact_rev,
        Some(Revision { main: 13, sub: 0 })
    );
    assert!(meta.other.is_empty());

    let leases = etcd::read_leases(&db).unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(
        (leases[0].id, leases[0].ttl, leases[0].remaining_ttl),
        (0x73baa200c69f6823, 1200, 0)
    );

    let auth = etcd::read_auth(&db).unwrap();
    assert_eq!((auth.enabled, auth.revision), (Some(false), Some(12)));

    let users = etcd::read_users(&db).unwrap();
    let user_names: Vec<&[u8]> = users.iter().map(|u| u.name.as_ref()).collect();
    assert_eq!(user_names, [&b"alice"[..], b"bob", b"root"]);
    assert_eq!(users[0].roles, ["r1"]);
    assert!(users[0].password.starts_with(b"$2a$10$"));
    assert!(users[1].options.unwrap().no_password);
    assert!(users[1].password.is_empty());
    assert_eq!(users[2].roles, ["root"]);

    let roles = etcd::read_roles(&db).unwrap();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0].name, "r1");
    let perm = &roles[0].key_permission[0];
    assert_eq!(perm.perm_type(), PermType::Readwrite);
    assert_eq!(
        (perm.key.as_ref(), perm.range_end.as_ref()),
        (&b"/a/"[..], &b"/a0"[..])
    );

    let members = etcd::read_members(&db).unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].id, 0x7dac200b997573ba);
    assert_eq!(members[0].name, "n1");
    assert_eq!(members[0].peer_urls, ["http://127.0.0.1:23800"]);
    assert_eq!(members[0].client_urls, ["http://127.0.0.1:23790"]);
    assert!(!members[0].is_learner);
    assert_eq!(
        etcd::read_removed_members(&db).unwrap(),
        [0x4c68273943f4bb00]
    );
    assert_eq!(
        etcd::read_cluster(&db).unwrap().version.as_deref(),
        Some("3.4.0")
    );
    assert!(etcd::read_alarms(&db).unwrap().is_empty());
}

#[test]
fn etcd_3_4_snapshot_file_is_the_state_after_entry_57() {
    let db = open("etcd-3.4.23/etcdctl-snapshot.db");
    assert!(db.trailer().unwrap().is_valid());
    assert_eq!(etcd::read_meta(&db).unwrap().consistent_index, Some(57));
    let keys = live(&db);
    assert_eq!(names(&keys), ["/a/x", "/a/y", "ck", "f1", "final", "foo"]);
    let members = etcd::read_members(&db).unwrap();
    let learner = members.iter().find(|m| m.id == 0x4c68273943f4bb00).unwrap();
    assert!(learner.is_learner);
    assert_eq!(etcd::live_keys(&db).unwrap().stats().revisions, 20);
    // Tx.WriteTo image: meta 0 is the tx, meta 1 the same with txid - 1.
    let [m0, m1] = db.metas();
    assert_eq!(m0.as_ref().unwrap().txid, m1.as_ref().unwrap().txid + 1);
    assert_eq!(db.meta().index, 0);
}

#[test]
fn etcd_3_5_db_has_term_conf_state_and_same_live_keys() {
    let db = open("etcd-3.5.1/data/member/snap/db");
    assert_eq!(db.meta().txid, 40);
    let meta = etcd::read_meta(&db).unwrap();
    assert_eq!(meta.consistent_index, Some(61));
    assert_eq!(meta.term, Some(2));
    let cs = meta.conf_state.unwrap();
    assert_eq!(cs.voters, [10845098549898726772]);
    assert!(cs.learners.is_empty() && !cs.auto_leave);

    let keys = live(&db);
    assert_eq!(names(&keys), LIVE_AT_24);
    let foo = get(&keys, "foo");
    assert_eq!(
        (foo.create_revision, foo.mod_revision, foo.version),
        (2, 9, 4)
    );
    assert_eq!(get(&keys, "ck").lease, 0x4d74a200c69f6924);

    let leases = etcd::read_leases(&db).unwrap();
    assert_eq!(
        (leases.len(), leases[0].id, leases[0].ttl),
        (1, 0x4d74a200c69f6924, 1200)
    );
    let members = etcd::read_members(&db).unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].id, 0x968187abdcd14d74);
    assert!(
        members[0].client_urls.is_empty(),
        "3.5.1 never writes clientURLs to bbolt"
    );
    assert_eq!(
        etcd::read_removed_members(&db).unwrap(),
        [0x4c68273943f4bb00]
    );
    assert_eq!(
        etcd::read_cluster(&db).unwrap().version.as_deref(),
        Some("3.5.0")
    );
    let auth = etcd::read_auth(&db).unwrap();
    assert_eq!((auth.enabled, auth.revision), (Some(false), Some(12)));
}

#[test]
fn etcd_3_5_snapshot_file_has_learner_in_conf_state() {
    let db = open("etcd-3.5.1/etcdctl-snapshot.db");
    db.verify_trailer().unwrap();
    let meta = etcd::read_meta(&db).unwrap();
    assert_eq!(meta.consistent_index, Some(58));
    assert_eq!(meta.conf_state.unwrap().learners, [5505693671367162624]);
    assert_eq!(
        names(&live(&db)),
        ["/a/x", "/a/y", "ck", "f1", "final", "foo"]
    );
}

#[test]
fn multipage_db_live_keys_cover_branch_and_overflow_pages() {
    let db = open("etcd-3.5.1/bbolt-multipage/db");
    assert_eq!(
        (
            db.meta().index,
            db.meta().txid,
            db.meta().root,
            db.meta().pgid
        ),
        (1, 15, 89, 101)
    );
    let key_bucket = db.bucket(b"key").unwrap().unwrap();
    assert_eq!(key_bucket.root, 88);
    assert!(!key_bucket.is_inline());

    let keys = live(&db);
    assert_eq!(keys.len(), 2002);
    // sorted by key: "bigvalue" < "k00000" < … < "k01999" < "zz-last"
    assert_eq!(keys[0].key, "bigvalue");
    assert_eq!(keys[0].value, vec![b'B'; 20000]);
    assert_eq!(keys[0].mod_revision, 22);
    for (i, k) in keys[1..2001].iter().enumerate() {
        assert_eq!(k.key, format!("k{i:05}").as_bytes());
        assert_eq!(k.value, vec![b'v'; 100]);
        let rev = 2 + (i / 100) as i64;
        assert_eq!(
            (k.create_revision, k.mod_revision, k.version),
            (rev, rev, 1)
        );
    }
    assert_eq!(keys[2001].key, "zz-last");

    let history: Vec<_> = etcd::key_history(&db)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(history.len(), 2002);
    assert_eq!(history[0].revision, Revision { main: 2, sub: 0 });
    assert_eq!(history[1999].revision, Revision { main: 21, sub: 99 });
    assert_eq!(history[2001].revision, Revision { main: 23, sub: 0 });

    assert_eq!(etcd::read_meta(&db).unwrap().consistent_index, Some(27));
    assert_eq!(etcd::read_auth(&db).unwrap().revision, Some(1));
}

#[test]
fn point_lookup_finds_every_revision_and_rejects_absent_keys() {
    let db = open("etcd-3.5.1/bbolt-multipage/db");
    let bucket = db.bucket(b"key").unwrap().unwrap();
    for entry in db.iter(&bucket) {
        let entry = entry.unwrap();
        assert_eq!(db.get(&bucket, &entry.key).unwrap(), Some(entry));
    }
    let absent = [
        Revision { main: 1, sub: 0 }.to_key().to_vec(),
        Revision { main: 2, sub: 100 }.to_key().to_vec(),
        Revision { main: 99, sub: 0 }.to_key().to_vec(),
        Vec::new(),
        vec![0xff; 40],
    ];
    for key in absent {
        assert_eq!(db.get(&bucket, &key).unwrap(), None, "{key:?}");
    }
    assert!(db.bucket(b"no-such-bucket").unwrap().is_none());
    assert!(db.bucket(b"").unwrap().is_none());
}

#[test]
fn summary_reports_headline_facts() {
    let db = open("etcd-3.4.23/data/member/snap/db");
    let s = etcd::summarize(&db).unwrap();
    assert_eq!(s.meta.consistent_index, Some(60));
    assert_eq!((s.auth.enabled, s.auth.revision), (Some(false), Some(12)));
    assert_eq!((s.history.revisions, s.history.live_keys), (21, 7));
    assert_eq!(
        (
            s.leases,
            s.users,
            s.roles,
            s.members,
            s.removed_members,
            s.alarms
        ),
        (1, 3, 1, 1, 1, 0)
    );
    assert_eq!(s.cluster_version.as_deref(), Some("3.4.0"));
    let names: Vec<&str> = s.buckets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "alarm",
            "auth",
            "authRoles",
            "authUsers",
            "cluster",
            "key",
            "lease",
            "members",
            "members_removed",
            "meta"
        ]
    );
    assert!(s.buckets.contains(&("key".to_owned(), 21)));

    let s = etcd::summarize(&open("etcd-3.5.1/bbolt-multipage/db")).unwrap();
    assert_eq!(s.history.revisions, 2002);
    assert_eq!(s.meta.consistent_index, Some(27));
}

#[test]
fn revision_keys_round_trip_and_reject_bad_shapes() {
    let rev = Revision { main: 9, sub: 1 };
    let key = rev.to_key();
    assert_eq!(Revision::from_key(&key), Some((rev, false)));
    let mut tomb = key.to_vec();
    tomb.push(b't');
    assert_eq!(Revision::from_key(&tomb), Some((rev, true)));
    tomb[17] = b'x';
    assert_eq!(Revision::from_key(&tomb), None);
    let mut bad = key;
    bad[8] = b'-';
    assert_eq!(Revision::from_key(&bad), None);
    assert_eq!(Revision::from_key(&key[..16]), None);
    assert_eq!(rev.to_string(), "(9,1)");
}
