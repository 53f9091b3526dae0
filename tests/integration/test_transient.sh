#!/usr/bin/env bash
# Transient apply failures (G8): a lock timeout on the peer is retried with
# backoff until it passes; one that outlasts the retry policy goes to the
# DLQ with its error, and other keys keep flowing.
source "$(dirname "$0")/lib.sh"
pg_pair_table "id bigint primary key, v text"
# tandem's sessions on B give up on a row lock after 300 ms.
psql_on B -c "alter role postgres set lock_timeout = '300ms'"
pg_pg_config "$WORK/cfg.json" a_to_b t:id,v
metric() { curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | sed -n "s/^tandem_apply_errors_total{to=\"B\",kind=\"$1\"} //p"; }
sed -i 's/"mappings"/"retry": { "max_attempts": 6, "max_retry_s": 3600, "backoff_max_ms": 400 }, "mappings"/' "$WORK/cfg.json"
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
psql_on A -c "insert into t values (1, 'one'), (2, 'two')"
wait_for "rows on B" 20 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from t') = 2 ]"

# Row 1 locked on B for 2 s: the update waits, retries, lands.
psql_on B -c "set lock_timeout = 0; begin; select * from t where id = 1 for update; select pg_sleep(2); commit" >/dev/null &
LOCKER=$!
sleep 0.3
psql_on A -c "update t set v = 'one after the lock' where id = 1"
wait $LOCKER
wait_for "update lands after the lock is gone" 30 bash -c "[ \"\$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select v from t where id = 1')\" = 'one after the lock' ]"
check "lock timeout logged as transient and retried" grep -q '"sqlstate":"55P03"' "$WORK/tandem.log"
expect_eq "no DLQ entry for a transient failure that passed" 0 "$(sq "select count(*) from dlq")"
transient_counted() { [ "$(metric transient)" -ge 1 ]; }
check "transient failures counted" wait_for "transient metric" 10 transient_counted

# Row 2 locked far longer than the retry policy allows: dead-lettered.
psql_on B -c "set lock_timeout = 0; begin; select * from t where id = 2 for update; select pg_sleep(20); commit" >/dev/null &
LOCKER=$!
sleep 0.3
psql_on A -c "update t set v = 'two, blocked' where id = 2"
wait_for "exhausted retries dead-lettered" 30 bash -c "[ \"\$(sqlite3 -readonly '$WORK/state.db' \"select count(*) from dlq where key = '[\\\"2\\\"]'\")\" = 1 ]"
check "DLQ entry names the lock timeout" bash -c "sqlite3 -readonly '$WORK/state.db' 'select error from dlq' | grep -q 'lock timeout'"
exhausted_counted() { [ "$(metric exhausted)" = 1 ]; }
check "exhausted retries counted as exhausted" wait_for "exhausted metric" 10 exhausted_counted
expect_eq "and not as rejected" 0 "$(r=$(metric rejected); echo "${r:-0}")"
psql_on A -c "insert into t values (3, 'three')"
wait_for "other keys keep flowing" 30 bash -c "[ \"\$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select v from t where id = 3')\" = 'three' ]"
kill $LOCKER 2>/dev/null || true
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
finish
