#!/usr/bin/env bash
# A stale shadow after a crash (G6): tandem committed a write on B and died
# before the state commit that held the shadow's update, so the shadow
# still has the value from before. The next change of the key is made on
# what B holds; B's row was last written by tandem's own origin, so it is
# clean: the change applies, with no conflict recorded and (manual
# strategy) no key parked. The crash is staged by restoring an older copy
# of the shadow into the stopped daemon's state file. Source tables keep
# the default replica identity, so the shadow is the change's base.
source "$(dirname "$0")/lib.sh"

pg_start A
pg_start B
psql_on A -c "create table s (id bigint primary key, v text)"
psql_on B -c "create table s (id bigint primary key, v text, applied int not null default 0)"
count_writes B s
pg_pg_config "$WORK/cfg.json" a_to_b s:id,v
sed -i 's/"last_write_wins"/"manual"/' "$WORK/cfg.json"

b_values_are() { [ "$(psql_on B -c "select count(*) from s where v = '$1'")" = 10 ]; }
stop_daemon() {
  kill -TERM "$TANDEM_PID"; wait "$TANDEM_PID" 2>/dev/null || true
}
start_daemon() {
  start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
  wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
}

start_daemon
psql_on A -c "insert into s select g, 'zero' from generate_series(1, 10) g"
wait_for "the rows on B" 30 b_values_are zero
stop_daemon
sqlite3 "$WORK/state.db" "create table shadow_before as select * from shadow"

start_daemon
psql_on A -c "update s set v = 'one'"
wait_for "the first update on B" 30 b_values_are one
stop_daemon
# The crash: the shadow's update to 'one' never reached the state file.
sqlite3 "$WORK/state.db" "delete from shadow; insert into shadow select * from shadow_before;
                          drop table shadow_before"
check "the staged shadow is stale" \
  test "$(sq "select count(*) from shadow where fields like '%zero%'")" = 10

start_daemon
psql_on A -c "update s set v = 'two'"
wait_for "the second update on B" 30 b_values_are two
expect_eq "no conflict recorded" 0 "$(sq "select count(*) from conflicts")"
expect_eq "no key parked" 0 "$(sq "select count(*) from parked")"
expect_eq "each row written three times on B (insert and two updates)" 10 \
  "$(psql_on B -c "select count(*) from s where applied = 3")"
expect_eq "the shadow caught up" 10 "$(sq "select count(*) from shadow where fields like '%two%'")"
stop_daemon
finish
