#!/bin/bash
# Revision-preserving mode experiments against etcd 3.4.23 and 3.5.1 (loopback 127.0.0.77, ports 23800-23999).
# Self-contained: writes its helper files into /tmp/revexp, then runs experiments A/C/D (expA.sh),
# B (expB.sh) and the tombstone+compaction restore edge case (expE.sh) for both versions.
# Every etcd started is recorded in /tmp/revexp/pids and stopped by PID inside the scripts.
# Output: /tmp/revexp/results.txt
# Run from anywhere: ROOT is the repository (its .tools/ holds etcd, see `cargo xtask install-etcd`).
export ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
set -u
mkdir -p /tmp/revexp/v34 /tmp/revexp/v35 && cd /tmp/revexp

cat > /tmp/revexp/lib.sh <<'__REVEXP_EOF__'
# helpers; source with V=34 or V=35
set -u
export ETCDCTL_API=3
case "$V" in
  34) BIN=$ROOT/.tools/etcd-3.4.23; BASE=23800;;
  35) BIN=$ROOT/.tools/etcd-3.5.1;  BASE=23900;;
esac
IP=127.0.0.77
R=/tmp/revexp/v$V
mkdir -p $R/logs
PIDS=/tmp/revexp/pids
# start_etcd NAME DATADIR CPORT PPORT INITIAL_CLUSTER TOKEN STATE [extra...]
start_etcd() {
  local n=$1 d=$2 c=$3 p=$4 ic=$5 tok=$6 st=$7; shift 7
  $BIN/etcd --name $n --data-dir $d \
    --listen-client-urls http://$IP:$c --advertise-client-urls http://$IP:$c \
    --listen-peer-urls http://$IP:$p --initial-advertise-peer-urls http://$IP:$p \
    --initial-cluster "$ic" --initial-cluster-token $tok --initial-cluster-state $st \
    --listen-metrics-urls "" "$@" >>$R/logs/$n.log 2>&1 &
  local pid=$!
  echo "$pid v$V $n" >> $PIDS
  eval "PID_$n=$pid"
  echo "started $n pid=$pid"
}
wait_up() { # wait_up CPORT
  for i in $(seq 1 60); do
    $BIN/etcdctl --endpoints=http://$IP:$1 endpoint health >/dev/null 2>&1 && return 0
    # auth-enabled clusters: health may fail without creds; status works if up
    $BIN/etcdctl --endpoints=http://$IP:$1 --user root:rootpw endpoint health >/dev/null 2>&1 && return 0
    sleep 0.5
  done; echo "TIMEOUT waiting for $1"; return 1
}
stop_pid() { kill "$1" 2>/dev/null; for i in $(seq 1 40); do kill -0 "$1" 2>/dev/null || { echo "stopped $1"; return 0; }; sleep 0.25; done; echo "pid $1 still alive"; }
# ctl PORT[,PORT...] args...
ctl() { local c=$1; shift; local eps=$(echo $c | tr ',' '\n' | sed "s|^|http://$IP:|" | paste -sd,); $BIN/etcdctl --endpoints=$eps "$@"; }
hrev() { ctl "$@" -w json | jq -c '.header.revision'; }
# run etcdctl with -w json; on error print only the final "Error:" line
jrun() { local mode=$1; shift; local out; if out=$("$@" -w json 2>/tmp/revexp/err); then echo "$out" | python3 /tmp/revexp/pj.py $mode; else echo "ERR: $(grep -v '"level"' /tmp/revexp/err | tail -1)"; fi; }
run() { "$@" 2>/tmp/revexp/err; local rc=$?; [ $rc -ne 0 ] && echo "ERR(rc=$rc): $(grep -v '"level"' /tmp/revexp/err | tail -1)"; return 0; }
kvs() { local c=$1; shift; jrun kvs ctl $c "$@"; }
status() { local c=$1; shift; jrun status ctl $c "$@" endpoint status; }
hashkv() { local c=$1; shift; jrun hashkv ctl $c "$@" endpoint hashkv; }
members() { local c=$1; shift; jrun members ctl $c "$@" member list; }
say() { echo; echo "### $*"; }
__REVEXP_EOF__

cat > /tmp/revexp/bolt.py <<'__REVEXP_EOF__'
#!/usr/bin/env python3
"""Minimal read-only bbolt walker: prints selected keys of etcd's 'meta' bucket
(consistent_index, term, scheduledCompactRev, finishedCompactRev) and bucket key counts."""
import struct, sys
f = open(sys.argv[1], 'rb').read()
def meta(off):
    magic, ver, psz, flags, root, seq, freelist, pgid, txid = struct.unpack_from('<IIIIQQQQQ', f, off + 16)
    return dict(magic=magic, psz=psz, root=root, txid=txid)
m0 = meta(0); psz = m0['psz']; m1 = meta(psz)
m = max([x for x in (m0, m1) if x['magic'] == 0xED0CDAED], key=lambda x: x['txid'])
def page(pgid): return pgid * psz
def walk(buf, off, cb):
    # buf/off: page header location
    flags, count = struct.unpack_from('<HH', buf, off + 8)
    e = off + 16
    for i in range(count):
        if flags & 0x01:  # branch
            pos, ksz, pgid = struct.unpack_from('<IIQ', buf, e + i * 16)
            walk(f, page(pgid), cb)
        elif flags & 0x02:  # leaf
            fl, pos, ksz, vsz = struct.unpack_from('<IIII', buf, e + i * 16)
            a = e + i * 16 + pos
            cb(bytes(buf[a:a + ksz]), bytes(buf[a + ksz:a + ksz + vsz]), fl)
def bucket(val):
    root, seq = struct.unpack_from('<QQ', val, 0)
    out = []
    cb = lambda k, v, fl: out.append((k, v, fl))
    if root == 0: walk(val, 16, cb)  # inline bucket
    else: walk(f, page(root), cb)
    return out
top = []
walk(f, page(m['root']), lambda k, v, fl: top.append((k, v, fl)))
for name, val, fl in top:
    items = bucket(val)
    print(f"bucket {name.decode()}: {len(items)} keys")
    if name == b'meta':
        for k, v, _ in items:
            if len(v) == 8: print(f"  meta.{k.decode()} = {struct.unpack('>Q', v)[0]}")
            elif len(v) == 17: print(f"  meta.{k.decode()} = rev {struct.unpack('>Q', v[:8])[0]}")
            else: print(f"  meta.{k.decode()} = {v!r}")
    if name == b'members':
        for k, v, _ in items: print(f"  member {k.decode()} {v.decode(errors='replace')}")
__REVEXP_EOF__

cat > /tmp/revexp/pj.py <<'__REVEXP_EOF__'
#!/usr/bin/env python3
# exact-integer JSON summariser for etcdctl -w json output. usage: pj.py kvs|status|hashkv|hdr
import json, sys, base64
mode = sys.argv[1]; raw = sys.stdin.read()
try: d = json.loads(raw)
except Exception: print("NOT-JSON:", raw.strip()[:300]); sys.exit(0)
hx = lambda x: format(x, 'x') if isinstance(x, int) else x
b = lambda s: base64.b64decode(s).decode(errors='replace')
if mode == 'kvs':
    print("rev=%s" % d['header'].get('revision'), [dict(key=b(k['key']), create=k.get('create_revision'), mod=k.get('mod_revision'), ver=k.get('version'), lease=hx(k.get('lease', 0)), val=b(k.get('value', ''))) for k in d.get('kvs', [])])
elif mode == 'status':
    for e in d:
        s = e['Status']; h = s['header']
        print(dict(ep=e['Endpoint'], rev=h.get('revision'), cluster=hx(h['cluster_id']), member=hx(h['member_id']), leader=hx(s.get('leader')), raftIndex=s.get('raftIndex'), raftApplied=s.get('raftAppliedIndex'), term=s.get('raftTerm'), version=s.get('version')))
elif mode == 'hashkv':
    for e in d:
        h = e['HashKV']; print(dict(ep=e['Endpoint'], rev=h['header'].get('revision'), hash=h.get('hash'), compact_revision=h.get('compact_revision')))
elif mode == 'hdr':
    print("rev=%s" % d['header'].get('revision'))
elif mode == 'members':
    for m in d['members']: print(hx(m['ID']), m.get('name'), m.get('peerURLs'))
    print("cluster", hx(d['header']['cluster_id']))
__REVEXP_EOF__

cat > /tmp/revexp/expA.sh <<'__REVEXP_EOF__'
#!/bin/bash
# Experiments A, C, D. Usage: V=34|35 bash expA.sh
source /tmp/revexp/lib.sh
PC=$((BASE+1)); PP=$((BASE+2))      # primary
SC=$((BASE+11)); SP=$((BASE+12))    # restored 1-member standby
AU="--user root:rootpw"
rm -rf $R/primary $R/standby1 $R/m1 $R/m2 $R/m3 $R/ctlrestore $R/snap.db
say "A.1 primary v$V: writes, compaction, lease, auth"
start_etcd primary $R/primary $PC $PP primary=http://$IP:$PP tok-primary new; P1=$PID_primary
wait_up $PC
ctl $PC put a v1; ctl $PC put a v2; ctl $PC put a v3
ctl $PC put b x; ctl $PC del b
ctl $PC put c 1
CREV=$(hrev $PC get c); echo "compact at $CREV"
ctl $PC put a v4; ctl $PC put d 1
ctl $PC compaction $CREV
LID=$(ctl $PC lease grant 600 | awk '{print $2}'); echo "lease $LID"
ctl $PC put l1 x --lease=$LID; ctl $PC put l2 y --lease=$LID
ctl $PC user add root:rootpw; ctl $PC role add r1
ctl $PC role grant-permission r1 readwrite /foo/ --prefix=true
ctl $PC user add alice:alicepw; ctl $PC user grant-role alice r1
run ctl $PC auth enable
run ctl $PC --user alice:alicepw put /foo/x 1   # alice may write /foo/ -> bumps revision
say "A.2 primary state before snapshot"
status $PC $AU; members $PC $AU
for k in a b c d l1 l2 /foo/x; do echo "$k: $(kvs $PC $AU get $k)"; done
for rv in $((CREV-1)) $CREV; do echo "get a --rev=$rv: $(kvs $PC $AU get a --rev=$rv)"; done
run ctl $PC $AU lease list; run ctl $PC $AU lease timetolive $LID --keys
echo "no-user get: $(run ctl $PC get a)"
[ "$V" = 35 ] && run ctl $PC $AU auth status
run ctl $PC $AU user list; run ctl $PC $AU role get r1; run ctl $PC $AU user get alice
PREV=$(hrev $PC $AU get a); echo "primary rev=$PREV"
echo "sleep 20s so that the lease's remaining TTL visibly drops before the snapshot"; sleep 20
run ctl $PC $AU lease timetolive $LID --keys
echo "hashkv(cur):"; hashkv $PC $AU
echo "hashkv(--rev=$((PREV-1))):"; hashkv $PC $AU --rev=$((PREV-1))
ctl $PC $AU snapshot save $R/snap.db 2>&1 | grep -v '"level"'
stop_pid $P1
echo "primary db (bbolt):"; python3 /tmp/revexp/bolt.py $R/primary/member/snap/db
echo "snapshot file (bbolt):"; python3 /tmp/revexp/bolt.py $R/snap.db
say "A.3 snapshot status"
echo "etcdctl: $(run ctl $PC snapshot status $R/snap.db -w json)"
[ -x $BIN/etcdutl ] && echo "etcdutl: $(run $BIN/etcdutl snapshot status $R/snap.db -w json)"

say "A.4 restore into 1-member cluster standby1 (new name, token tok-standby)"
RARGS="--name standby1 --data-dir $R/standby1 --initial-cluster standby1=http://$IP:$SP --initial-cluster-token tok-standby --initial-advertise-peer-urls http://$IP:$SP"
if [ "$V" = 35 ]; then
  $BIN/etcdutl snapshot restore $R/snap.db $RARGS 2>&1 | grep -v -P "\"level\":\"info\"|\tinfo\t" ; echo "etcdutl restore rc=${PIPESTATUS[0]}"
  echo "3.5 etcdctl snapshot restore (scratch dir):"
  ctl $SC snapshot restore $R/snap.db --name x --data-dir $R/ctlrestore --initial-cluster x=http://$IP:$SP --initial-advertise-peer-urls http://$IP:$SP 2>&1 | grep -v -P '"level":"info"|\tinfo\t'; echo "etcdctl restore rc=${PIPESTATUS[0]}"; ls $R/ctlrestore/member 2>&1
else
  ctl $SC snapshot restore $R/snap.db $RARGS 2>&1 | grep -v '"level":"info"'; echo "etcdctl restore rc=${PIPESTATUS[0]}"
fi
if [ "$V" = 35 ]; then
  start_etcd x $R/ctlrestore $SC $SP x=http://$IP:$SP etcd-cluster new; wait_up $SC
  echo "etcdctl-restored member starts: $(status $SC $AU)"; stop_pid $PID_x; rm -rf $R/ctlrestore
fi
echo "restored db before first start (bbolt):"; python3 /tmp/revexp/bolt.py $R/standby1/member/snap/db
ls -R $R/standby1/member | head -20
start_etcd standby1 $R/standby1 $SC $SP standby1=http://$IP:$SP tok-standby new; P2=$PID_standby1
wait_up $SC
say "A.5 restored standby state"
status $SC $AU; members $SC $AU
for k in a b c d l1 l2 /foo/x; do echo "$k: $(kvs $SC $AU get $k)"; done
for rv in $((CREV-1)) $CREV $((PREV-1)); do echo "get a --rev=$rv: $(kvs $SC $AU get a --rev=$rv)"; done
run ctl $SC $AU lease list; run ctl $SC $AU lease timetolive $LID --keys
echo "no-user get: $(run ctl $SC get a)"
echo "alice get /foo/x: $(run ctl $SC --user alice:alicepw get /foo/x)"
echo "alice get a (no perm): $(run ctl $SC --user alice:alicepw get a)"
[ "$V" = 35 ] && run ctl $SC $AU auth status
run ctl $SC $AU user list; run ctl $SC $AU role get r1; run ctl $SC $AU user get alice
echo "hashkv(cur):"; hashkv $SC $AU
echo "hashkv(--rev=$((PREV-1))):"; hashkv $SC $AU --rev=$((PREV-1))

say "D. standby txn: replayed put + dedicated marker key in one txn"
printf '\nput a v5\nput __standby/applied %s\n\n\n' $((PREV+1)) | jrun hdr ctl $SC $AU txn
echo "a: $(kvs $SC $AU get a)"; echo "marker: $(kvs $SC $AU get __standby/applied)"
echo "hashkv(cur):"; hashkv $SC $AU
echo "hashkv(--rev=$PREV):"; hashkv $SC $AU --rev=$PREV

say "C. compaction on standby"
echo "compaction $PREV: $(run ctl $SC $AU compaction $PREV)"
echo "get a --rev=$((PREV-1)): $(kvs $SC $AU get a --rev=$((PREV-1)))"
echo "get a --rev=$PREV: $(kvs $SC $AU get a --rev=$PREV)"
echo "hashkv(--rev=$PREV) after compaction $PREV:"; hashkv $SC $AU --rev=$PREV
echo "hashkv(--rev=$((PREV+1))) after compaction $PREV:"; hashkv $SC $AU --rev=$((PREV+1))
echo "compaction $((PREV+1)) (= current rev): $(run ctl $SC $AU compaction $((PREV+1)))"
echo "get a --rev=$PREV: $(kvs $SC $AU get a --rev=$PREV)"
echo "get a --rev=$((PREV+1)): $(kvs $SC $AU get a --rev=$((PREV+1)))"
echo "hashkv(cur) after compaction $((PREV+1)):"; hashkv $SC $AU
echo "compaction $((PREV+5)) (future): $(run ctl $SC $AU compaction $((PREV+5)))"
echo "compaction $PREV (already compacted): $(run ctl $SC $AU compaction $PREV)"
echo "compaction $((PREV+1)) again (== compact rev): $(run ctl $SC $AU compaction $((PREV+1)))"
status $SC $AU
stop_pid $P2
echo "standby db after run (bbolt):"; python3 /tmp/revexp/bolt.py $R/standby1/member/snap/db

say "D'. primary again: same put without marker, same compactions"
start_etcd primary $R/primary $PC $PP primary=http://$IP:$PP tok-primary new; P1=$PID_primary
wait_up $PC
echo "put a v5: $(jrun hdr ctl $PC $AU put a v5)"
echo "hashkv(cur):"; hashkv $PC $AU
echo "hashkv(--rev=$PREV):"; hashkv $PC $AU --rev=$PREV
echo "compaction $PREV: $(run ctl $PC $AU compaction $PREV)"
echo "hashkv(--rev=$PREV) after compaction $PREV:"; hashkv $PC $AU --rev=$PREV
echo "hashkv(--rev=$((PREV+1))) after compaction $PREV:"; hashkv $PC $AU --rev=$((PREV+1))
echo "compaction $((PREV+1)): $(run ctl $PC $AU compaction $((PREV+1)))"
echo "hashkv(cur) after compaction $((PREV+1)):"; hashkv $PC $AU
stop_pid $P1

say "A.6 restore into 3-member cluster"
IC="m1=http://$IP:$((BASE+22)),m2=http://$IP:$((BASE+24)),m3=http://$IP:$((BASE+26))"
for i in 1 2 3; do
  A="--name m$i --data-dir $R/m$i --initial-cluster $IC --initial-cluster-token tok-three --initial-advertise-peer-urls http://$IP:$((BASE+20+2*i))"
  if [ "$V" = 35 ]; then $BIN/etcdutl snapshot restore $R/snap.db $A >/dev/null 2>&1; else ctl $SC snapshot restore $R/snap.db $A >/dev/null 2>&1; fi; echo "restore m$i rc=$?"
done
for i in 1 2 3; do start_etcd m$i $R/m$i $((BASE+19+2*i)) $((BASE+20+2*i)) "$IC" tok-three new; done
M3="$((BASE+21)),$((BASE+23)),$((BASE+25))"
for p in $((BASE+21)) $((BASE+23)) $((BASE+25)); do wait_up $p; done
sleep 1
status $M3 $AU; members $((BASE+21)) $AU
hashkv $M3 $AU
echo "hashkv(--rev=$((PREV-1))):"; hashkv $M3 $AU --rev=$((PREV-1))
run ctl $((BASE+21)) $AU lease list
run ctl $((BASE+21)) $AU lease timetolive $LID --keys
echo "next write put z 1: $(jrun hdr ctl $M3 $AU put z 1)"
sleep 1
hashkv $M3 $AU
status $M3 $AU
for i in 1 2 3; do eval stop_pid \$PID_m$i; done
for i in 1 2 3; do echo "m$i db:"; python3 /tmp/revexp/bolt.py $R/m$i/member/snap/db | grep -E 'consistent|Compact|term'; done
__REVEXP_EOF__

cat > /tmp/revexp/expB.sh <<'__REVEXP_EOF__'
#!/bin/bash
# Experiment B: which requests bump the MVCC revision. Usage: V=34|35 bash expB.sh
source /tmp/revexp/lib.sh
C=$((BASE+31)); P=$((BASE+32))
rm -rf $R/b
start_etcd b $R/b $C $P b=http://$IP:$P tok-b new; PB=$PID_b
wait_up $C
AUTH=""
cur() { ctl $C $AUTH get __probe -w json 2>/dev/null | jq '.header.revision'; }
# step "description" command...   -> prints a table row: rev before, after, delta, output
step() { local d="$1"; shift; local b=$(cur); local out; out=$("$@" 2>&1 | grep -v '"level"' | tr '\n' ' ' | sed 's/|/\//g' | cut -c1-160); local a=$(cur); echo "| $d | $b | $a | $((a-b)) | $out |"; }
tx() { printf "$1" | ctl $C $AUTH txn; }
modrev() { ctl $C get "$1" -w json | python3 -c 'import json,sys; d=json.load(sys.stdin); print([(k.get("mod_revision"),k.get("version"),format(k.get("lease",0),"x")) for k in d.get("kvs",[])])'; }
echo "| request | rev before | rev after | delta | etcdctl output |"
echo "|---|---|---|---|---|"
step "put k1 v (new key)" ctl $C put k1 v
step "put k1 v (same key, same value)" ctl $C put k1 v
step "put k1 --ignore-value (existing key)" ctl $C put k1 --ignore-value
echo "k1 after ignore-value: $(ctl $C get k1 --print-value-only) modrev,ver,lease=$(modrev k1)"
step "put nokey --ignore-value (missing key)" ctl $C put nokey --ignore-value
L1=$(ctl $C lease grant 600 | awk '{print $2}')
step "put k1 v2 --lease=L1 (attach lease)" ctl $C put k1 v2 --lease=$L1
step "put k1 v3 --ignore-lease" ctl $C put k1 v3 --ignore-lease
echo "k1 after ignore-lease: $(ctl $C get k1 --print-value-only) modrev,ver,lease=$(modrev k1) (L1=$L1)"
step "put nolease --ignore-lease (missing key)" ctl $C put nolease v --ignore-lease
step "put k2 v --lease=1234abcd (no such lease)" ctl $C put k2 v --lease=1234abcd
step "del missing" ctl $C del missing
ctl $C put r/1 a >/dev/null; ctl $C put r/2 b >/dev/null; ctl $C put r/3 c >/dev/null
RB=$(cur)
step "del r/ --prefix (3 keys)" ctl $C del r/ --prefix
echo "watch --rev=$((RB+1)) r/ --prefix events: $(timeout 3 $BIN/etcdctl --endpoints=http://$IP:$C watch --rev=$((RB+1)) --prefix r/ -w json 2>/dev/null | python3 -c 'import json,sys,base64
for line in sys.stdin:
  line=line.strip()
  if not line: continue
  d=json.loads(line)
  for e in d.get("Events",[]): print({0:"PUT",1:"DELETE"}[e.get("type",0)], base64.b64decode(e["kv"]["key"]).decode(), "mod_revision", e["kv"].get("mod_revision"), end="; ")')"
echo "get r/1 --rev=$RB: $(ctl $C get r/1 --rev=$RB --print-value-only)   get r/1 --rev=$((RB+1)): '$(ctl $C get r/1 --rev=$((RB+1)) --print-value-only)'"
step "txn: empty (no compare, no ops)" tx '\n\n\n'
step "txn: success=[get k1] only" tx '\nget k1\n\n\n'
step "txn: compare fails, failure branch empty" tx 'value("k1") = "nope"\n\nput k3 x\n\n\n'
step "txn: compare fails, failure=[put k4]" tx 'value("k1") = "nope"\n\nput k3 x\n\nput k4 y\n\n'
step "txn: success=[put k5, del missing]" tx '\nput k5 x\ndel missing2\n\n\n'
step "txn: success=[del missing] only" tx '\ndel missing3\n\n\n'
step "txn: success=[put k6, del k6] (same key)" tx '\nput k6 x\ndel k6\n\n\n'
step "txn: success=[put k7 a, put k7 b] (same key)" tx '\nput k7 a\nput k7 b\n\n\n'
step "txn: success=[put k8, put k9, del k5]" tx '\nput k8 x\nput k9 y\ndel k5\n\n\n'
echo "k8/k9 modrev: $(modrev k8) $(modrev k9)"
# events PREFIX FROM_REV: the watch events under PREFIX from FROM_REV, one line
events() {
  timeout 3 $BIN/etcdctl --endpoints=http://$IP:$C watch --rev=$2 --prefix $1 -w json 2>/dev/null | python3 -c 'import json,sys,base64
for line in sys.stdin:
  line=line.strip()
  if not line: continue
  d=json.loads(line)
  for e in d.get("Events",[]): print({0:"PUT",1:"DELETE"}[e.get("type",0)], base64.b64decode(e["kv"]["key"]).decode(), "mod_revision", e["kv"].get("mod_revision"), end="; ")'
}
step "lease grant 600" ctl $C lease grant 600
L2=$(ctl $C lease grant 600 | awk '{print $2}')
step "lease revoke (lease with no keys)" ctl $C lease revoke $L2
L3=$(ctl $C lease grant 600 | awk '{print $2}')
ctl $C put q/1 a --lease=$L3 >/dev/null; ctl $C put q/2 b --lease=$L3 >/dev/null; ctl $C put q/3 c --lease=$L3 >/dev/null
RB=$(cur)
step "lease revoke (lease with 3 keys)" ctl $C lease revoke $L3
echo "watch --rev=$((RB+1)) q/ events: $(events q/ $((RB+1)))"
step "lease keep-alive --once (lease L1 with key k1)" ctl $C lease keep-alive --once $L1
L4=$(ctl $C lease grant 5 | awk '{print $2}')
ctl $C put e/1 a --lease=$L4 >/dev/null; ctl $C put e/2 b --lease=$L4 >/dev/null; ctl $C put e/3 c --lease=$L4 >/dev/null
RB=$(cur)
step "lease TTL=5 with 3 keys: wait 15s for expiry" sleep 15
echo "e/ keys left: '$(ctl $C get e/ --prefix --keys-only)'; timetolive: $(ctl $C lease timetolive $L4 2>&1 | grep -v level)"
echo "watch --rev=$((RB+1)) e/ events: $(events e/ $((RB+1)))"
step "lease TTL=5, no keys: wait 12s for expiry" bash -c "$BIN/etcdctl --endpoints=http://$IP:$C lease grant 5 && sleep 12"
CR=$(cur)
step "compaction $((CR-1))" ctl $C compaction $((CR-1))
step "compaction $((CR)) (= current)" ctl $C compaction $CR
step "user add root" ctl $C user add root:rootpw
step "user add u1" ctl $C user add u1:pw
step "role add rx" ctl $C role add rx
step "role grant-permission rx readwrite /x/ --prefix" ctl $C role grant-permission rx readwrite /x/ --prefix=true
step "user grant-role u1 rx" ctl $C user grant-role u1 rx
B0=$(cur); O=$(ctl $C auth enable 2>&1 | grep -v level); AUTH="--user root:rootpw"; A0=$(cur)
echo "| auth enable | $B0 | $A0 | $((A0-B0)) | $O |"
step "put k1 x (auth enabled, as root)" ctl $C $AUTH put k1 x
step "get k1 (as root; each --user call also does an Authenticate request)" ctl $C $AUTH get k1
step "auth disable (as root)" ctl $C --user root:rootpw auth disable
AUTH=""
step "alarm list" ctl $C alarm list
step "alarm disarm (no alarm active)" ctl $C alarm disarm
step "member list" ctl $C member list
step "defrag" ctl $C defrag
step "endpoint hashkv" ctl $C endpoint hashkv
step "move-leader to self (1 member)" ctl $C move-leader $(ctl $C endpoint status -w json | python3 -c 'import json,sys; print(format(json.load(sys.stdin)[0]["Status"]["header"]["member_id"],"x"))')
stop_pid $PB

echo; echo "### NOSPACE alarm (separate member, --quota-backend-bytes=262144)"
rm -rf $R/bq
start_etcd bq $R/bq $C $P bq=http://$IP:$P tok-bq new --quota-backend-bytes=262144; PQ=$PID_bq
wait_up $C
V10=$(head -c 10000 /dev/zero | tr '\0' x)
for i in $(seq 1 60); do o=$(ctl $C put big$i "$V10" 2>&1 | grep -v level); [ "$o" != OK ] && { echo "put big$i: $o"; break; }; done
echo "rev after alarm: $(cur)"; ctl $C alarm list 2>&1 | grep -v level
step "put while NOSPACE" ctl $C put k v
step "del big1 while NOSPACE" ctl $C del big1
step "compaction while NOSPACE" ctl $C compaction $(cur)
step "defrag" ctl $C defrag
step "alarm disarm" ctl $C alarm disarm
step "put after disarm" ctl $C put k v
stop_pid $PQ
__REVEXP_EOF__

cat > /tmp/revexp/expE.sh <<'__REVEXP_EOF__'
#!/bin/bash
# Edge case A.7: latest revision is a tombstone removed by compaction at the current revision; then snapshot+restore.
source /tmp/revexp/lib.sh
PC=$((BASE+1)); PP=$((BASE+2)); SC=$((BASE+11)); SP=$((BASE+12))
rm -rf $R/e1 $R/e2 $R/esnap.db
start_etcd e1 $R/e1 $PC $PP e1=http://$IP:$PP tok-e1 new; P1=$PID_e1; wait_up $PC
ctl $PC put a 1 >/dev/null; ctl $PC put b 1 >/dev/null; ctl $PC del b >/dev/null
REV=$(hrev $PC get a); echo "primary rev=$REV (rev $REV is the delete of b)"
echo "compaction $REV: $(run ctl $PC compaction $REV --physical)"
echo "primary after compaction: $(status $PC)"
ctl $PC snapshot save $R/esnap.db >/dev/null 2>&1
echo "snapshot status: $(run ctl $PC snapshot status $R/esnap.db -w json)"
stop_pid $P1
python3 /tmp/revexp/bolt.py $R/esnap.db | grep -E 'bucket key|Compact'
A="--name e2 --data-dir $R/e2 --initial-cluster e2=http://$IP:$SP --initial-cluster-token tok-e2 --initial-advertise-peer-urls http://$IP:$SP"
if [ "$V" = 35 ]; then $BIN/etcdutl snapshot restore $R/esnap.db $A >/dev/null 2>&1; else ctl $SC snapshot restore $R/esnap.db $A >/dev/null 2>&1; fi
start_etcd e2 $R/e2 $SC $SP e2=http://$IP:$SP tok-e2 new; P2=$PID_e2; wait_up $SC
echo "restored: $(status $SC)"; hashkv $SC
echo "next write: $(jrun hdr ctl $SC put c 1)"
stop_pid $P2
echo "endpoint hashkv flags: $($BIN/etcdctl endpoint hashkv --help 2>&1 | grep -E '^\s+--' | grep -v -E 'help' | head -5 | tr -s ' ' | tr '\n' ';')"
echo "put flags: $($BIN/etcdctl put --help 2>&1 | grep -E 'ignore|prev-kv|lease' | tr -s ' ' | tr '\n' ';')"
echo "compaction flags: $($BIN/etcdctl compaction --help 2>&1 | grep -E 'physical' | tr -s ' ')"
__REVEXP_EOF__

: > /tmp/revexp/results.txt
for v in 34 35; do
  for e in expA expB expE; do
    echo "======== $e v$v ========" | tee -a /tmp/revexp/results.txt
    V=$v bash /tmp/revexp/$e.sh 2>&1 | tee -a /tmp/revexp/results.txt
  done
done
# safety net: stop any etcd from our own pid list that is still alive (by PID only)
while read pid rest; do kill -0 "$pid" 2>/dev/null && grep -q revexp /proc/$pid/cmdline 2>/dev/null && { echo "stopping leftover $pid $rest"; kill "$pid"; }; done < /tmp/revexp/pids
