#!/usr/bin/env bash
# Backfill of a mapping added to a running pipeline (issue 7, the existing
# slot case): its rows are copied in key-ordered chunks between watermark
# messages written into the source's stream, while writers keep changing
# them; streaming never pauses, nothing is lost or applied twice.
source "$(dirname "$0")/lib.sh"
pg_start A
pg_start B
for db in A B; do
  psql_on $db -c "create table t (id bigint primary key, v text, n int); alter table t replica identity full;
                  create table other (id bigint primary key, v text); alter table other replica identity full"
done
psql_on A -c "insert into t select g, 'row ' || g, 0 from generate_series(1, 5000) g"
psql_on B -c "insert into t select g, 'row ' || g, 0 from generate_series(1, 300) g;
              insert into t values (900001, 'only on B', 0)"
pg_pg_config "$WORK/cfg1.json" a_to_b other:id,v
pg_pg_config "$WORK/cfg2.json" a_to_b other:id,v t:id,v,n
start_tandem "$WORK/cfg1.json" "$WORK/tandem1.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem1.log"
psql_on A -c "insert into other values (1, 'x')"
wait_for "other syncs" 20 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from other') = 1 ]"
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true

# The mapping is added; a writer changes its rows all through the backfill
# (until told to stop), so its commits land inside the chunks' windows.
writer() {
  local r=0
  while [ ! -e "$WORK/stop" ]; do
    r=$((r + 1))
    psql_retry A -c "update t set n = n + 1 where id % 7 = 0; insert into t values ($((10000 + r)), 'new', 0)" >/dev/null
  done
  echo "$r" >"$WORK/rounds"
}
start_tandem "$WORK/cfg2.json" "$WORK/tandem2.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem2.log"
writer & WR=$!
check "the new mapping is backfilled" wait_for "backfill done" 90 grep -q '"msg":"backfill done"' "$WORK/tandem2.log"
touch "$WORK/stop"
wait $WR
K=$(cat "$WORK/rounds")
same() { [ "$(table_md5 A t)" = "$(psql_on B -c "select md5(coalesce(string_agg(r::text, '|' order by r.id), '')) from (select * from t where id < 900000) r")" ]; }
wait_for "both sides equal" 60 same
expect_eq "every row of A on B" "$((5000 + K))" "$(psql_on B -c 'select count(*) from t where id < 900000')"
expect_eq "the writer's $K increments applied exactly once" "$K|$K" "$(psql_on B -c 'select min(n) || chr(124) || max(n) from t where id % 7 = 0 and id <= 5000')"
expect_eq "and only to its rows" "0" "$(psql_on B -c 'select max(n) from t where id % 7 <> 0')"
expect_eq "a row only on B is kept (one-way mapping)" 1 "$(psql_on B -c 'select count(*) from t where id = 900001')"
check "chunks were journaled between watermarks" grep -q '"msg":"backfill chunk journaled"' "$WORK/tandem2.log"
check "rows changed inside a window were left to the stream" \
  bash -c "grep '\"msg\":\"backfill' '$WORK/tandem2.log' | grep -qv '\"changed_in_window\":\"0\"'"
expect_eq "the request is closed" "done" "$(sq "select v from meta where k = 'backfill:t:a'")"
"$TANDEM" status -c "$WORK/cfg2.json" >"$WORK/status.out"
check "status shows the backfill" grep -q "^backfill:  t:a done" "$WORK/status.out"
"$TANDEM" status --json -c "$WORK/cfg2.json" >"$WORK/status.json"
expect_eq "status --json shows it" '"done"' "$(jq -c '.backfills["t:a"]' "$WORK/status.json")"
expect_eq "nothing dead-lettered" 0 "$(sq "select count(*) from dlq")"

# snapshot on a streaming mapping asks the running daemon for a backfill.
psql_on B -c "delete from t where id between 2000 and 2100"
"$TANDEM" snapshot -c "$WORK/cfg2.json" -m t >"$WORK/snap.out" 2>&1
check "snapshot of a streaming mapping requests a backfill" grep -q "backfill requested" "$WORK/snap.out"
wait_for "rows lost on B come back" 60 same
expect_eq "rows deleted behind tandem's back are back" 101 "$(psql_on B -c 'select count(*) from t where id between 2000 and 2100')"
kill -TERM $TANDEM_PID
set +e; wait $TANDEM_PID; rc=$?; set -e
expect_eq "clean stop" 0 $rc
"$TANDEM" teardown -c "$WORK/cfg2.json" >"$WORK/teardown.out" 2>&1
check "teardown of a one-way pipeline prints no raw server NOTICE" bash -c "! grep -q NOTICE '$WORK/teardown.out'"
expect_eq "teardown dropped the slot" 0 "$(psql_on A -c "select count(*) from pg_replication_slots")"
finish
