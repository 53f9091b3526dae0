#!/usr/bin/env bash
# Stopping (SPEC §5: SIGTERM drains in-flight applies and exits 0 within
# 10 s): the source transaction the writer is sending is finished and
# committed on the target before tandem exits; one that cannot finish in
# time rolls back and is applied once at the next start.
source "$(dirname "$0")/lib.sh"
pg_pair_table "id bigint primary key, v text"
psql_on B -c "alter table t add column applied int"
count_writes B t
pg_pg_config "$WORK/cfg.json" a_to_b t:id,v
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
psql_on A -c "insert into t values (1, 'one'), (2, 'two')"
rows_on_b() { [ "$(psql_on B -c 'select count(*) from t')" = "$1" ]; }
wait_for "rows on B" 30 rows_on_b 2

# Row 1 locked on B: the writer's next transaction waits in the middle.
hold_row_lock B t 1
psql_on A -c "begin; update t set v = 'one, drained' where id = 1;
              insert into t select g, 'new' from generate_series(3, 1000) g; commit;"
journaled() { [ "$(sq "select count(*) from journal_txn where endpoint = 'A' and commit_seq is not null")" -ge 2 ]; }
wait_for "the transaction journaled" 30 journaled
sleep 0.5
kill -TERM $TANDEM_PID
sleep 1
check "still finishing the transaction after SIGTERM" kill -0 $TANDEM_PID
release_row_lock
t0=$(date +%s)
wait $TANDEM_PID; rc=$?
expect_eq "exit 0 after draining" 0 "$rc"
check "stopped within 10 s" [ $(( $(date +%s) - t0 )) -le 10 ]
expect_eq "the transaction in flight was committed on B before the exit" "998 one, drained" \
  "$(psql_on B -c "select count(*) filter (where id >= 3), max(v) filter (where id = 1) from t" | tr '|' ' ')"
check "no rollback at the stop" bash -c "! grep -q 'stopping: the target transaction' '$WORK/tandem.log'"
expect_eq "its position was saved before the exit" \
  "$(sq "select max(commit_seq) from journal_txn where endpoint = 'A'")" "$(sq "select commit_seq from applied where target = 'B'")"

# Held past the drain's limit: tandem stops anyway. Its COMMIT was sent,
# so the target may still run it when the lock goes; either way the
# update is applied exactly once (origin progress).
start_tandem "$WORK/cfg.json" "$WORK/tandem2.log"
wait_for "tandem ready again" 30 grep -q '"msg":"ready' "$WORK/tandem2.log"
hold_row_lock B t 2
psql_on A -c "update t set v = 'two, later' where id = 2"
journaled2() { [ "$(sq "select count(*) from journal_txn where endpoint = 'A' and commit_seq is not null")" -ge 3 ]; }
wait_for "the update journaled" 30 journaled2
sleep 0.5
t0=$(date +%s)
kill -TERM $TANDEM_PID
wait $TANDEM_PID; rc=$?
expect_eq "exit 0 after giving up the drain" 0 "$rc"
check "gave up within 10 s" [ $(( $(date +%s) - t0 )) -le 10 ]
check "giving up is logged" grep -q 'did not commit in time' "$WORK/tandem2.log"
release_row_lock
start_tandem "$WORK/cfg.json" "$WORK/tandem3.log"
later() { [ "$(psql_on B -c 'select v from t where id = 2')" = "two, later" ]; }
check "applied at the next start" wait_for "row 2 updated" 30 later
expect_eq "every row written once per change" "1 2 2 998" \
  "$(psql_on B -c "select min(applied), max(applied) filter (where id = 1), max(applied) filter (where id = 2), count(*) filter (where applied = 1) from t" | tr '|' ' ')"
finish
