#!/usr/bin/env bash
# reconcile (issue 7): drift created behind tandem's back (while it is
# stopped, written under each endpoint's own replication origin so its
# readers skip it) is found exactly, --json/-m/--limit, --repair through
# the resolver and the journal (with the daemon, and inline without it),
# in-flight changes are not drift, a 200k-row table is compared in
# bounded memory, and an unreachable side exits 1.
source "$(dirname "$0")/lib.sh"
pg_start A
pg_start B
HTTP_PORT=$(free_port)
psql_on A -c "create table t (id bigint primary key, v text, n numeric(10,2)); alter table t replica identity full"
# Side b keeps n unconstrained: 15.0 there equals 15.00 on a.
psql_on B -c "create table t (id bigint primary key, v text, n numeric); alter table t replica identity full"
# big: n is text on a and numeric on b, so every bucket's hash differs
# (numeric is normalised on b only) and all 200k rows are compared one by
# one, without a single false difference.
psql_on A -c "create table big (id bigint primary key, v text, n text); alter table big replica identity full"
psql_on B -c "create table big (id bigint primary key, v text, n numeric); alter table big replica identity full"
pg_pg_config "$WORK/cfg.json" both t:id,v,n big:id,v,n
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

psql_on A -c "insert into t select g, 'v' || g, g / 4.0 from generate_series(1, 1000) g"
rows_b() { [ "$(psql_on B -c "select count(*) from t")" = "$1" ]; }
wait_for "1000 rows on B" 60 rows_b 1000

# rec ARGS...: runs reconcile; RC, output in rec.out / rec.err.
rec() {
  set +e
  "$TANDEM" reconcile -c "$WORK/cfg.json" "$@" >"$WORK/rec.out" 2>"$WORK/rec.err"
  RC=$?
  set -e
}
HAVE_JQ=0; command -v jq >/dev/null && HAVE_JQ=1
jqv() { jq -r "$1" "$WORK/rec.out"; }

rec -m t
expect_eq "in sync: exit 0" 0 $RC
check "in sync: says no drift" grep -q "^  no drift" "$WORK/rec.out"
check "in sync: 1000 same" grep -q "same 1000, only_a 0, only_b 0, different 0, stale 0" "$WORK/rec.out"
rec -m t --json
expect_eq "in sync --json: exit 0" 0 $RC
if [ $HAVE_JQ = 1 ]; then
  expect_eq "--json: daemon seen running" true "$(jqv .daemon_running)"
  expect_eq "--json: drift false" false "$(jqv .drift)"
  expect_eq "--json: one mapping with -m" "t" "$(jqv '[.mappings[].mapping] | join(",")')"
  expect_eq "--json: counts" "1000 1000" "$(jqv '.mappings[0] | "\(.a.count) \(.b.count)"')"
fi

# ---- drift behind tandem's back ----
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
# behind DB SQL...: runs SQL on DB under the endpoint's own origin: its
# reader skips those transactions as if tandem had written them.
behind() {
  local db=$1; shift
  psql_on "$db" -c "select pg_replication_origin_session_setup('tandem_${db,,}')" "$@" >/dev/null
}
behind A -c "insert into t values (2001, 'new a', 1), (2002, 'new a', 2), (2003, 'new a', 3)" \
         -c "update t set v = 'changed on a' where id in (10, 11)" \
         -c "delete from t where id = 20"
behind B -c "insert into t values (3001, 'new b', 1)" \
         -c "delete from t where id in (30, 31)" \
         -c "update t set n = 15.0 where id = 60" \
         -c "update t set v = 'restored from an old backup' where id = 80"
# Key 80 on b now holds a version older than the one both sides agreed
# on (as after a restore): the shadow says b's version is in the future.
sqlite3 "$WORK/state.db" "update shadow set version_b_us = (strftime('%s','now') + 3600) * 1000000 where mapping = 't' and key = '[\"80\"]'"

rec -m t
expect_eq "drift: exit 3" 3 $RC
check "drift: exact counts per class" grep -q "same 994, only_a 5, only_b 2, different 2, stale 1" "$WORK/rec.out"
check "drift: record counts" grep -q "(1002 records) vs public.t on B (999 records)" "$WORK/rec.out"
for k in 2001 2002 2003 30 31; do check "only_a lists $k" grep -q "only_a  *\[\"$k\"\]" "$WORK/rec.out"; done
for k in 20 3001; do check "only_b lists $k" grep -q "only_b  *\[\"$k\"\]" "$WORK/rec.out"; done
check "different lists 10 with the field values" grep -q "different  *\[\"10\"\]  v: a \"changed on a\" | b \"v10\"" "$WORK/rec.out"
check "stale lists 80 (side b)" grep -q "stale (b)  *\[\"80\"\]" "$WORK/rec.out"
check "15.0 equals 15.00: key 60 is not listed" bash -c "! grep -q '\[\"60\"\]' '$WORK/rec.out'"
check "says drift" grep -q "^  drift" "$WORK/rec.out"
rec --json --limit 3
expect_eq "--json --limit: exit 3" 3 $RC
if [ $HAVE_JQ = 1 ]; then
  expect_eq "--json: both mappings without -m" "t,big" "$(jqv '[.mappings[].mapping] | join(",")')"
  expect_eq "--json: classes" "994 5 2 2 1" "$(jqv '.mappings[0].classes | "\(.same) \(.only_a) \(.only_b) \(.different) \(.stale)"')"
  expect_eq "--json: total differences" 10 "$(jqv '.mappings[0].differences_total')"
  expect_eq "--json: --limit 3 lists 3" 3 "$(jqv '.mappings[0].differences | length')"
  expect_eq "--json: key order" '["10"] ["11"] ["20"]' "$(jqv '[.mappings[0].differences[].key | tojson] | join(" ")')"
  expect_eq "--json: differing fields only" '{"v":"changed on a"} {"v":"v10"} ["v"]' \
    "$(jqv '.mappings[0].differences[0] | "\(.a | tojson) \(.b | tojson) \(.fields | tojson)"')"
  expect_eq "--json: drift true" true "$(jqv .drift)"
  expect_eq "--json: no daemon" false "$(jqv .daemon_running)"
  check "--json: buckets narrowed the row compare" test "$(jqv '.mappings[0].method.buckets_differing')" -le 10
  expect_eq "--json: big is empty and equal" 0 "$(jqv '.mappings[1].differences_total')"
fi
rec -m t --limit 2
check "--limit 2 in text" grep -q "differences (first 2 of 10)" "$WORK/rec.out"
rec -m nope
expect_eq "unknown mapping: exit 2" 2 $RC
check "unknown mapping named" grep -q "no mapping named nope" "$WORK/rec.err"

# ---- repair with the daemon running ----
start_tandem "$WORK/cfg.json" "$WORK/tandem2.log"
wait_for "tandem ready again" 30 grep -q '"msg":"ready' "$WORK/tandem2.log"
# The drift the hand-run reconciles above found (no periodic reconcile is
# configured) reaches the daemon's /healthz and metrics through the state.
drifting() { curl -s "http://127.0.0.1:$HTTP_PORT/healthz" | grep -q '"drift"'; }
check "healthz reports the drift a hand-run reconcile found" wait_for "drift health" 10 drifting
different=$(curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | sed -n 's/^tandem_reconcile_drift{mapping="t",kind="different"} //p')
check "tandem_reconcile_drift from it (${different:-none})" test "${different:-0}" -ge 1
before=$(sq "select coalesce(max(id), 0) from conflicts")
rec -m t --repair
expect_eq "repair with the daemon: exit 0" 0 $RC
no_drift() { ! drifting; }
check "healthz clears once a reconcile finds none" wait_for "drift cleared" 10 no_drift
check "repair: applied by the daemon" grep -q "applied by the running daemon" "$WORK/rec.out"
check "repair: no drift after" grep -q "^  no drift" "$WORK/rec.out"
expect_eq "repair: one conflict per key, rule reconcile" 10 \
  "$(sq "select count(distinct key) from conflicts where id > $before and mapping = 't' and rule like 'reconcile:%'")"
expect_eq "repair: stale key decided by the stale rule" 1 \
  "$(sq "select count(*) from conflicts where id > $before and key = '[\"80\"]' and rule like 'reconcile: stale%'")"
expect_eq "repair: a's insert reached b" "new a" "$(psql_on B -c 'select v from t where id = 2002')"
expect_eq "repair: a's update reached b" "changed on a" "$(psql_on B -c 'select v from t where id = 10')"
expect_eq "repair: a's delete (b unchanged) reached b" 0 "$(psql_on B -c 'select count(*) from t where id = 20')"
expect_eq "repair: b's insert reached a" "new b" "$(psql_on A -c 'select v from t where id = 3001')"
expect_eq "repair: b's deletes reached a" 0 "$(psql_on A -c 'select count(*) from t where id in (30, 31)')"
expect_eq "repair: stale b lost" "v80" "$(psql_on B -c 'select v from t where id = 80')"
expect_eq "repair: identical (id, v)" "$(table_md5 A t id,v)" "$(table_md5 B t id,v)"
rec -m t
expect_eq "second reconcile: exit 0" 0 $RC

# ---- in-flight changes are not drift ----
burst() {
  for i in $(seq 0 19); do
    psql_on A -c "update t set v = 'burst $i' where id between $((i * 40 + 100)) and $((i * 40 + 139))" >/dev/null
    sleep 0.05
  done
}
burst & BW=$!
sleep 0.3
rec -m t --json
wait $BW
expect_eq "reconcile during a burst of changes: no drift" 0 $RC
[ $HAVE_JQ = 1 ] && echo "# burst: in flight $(jqv '.mappings[0].in_flight | tojson')"
# Deterministic: b's table is locked against writes for 4 s, so 100
# changes are journaled but cannot be applied when reconcile first looks.
psql_on B -c "begin" -c "lock table t in exclusive mode" -c "select pg_sleep(4)" -c "commit" >/dev/null & LW=$!
sleep 0.5
psql_on A -c "update t set v = 'in flight' where id between 500 and 599"
rec -m t --json
wait $LW
expect_eq "journaled, not yet applied changes: no drift" 0 $RC
if [ $HAVE_JQ = 1 ]; then
  expect_eq "the 100 were re-checked after the journal drained" "100 true" \
    "$(jqv '.mappings[0].in_flight | "\(.resolved) \(.recheck_rounds >= 1)"')"
fi
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true

# ---- 200k rows, one different, compared row by row in bounded memory ----
behind A -c "insert into big select g, 'row ' || g, ((g % 1000)::numeric / 4)::text from generate_series(1, 200000) g"
behind B -c "insert into big select g, 'row ' || g, (g % 1000)::numeric / 4 from generate_series(1, 200000) g"
behind B -c "update big set v = 'changed' where id = 123456"
psql_on A -c "analyze big" >/dev/null
psql_on B -c "analyze big" >/dev/null
start=$(date +%s.%N)
set +e
# A small ASan quarantine, so the RSS printed means something under sanitizers.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=4" \
  /usr/bin/time -f "%M" -o "$WORK/rss.txt" "$TANDEM" reconcile -c "$WORK/cfg.json" -m big --json >"$WORK/rec.out" 2>"$WORK/rec.err"
RC=$?
set -e
end=$(date +%s.%N)
expect_eq "big: exit 3" 3 $RC
echo "# big: 200000 rows compared in $(awk "BEGIN { printf \"%.2f\", $end - $start }") s, max RSS $(tail -1 "$WORK/rss.txt") KiB"
if [ $HAVE_JQ = 1 ]; then
  expect_eq "big: exact classes" "199999 0 0 1 0" "$(jqv '.mappings[0].classes | "\(.same) \(.only_a) \(.only_b) \(.different) \(.stale)"')"
  expect_eq "big: the changed key" '["123456"]' "$(jqv '.mappings[0].differences[0].key | tojson')"
  expect_eq "big: every row streamed (no false difference)" "200000 200000" \
    "$(jqv '.mappings[0].method | "\(.rows_streamed_a) \(.rows_streamed_b)"')"
fi

# ---- repair without a daemon: applied inline ----
before=$(sq "select coalesce(max(id), 0) from conflicts")
rec -m big --repair
expect_eq "inline repair: exit 0" 0 $RC
check "inline repair: applied by this command" grep -q "applied by this command" "$WORK/rec.out"
expect_eq "inline repair: b's later change won" "changed" "$(psql_on A -c 'select v from big where id = 123456')"
expect_eq "inline repair: conflict recorded" 1 \
  "$(sq "select count(*) from conflicts where id > $before and mapping = 'big' and rule like 'reconcile:%'")"
rec -m big
expect_eq "after inline repair: exit 0" 0 $RC

# ---- a side that cannot be reached ----
pg_stop B
rec -m t
expect_eq "unreachable side: exit 1" 1 $RC
check "unreachable side named" grep -q "endpoint B" "$WORK/rec.err"
finish
