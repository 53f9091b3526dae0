#!/usr/bin/env bash
# G6 under a lock race: a user transaction on the target updates the row
# (an unmapped column, or the same values) while tandem's conditional write
# of that row waits for its lock. When the user commits, tandem's write
# must land on the row's newest version (the condition still holds: the
# mapped fields are the base), not be skipped silently.
source "$(dirname "$0")/lib.sh"
pg_start A
pg_start B
for db in A B; do
  psql_on $db -c "create table t (id bigint primary key, v text, extra text); alter table t replica identity full"
done
pg_pg_config "$WORK/cfg.json" a_to_b t:id,v
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
psql_on A -c "insert into t values (1, 'one', null), (2, 'two', null)"
wait_for "rows on B" 20 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from t') = 2 ]"

# Row 1: a user updates an unmapped column and holds the row for 2 s.
psql_on B -c "begin; update t set extra = 'user' where id = 1; select pg_sleep(2); commit" >/dev/null & U=$!
sleep 0.5
psql_on A -c "update t set v = 'from A' where id = 1"
wait $U
lands() { [ "$(psql_on B -c 'select v || chr(124) || extra from t where id = 1')" = "from A|user" ]; }
check "the change lands on the row the user updated meanwhile" wait_for "row 1 on B" 20 lands
# Row 2: a user rewrites the same mapped value while the change waits.
psql_on B -c "begin; update t set v = 'two' where id = 2; select pg_sleep(2); commit" >/dev/null & U=$!
sleep 0.5
psql_on A -c "update t set v = 'two from A' where id = 2"
wait $U
lands2() { [ "$(psql_on B -c 'select v from t where id = 2')" = "two from A" ]; }
check "a same-value rewrite does not block the change either" wait_for "row 2 on B" 20 lands2
expect_eq "no conflict recorded: the rows were clean" 0 "$(sq "select count(*) from conflicts")"
kill -TERM $TANDEM_PID
set +e; wait $TANDEM_PID; rc=$?; set -e
expect_eq "clean stop" 0 $rc
finish
