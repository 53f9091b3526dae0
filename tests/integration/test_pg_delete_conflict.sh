#!/usr/bin/env bash
# A delete on one side against an update of the same row on the other,
# PostgreSQL both ways (G5, G6, G7): the later of the two wins on both
# sides, whichever direction is applied first. A deleted row does not come
# back through an older update, and a newer update brings it back on the
# side that deleted it.
source "$(dirname "$0")/lib.sh"
pg_pair_table "id bigint primary key, v text, n int"
pg_pg_config "$WORK/cfg.json" both t:id,v,n
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
converged() { [ "$(table_md5 A t)" = "$(table_md5 B t)" ]; }
rows_on_b() { [ "$(psql_on B -c 'select count(*) from t')" = "$1" ]; }

# Rows 1-10 are agreed on both sides; 5001-10000 only let a test hold up
# the B-to-A direction later on.
psql_on A -c "insert into t select g, 'base', 0 from generate_series(1, 10) g"
psql_on A -c "insert into t select g, 'filler', 0 from generate_series(5001, 10000) g"
wait_for "rows on B" 60 rows_on_b 5010

# Offline, so both directions start with their change already journaled:
# rows 1-5 are updated on A and then deleted on B (the delete is later),
# rows 6-10 deleted on B and then updated on A (the update is later).
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
psql_on A -c "update t set v = 'A-early', n = n + 1 where id between 1 and 5"
psql_on B -c "delete from t where id between 1 and 5"
psql_on B -c "delete from t where id between 6 and 10"
psql_on A -c "update t set v = 'A-late', n = n + 1 where id between 6 and 10"
start_tandem "$WORK/cfg.json" "$WORK/tandem2.log"
wait_for "converge after offline edits" 60 converged
sleep 1   # a row brought back late would show now
expect_eq "identical tables" "$(table_md5 A t)" "$(table_md5 B t)"
expect_eq "later delete wins on A" 0 "$(psql_on A -c 'select count(*) from t where id between 1 and 5')"
expect_eq "older update did not bring rows back on B" 0 "$(psql_on B -c 'select count(*) from t where id between 1 and 5')"
expect_eq "later update wins on B" "5 A-late" "$(psql_on B -c "select count(*), min(v) from t where id between 6 and 10" | tr '|' ' ')"
expect_eq "later update kept on A" "5 A-late" "$(psql_on A -c "select count(*), min(v) from t where id between 6 and 10" | tr '|' ' ')"

# Online, with the delete held up on its way to A: a session on A locks
# row 5001, B deletes rows 5001-9999 in one transaction (its first
# statement waits for the lock, and the 5000 after it fill the writer's
# window) and then row 10000. A updates row 10000 after that. A's update
# meets a missing row on B whose delete has not reached A yet: it is the
# newer write, a new record on B; the delete, when it reaches A, loses
# there and is recorded.
hold_row_lock A t 5001
psql_on B -c "delete from t where id between 5001 and 9999"
psql_on B -c "delete from t where id = 10000"
sleep 1
psql_on A -c "update t set v = 'A-after-delete', n = n + 1 where id = 10000"
newer_on_b() { [ "$(psql_on B -c 'select v from t where id = 10000')" = A-after-delete ]; }
check "the newer update is a new record on B while B's delete is held up" \
  wait_for "row 10000 on B" 30 newer_on_b
release_row_lock
wait_for "converge after the held-up delete" 60 converged
expect_eq "identical after the held-up delete" "$(table_md5 A t)" "$(table_md5 B t)"
expect_eq "later update brought the row back on B" "A-after-delete" "$(psql_on B -c 'select v from t where id = 10000')"
expect_eq "fillers deleted on A" 0 "$(psql_on A -c 'select count(*) from t where id between 5001 and 9999')"
conflicts=$(sq "select count(*) from conflicts where key = '[\"10000\"]'")
check "the delete's defeat is recorded" [ "$conflicts" -ge 1 ]
conflicts_counted() { curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" |
  grep -q '^tandem_conflicts_total{mapping="t",strategy="last_write_wins"} [1-9]'; }
check "conflicts counted per mapping and strategy" wait_for "conflict metric" 10 conflicts_counted

# Online, with A's update held up on its way to B: a session on B locks
# row 20001 and A updates rows 20001-25000 in one transaction (B's writer
# waits for the lock), then row 25001; B deletes row 25001 after that, and
# the delete reaches A (later than A's update: it wins there). When the
# lock goes, A's update of row 25001 is older than the delete that left
# the record's tombstone: dropped and counted (G5), the row stays deleted.
psql_on A -c "insert into t select g, 'filler', 0 from generate_series(20001, 25001) g"
wait_for "fillers on B" 60 converged
hold_row_lock B t 20001
psql_on A -c "update t set v = 'A-held' where id between 20001 and 25000"
psql_on A -c "update t set v = 'A-stale' where id = 25001"
sleep 1
psql_on B -c "delete from t where id = 25001"
gone_on_a() { [ "$(psql_on A -c 'select count(*) from t where id = 25001')" = 0 ]; }
check "B's later delete won on A" wait_for "delete on A" 30 gone_on_a
release_row_lock
wait_for "converge after the held-up update" 60 converged
expect_eq "identical after the held-up update" "$(table_md5 A t)" "$(table_md5 B t)"
expect_eq "stale update did not bring the row back on B" 0 "$(psql_on B -c 'select count(*) from t where id = 25001')"
expect_eq "held-up update applied" "5000 A-held" "$(psql_on B -c "select count(*), min(v) from t where id between 20001 and 25000" | tr '|' ' ')"
check "stale drop logged" grep -q '"msg":"stale change dropped.*"key":"\[\\"25001\\"\]"' "$WORK/tandem2.log"
stale_counted() { curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | grep -q '^tandem_stale_dropped_total{endpoint="B"} [1-9]'; }
check "stale drop counted" wait_for "stale metric" 10 stale_counted

# An insert B rejects is dead-lettered and the operator drops it: B never
# had the row, so A's next update of it is an upsert (not an update of a
# row B deleted), and dropping is also `tandem dlq drop`'s tested use.
psql_on B -c "alter table t add constraint no_bad check (v <> 'bad')"
psql_on A -c "insert into t values (30001, 'bad', 0)"
in_dlq() { [ "$(sq "select count(*) from dlq where key = '[\"30001\"]' and status = 'open'")" = 1 ]; }
wait_for "rejected insert in the DLQ" 30 in_dlq
dlq_id=$(sq "select id from dlq where key = '[\"30001\"]'")
"$TANDEM" dlq drop "$dlq_id" -c "$WORK/cfg.json" >/dev/null
psql_on B -c "alter table t drop constraint no_bad"
psql_on A -c "update t set v = 'fixed', n = 1 where id = 30001"
fixed_on_b() { [ "$(psql_on B -c 'select v from t where id = 30001')" = fixed ]; }
check "an update after a dropped insert brings the row to B" wait_for "row on B" 30 fixed_on_b
finish
