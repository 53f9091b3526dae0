#!/usr/bin/env bash
# Periodic reconcile inside the daemon (issue 7): drift created behind
# tandem's back shows in tandem_reconcile_drift and /healthz, and clears
# once repaired.
source "$(dirname "$0")/lib.sh"
pg_pair_table "id bigint primary key, v text"
pg_pg_config "$WORK/cfg.json" a_to_b t:id,v   # A has no writer: its origin is free to use below
sed -i 's/"mappings"/"reconcile": { "interval_s": 1 }, "mappings"/' "$WORK/cfg.json"
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
psql_on A -c "insert into t select g, 'v' || g from generate_series(1, 100) g"
wait_for "rows on B" 30 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from t') = 100 ]"
# Rows written under A's own origin are skipped by the reader: drift.
psql_on A -c "select pg_replication_origin_session_setup('tandem_a');
              insert into t values (1001, 'behind tandem''s back'), (1002, 'x')" >/dev/null
drift_metric() {
  curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | grep -q "^tandem_reconcile_drift{mapping=\"t\",kind=\"only_a\"} $1\$"
}
check "periodic reconcile exports the drift" wait_for "drift metric" 30 drift_metric 2
check "healthz reports drift" bash -c "curl -s http://127.0.0.1:$HTTP_PORT/healthz | grep -q '\"drift\"'"
check "drift logged as an error" grep -q '"level":"error".*drift found' "$WORK/tandem.log"
check "status shows the last reconcile" bash -c "'$TANDEM' status --json -c '$WORK/cfg.json' | grep -q '\"last_reconcile\": \"t=2\"'"
set +e; "$TANDEM" reconcile --repair -c "$WORK/cfg.json" >"$WORK/repair.out" 2>&1; rc=$?; set -e
expect_eq "repair leaves no drift" 0 $rc
check "drift metric back to zero" wait_for "drift cleared" 30 drift_metric 0
no_drift_health() { ! curl -s "http://127.0.0.1:$HTTP_PORT/healthz" | grep -q '"drift"'; }
check "healthz drift cleared" wait_for "health cleared" 10 no_drift_health
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
finish
