#!/usr/bin/env bash
# PostgreSQL capture (issue 3): every committed change reaches the journal
# exactly once, in commit order, through kill -9 of tandem and a restart of
# PostgreSQL; TOAST, ALTER TABLE, truncate and the echo filter.
source "$(dirname "$0")/lib.sh"
BIG_TXN_ROWS=${BIG_TXN_ROWS:-1000000}

pg_start A
pg_start B
HTTP_PORT=$(free_port)
for db in A B; do
  psql_on $db -c "create table t (id bigint primary key, v text, big text, w int, n numeric(20,6));
                  create table u (id bigint primary key, v text);"
done
psql_on A -c "alter table t drop column w"           # added back mid-stream
psql_on A -c "alter table t replica identity full"
pg_pg_config "$WORK/cfg.json" a_to_b t:id,v,big,w,n u:id,v

"$TANDEM" setup -c "$WORK/cfg.json" >"$WORK/setup.out"
check "setup creates the slot" bash -c "psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c \"select count(*) from pg_replication_slots where slot_name='tandem_a'\" | grep -qx 1"
"$TANDEM" setup -c "$WORK/cfg.json" >/dev/null
check "setup is idempotent" test $? -eq 0
"$TANDEM" check -c "$WORK/cfg.json" >"$WORK/check.out" || true
check "check reports wal_level" grep -q "ok   A: wal_level" "$WORK/check.out"
check "check warns on DEFAULT replica identity" grep -q "warn A: table public.u.*replica identity DEFAULT" "$WORK/check.out"

start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

# Workload with kill -9 at random moments (in the background).
(
  for i in $(seq 1 300); do
    psql_on A -c "insert into t (id, v, n) select g, 'v'||g, g * 1.5 from generate_series($((i*100)), $((i*100+99))) g" >/dev/null
    psql_on A -c "update t set v = v || '+' where id % 7 = 0 and id between $((i*100)) and $((i*100+99))" >/dev/null
    psql_on A -c "delete from t where id % 13 = 0 and id between $((i*100)) and $((i*100+99))" >/dev/null
    psql_on A -c "insert into u values ($i, 'u$i')" >/dev/null
  done
) &
LOAD=$!
for k in 1 2 3 4 5; do
  sleep $(( (RANDOM % 3) + 1 ))
  kill -9 $TANDEM_PID; wait $TANDEM_PID 2>/dev/null || true
  start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
done
wait $LOAD
psql_on A -c "truncate u"
psql_on A -c "insert into u values (1, 'after truncate')"

# A big transaction, then PostgreSQL restarted under tandem.
psql_on A -c "insert into t (id, v) select g, 'big'||g from generate_series(10000000, $((10000000 + BIG_TXN_ROWS - 1))) g"
pg_stop A; sleep 1; pg_restart_cluster A
psql_on A -c "insert into t (id, v) values (-1, 'after restart')"

# TOAST: a large out-of-line value, then an update of another column.
psql_on A -c "insert into t (id, v, big) select -2, 'toast', string_agg(md5(g::text), '') from generate_series(1, 40000) g"
psql_on A -c "update t set v = 'toast2' where id = -2"
# A source transaction under the endpoint's own origin is never journaled.
psql_on A -c "select pg_replication_origin_session_setup('tandem_a');
              insert into u values (999999, 'echo');" >/dev/null
# ALTER TABLE mid-stream: later rows carry the new column.
psql_on A -c "alter table t add column w int"
psql_on A -c "insert into t (id, v, w) values (-3, 'with w', 42)"

expected_end=$(psql_on A -c "select pg_current_wal_lsn()")
wait_for "journal has the last row" 300 bash -c "sqlite3 -readonly '$WORK/state.db' \"select 1 from journal_change where key = '[\\\"-3\\\"]'\" | grep -q 1"
echo_counted() { curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | grep -q '^tandem_echo_suppressed_total{endpoint="A"} [1-9]'; }
check "echo skip counted" wait_for "echo metric" 10 echo_counted
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true

# Exactly once: compare with what the source committed.
ins_src=$((300 * 100 + BIG_TXN_ROWS + 3))
expect_eq "every insert journaled once" "$ins_src" "$(sq "select count(*) from journal_change where mapping='t' and op='I'")"
upd_src=$(( 30099 / 7 - 99 / 7 + 1 ))   # multiples of 7 in the ranges, plus the TOAST update
expect_eq "every update journaled once" "$upd_src" "$(sq "select count(*) from journal_change where mapping='t' and op='U'")"
del_src=$(( 30099 / 13 - 99 / 13 ))
expect_eq "every delete journaled once" "$del_src" "$(sq "select count(*) from journal_change where mapping='t' and op='D'")"
expect_eq "no change journaled twice" 0 "$(sq "select count(*) from (select mapping, key, op, fields, count(*) c from journal_change where mapping='u' group by 1,2,3,4 having c > 1)")"
expect_eq "no source transaction journaled twice" 0 "$(sq "select count(*) from (select commit_lsn from journal_txn group by commit_lsn having count(*) > 1)")"
expect_eq "journal in source commit order" 0 "$(sq "select count(*) from journal_txn a join journal_txn b on b.commit_seq = a.commit_seq + 1 where a.endpoint = b.endpoint and b.commit_lsn <= a.commit_lsn")"
expect_eq "truncate journaled" 1 "$(sq "select count(*) from journal_change where mapping='u' and op='T'")"
expect_eq "origin transaction not journaled" 0 "$(sq "select count(*) from journal_change where key='[\"999999\"]'")"
unch=$(sq "select unchanged from journal_change where key='[\"-2\"]' and op='U'")
expect_eq "unchanged TOAST carried as unchanged" '["big"]' "$unch"
check "unchanged TOAST not journaled as NULL" bash -c "! sqlite3 -readonly '$WORK/state.db' \"select fields from journal_change where key='[\\\"-2\\\"]' and op='U'\" | grep -q '\"big\":null'"
check "row after ALTER carries the new column" bash -c "sqlite3 -readonly '$WORK/state.db' \"select fields from journal_change where key='[\\\"-3\\\"]'\" | grep -q '\"w\":\"42\"'"
check "numeric keeps its text form" bash -c "sqlite3 -readonly '$WORK/state.db' \"select fields from journal_change where key='[\\\"100\\\"]' and op='I'\" | grep -q '\"n\":\"150.000000\"'"
check "reconnect after PostgreSQL restart logged" grep -q 'retry' "$WORK/tandem.log"
# The slot only ever advanced past journaled data: restart and see nothing new.
before=$(sq "select count(*) from journal_change")
start_tandem "$WORK/cfg.json" "$WORK/tandem2.log"
wait_for "tandem ready again" 30 grep -q '"msg":"ready' "$WORK/tandem2.log"
sleep 2
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
expect_eq "restart journals nothing twice" "$before" "$(sq "select count(*) from journal_change")"
status=$("$TANDEM" status -c "$WORK/cfg.json" --json)
check "status shows the endpoint's journaled transactions" bash -c "echo '$status' | grep -q journaled_txns"
finish
