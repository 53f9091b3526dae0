#!/usr/bin/env bash
# A conflict decided on B (the row changed there since the last agreement)
# is recorded in the state. B's commit of that transaction moves B's
# origin progress past the change, so the record must be on disk first:
# otherwise a crash between the two skips the change with no trace of the
# conflict (under `manual` not even a parked key, and the sides differ
# silently).
#
# Here the change is journaled while B is down; then the state file stops
# growing (a full disk: a file-size limit on the daemon) and B comes back.
# The conflict cannot be saved, so B must not commit the transaction (its
# marker row stays invisible). Once the disk has room, B commits it and
# the state holds the conflict, recorded once.
source "$(dirname "$0")/lib.sh"

pg_start A
pg_start B
for c in A B; do
  psql_on "$c" -c "create table t (id bigint primary key, v text); alter table t replica identity full"
done
pg_pg_config "$WORK/cfg.json" a_to_b t:id,v
"$TANDEM" setup -c "$WORK/cfg.json" >"$WORK/setup.log" 2>&1
start_tandem_limitable "$WORK/cfg.json" "$WORK/tandem.log"     # no limit yet
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

# (wait_for runs a command: these read anew at each try)
b_value() { [ "$(psql_on B -c "select v from t where id = 1")" = "$1" ]; }
journaled() { [ "$(sq "select count(*) from journal_change where key = '[\"1001\"]'")" = 1 ]; }
marker() { psql_on B -c "select count(*) from t where id = 1001"; }
has_marker() { [ "$(marker)" = 1 ]; }

psql_on A -c "insert into t values (1, 'agreed')"
wait_for "the row agreed on B" 30 b_value agreed
psql_on B -c "update t set v = 'b-edit' where id = 1"

pg_stop B
psql_on A -c "begin; update t set v = 'a-edit' where id = 1;
              insert into t values (1001, 'marker'); commit"
wait_for "the transaction journaled" 30 journaled
prlimit --pid "$TANDEM_PID" --fsize=1024:unlimited
pg_restart_cluster B
wait_for "a state commit failing" 60 grep -q '"msg":"cannot commit the state' "$WORK/tandem.log"
# Room for B to commit early, had tandem not waited for the state.
for i in $(seq 1 30); do
  [ "$(marker)" = 0 ] || break
  sleep 0.1
done
expect_eq "B did not commit the transaction while its conflict could not be saved" 0 "$(marker)"
expect_eq "nor is the conflict in the state" 0 "$(sq "select count(*) from conflicts")"

prlimit --pid "$TANDEM_PID" --fsize=unlimited
wait_for "B has the marker" 60 has_marker
expect_eq "the conflict is recorded, once" 1 \
  "$(sq "select count(*) from conflicts where key = '[\"1\"]'")"
expect_eq "the later write won (last_write_wins)" a-edit "$(psql_on B -c "select v from t where id = 1")"
kill -TERM "$TANDEM_PID"
set +e; wait "$TANDEM_PID"; rc=$?; set -e
expect_eq "clean stop" 0 $rc
finish
