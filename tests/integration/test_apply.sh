#!/usr/bin/env bash
# PostgreSQL apply (issue 4), one direction: exactly once through kill -9,
# the peer down under load, and a value the peer rejects.
source "$(dirname "$0")/lib.sh"
KILLS=${KILLS:-10}
ROUNDS=${ROUNDS:-250}
PEER_DOWN_S=${PEER_DOWN_S:-30}

pg_start A
pg_start B
HTTP_PORT=$(free_port)
psql_on A -c "create table t (id bigint primary key, v text, cnt int not null default 1);
              alter table t replica identity full"
# B counts every write it receives: a change applied twice shows up here.
psql_on B -c "create table t (id bigint primary key, v text check (v <> 'bad'), cnt int,
                              applied int not null default 0);
  create function count_apply() returns trigger language plpgsql as \$\$
  begin new.applied := case when tg_op = 'INSERT' then 1 else old.applied + 1 end; return new; end \$\$;
  create trigger count_apply before insert or update on t for each row execute function count_apply();"
pg_pg_config "$WORK/cfg.json" a_to_b t:id,v,cnt

start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

# ~50k changes in mixed transactions, with kill -9 of tandem at random moments.
(
  for i in $(seq 1 "$ROUNDS"); do
    lo=$((i * 100)); hi=$((lo + 99))
    psql_on A -c "insert into t (id, v) select g, 'v'||g from generate_series($lo, $hi) g" >/dev/null
    psql_on A -c "update t set v = v || '+', cnt = cnt + 1 where id between $lo and $hi and id % 3 = 0" >/dev/null
    psql_on A -c "begin; update t set cnt = cnt + 1 where id = $lo; update t set cnt = cnt + 1 where id = $lo; commit" >/dev/null
    psql_on A -c "delete from t where id between $lo and $hi and id % 11 = 0" >/dev/null
  done
) &
LOAD=$!
for k in $(seq 1 "$KILLS"); do
  sleep "0.$((RANDOM % 9 + 1))"; sleep $((RANDOM % 2))
  kill -9 $TANDEM_PID; wait $TANDEM_PID 2>/dev/null || true
  start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
done
wait $LOAD

converged() { [ "$(table_md5 A t 'id, v, cnt')" = "$(table_md5 B t 'id, v, cnt')" ]; }
wait_for "B equals A after the kills" 180 converged
expect_eq "row counts equal" "$(psql_on A -c 'select count(*) from t')" "$(psql_on B -c 'select count(*) from t')"
expect_eq "md5 over ordered rows equal" "$(table_md5 A t 'id, v, cnt')" "$(table_md5 B t 'id, v, cnt')"
expect_eq "no change applied twice (per-row apply counter = source write count)" 0 \
  "$(psql_on B -c 'select count(*) from t where applied <> cnt')"

# The peer is down for a while under load: nothing is lost.
pg_stop B
for i in $(seq 1 20); do
  psql_on A -c "insert into t (id, v) select g, 'down'||g from generate_series($((900000 + i * 100)), $((900000 + i * 100 + 99))) g" >/dev/null
done
sleep "$PEER_DOWN_S"
check "tandem still running with the peer down" kill -0 $TANDEM_PID
check "healthz reports the endpoint down" bash -c "curl -s http://127.0.0.1:$HTTP_PORT/healthz | grep -q endpoint_down"
pg_restart_cluster B
wait_for "B catches up after the outage" 120 converged
expect_eq "nothing lost while the peer was down" "$(table_md5 A t 'id, v, cnt')" "$(table_md5 B t 'id, v, cnt')"

# A value the peer rejects does not stop other keys and is recorded.
psql_on A -c "insert into t (id, v) values (-1, 'bad')"
psql_on A -c "insert into t (id, v) values (-2, 'good after bad')"
wait_for "later key applied" 60 bash -c "[ \"\$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select v from t where id = -2')\" = 'good after bad' ]"
expect_eq "rejected row not on B" 0 "$(psql_on B -c 'select count(*) from t where id = -1')"
check "rejection logged with the key" grep -q 'the target rejected a change.*\[\\"-1\\"\]' "$WORK/tandem.log"
expect_eq "rejected change in the DLQ" 1 "$(sq "select count(*) from dlq where key = '[\"-1\"]'")"
"$TANDEM" dlq list -c "$WORK/cfg.json" >"$WORK/dlq.out"
check "dlq list shows the entry with its error" grep -q 'check constraint' "$WORK/dlq.out"
dlq_id=$(cut -f1 "$WORK/dlq.out" | head -1)
"$TANDEM" dlq show "$dlq_id" -c "$WORK/cfg.json" --json >"$WORK/dlq_show.out"
check "dlq show has the change" grep -qF '\"op\":\"I\"' "$WORK/dlq_show.out"
# A later change of the parked key waits behind the first (G8), others flow.
psql_on A -c "update t set v = 'bad-then-fixed', cnt = cnt + 1 where id = -1"
psql_on A -c "insert into t (id, v) values (-3, 'flows past the parked key')"
wait_for "other key applied" 30 bash -c "[ \"\$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select v from t where id = -3')\" = 'flows past the parked key' ]"
expect_eq "later change of the parked key waits in the DLQ" 2 "$(sq "select count(*) from dlq where key = '[\"-1\"]' and status = 'open'")"
expect_eq "key parked behind the DLQ entry" "dlq" "$(sq "select reason from parked where key = '[\"-1\"]'")"
dlq_unhealthy() { curl -s "http://127.0.0.1:$HTTP_PORT/healthz" | grep -q dlq_nonempty; }
check "healthz degraded while the DLQ is not empty" wait_for "dlq health" 10 dlq_unhealthy
# The operator fixes the peer and retries: the change lands, the entry leaves the list.
psql_on B -c "alter table t drop constraint t_v_check"
"$TANDEM" dlq -c "$WORK/cfg.json" retry "$dlq_id" >/dev/null
wait_for "retried rows on B" 30 bash -c "[ \"\$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select v from t where id = -1')\" = 'bad-then-fixed' ]"
expect_eq "retry applies the held changes in order" "bad-then-fixed|2" "$(psql_on B -c 'select v, cnt from t where id = -1')"
expect_eq "key unparked after the retry" 0 "$(sq "select count(*) from parked")"
expect_eq "dlq list empty after the retry" "" "$("$TANDEM" dlq list -c "$WORK/cfg.json")"
check "dlq list --history keeps it" bash -c "'$TANDEM' dlq list --history -c '$WORK/cfg.json' | grep -q retried"
set +e; "$TANDEM" dlq retry 999999 -c "$WORK/cfg.json" >/dev/null 2>&1; rc=$?; set -e
expect_eq "retry of an unknown entry exits 1" 1 $rc
# dlq retry --all: two rejected keys, the peer fixed once, one command.
psql_on B -c "alter table t add constraint t_v_check check (v <> 'bad')"
psql_on A -c "insert into t (id, v) values (-4, 'bad'), (-5, 'bad')"
two_open() { [ "$(sq "select count(*) from dlq where status = 'open'")" = 2 ]; }
wait_for "two entries in the DLQ" 30 two_open
psql_on B -c "alter table t drop constraint t_v_check"
"$TANDEM" dlq retry --all -c "$WORK/cfg.json" >"$WORK/retry_all.out"
both_landed() { [ "$(psql_on B -c 'select count(*) from t where id in (-4, -5)')" = 2 ]; }
check "dlq retry --all applies every open entry" wait_for "retried rows" 30 both_landed
expect_eq "dlq list empty after retry --all" "" "$("$TANDEM" dlq list -c "$WORK/cfg.json")"
kill -TERM $TANDEM_PID
set +e; wait $TANDEM_PID; rc=$?; set -e
expect_eq "clean stop" 0 $rc
finish
