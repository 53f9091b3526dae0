#!/usr/bin/env bash
# Canaries (issue 8): a canary row written on each side in turn arrives on
# the other through the pipeline, its latency lands in the histogram, it is
# cleaned up, and one that does not arrive turns /healthz degraded.
source "$(dirname "$0")/lib.sh"
pg_pair_table "id bigint primary key, v text"
pg_pg_config "$WORK/cfg.json" both t:id,v
sed -i 's/"conflict": {/"canary": { "interval_s": 1, "deadline_s": 4, "key": "-424242" }, "conflict": {/' "$WORK/cfg.json"
check "config has a canary block" grep -q '"canary"' "$WORK/cfg.json"
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

canaries_seen() { # N: histogram count at least N
  local n
  n=$(curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" |
      sed -n 's/^tandem_canary_latency_seconds_count{.*} \([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
  [ "${n:-0}" -ge "$1" ]
}
check "canaries arrive and are timed" wait_for "4 canaries" 30 canaries_seen 4
expect_eq "canaries ran in both directions" 2 "$(sq "select count(*) from canary where mapping = 't' and seen_count > 0")"
"$TANDEM" status --json -c "$WORK/cfg.json" >"$WORK/status.json"
check "status shows canaries per direction" grep -q '"direction": "b_to_a"' "$WORK/status.json"
check "status shows per-endpoint lag" grep -q '"lag_seconds"' "$WORK/status.json"
no_canary_rows() {
  [ "$(psql_on A -c 'select count(*) from t where id = -424242')" = 0 ] &&
  [ "$(psql_on B -c 'select count(*) from t where id = -424242')" = 0 ]
}
check "canary rows are cleaned up" wait_for "no canary rows" 10 no_canary_rows
check "healthz ok while canaries arrive" bash -c "curl -s http://127.0.0.1:$HTTP_PORT/healthz | grep -q '\"ok\"'"

# B goes away: the next canary bound for it is overdue.
pg_stop B
overdue() { curl -s "http://127.0.0.1:$HTTP_PORT/healthz" | grep -q canary_overdue; }
check "an undelivered canary turns healthz degraded" wait_for "canary overdue" 30 overdue
check "overdue canary logged as an error" grep -q '"level":"error".*canary overdue' "$WORK/tandem.log"
pg_restart_cluster B
recovered() { ! curl -s "http://127.0.0.1:$HTTP_PORT/healthz" | grep -q canary_overdue; }
check "health recovers once canaries arrive again" wait_for "canary recovered" 60 recovered
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
finish
