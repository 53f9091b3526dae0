#!/usr/bin/env bash
# bench_reconcile.sh BUILD_DIR: `tandem reconcile` of a PostgreSQL <->
# PostgreSQL mapping (issue 7), measured beside the floor of reading both
# tables once in the same run. Prints the ratio and the peak RSS.
#
#   1. ROWS identical rows on clusters A and B. Timed, one after the other
#      (the order alternates between runs):
#        floor:     psql -c "select md5(string_agg(t::text, '' order by id)) from t"
#                   on A and on B at the same time (reconcile reads both
#                   sides at once too), wall time until both returned;
#        reconcile: `tandem reconcile -c F --json`, process start to exit
#                   (exit 0: no drift), under /usr/bin/time for its peak RSS.
#      ratio = reconcile / floor (target <= 3), peak RSS (target < 64 MB).
#   2. CHANGED rows (every ROWS/CHANGED-th id) updated on B only: the same
#      reconcile (exit 3, CHANGED keys different), to show the cost of
#      descending into the differing buckets; the differences are then
#      undone and the tables are identical again.
# No daemon runs and there is no state file: reconcile compares the tables
# as they are.
# Environment: ROWS (1000000), CHANGED (1000), RUNS (3), KEEP_WORK=1 keeps
# the work directory.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib_bench.sh" "${1:-}"

ROWS=${ROWS:-1000000}
CHANGED=${CHANGED:-1000}
RUNS=${RUNS:-3}
TARGET_RATIO=3
TARGET_RSS_MB=64
STEP=$(( ROWS / CHANGED ))
[ "$STEP" -ge 1 ] || { echo "CHANGED must be at most ROWS" >&2; exit 2; }

ensure_bc
# GNU time (Debian package `time`) for the peak RSS of the reconcile process.
if [ ! -x /usr/bin/time ]; then
  echo "# /usr/bin/time missing: installing it" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq time >/dev/null 2>&1 ||
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq time >/dev/null; }
  [ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is required" >&2; exit 2; }
fi
command -v jq >/dev/null 2>&1 || { echo "bench: jq is required (packaging/install-deps)" >&2; exit 2; }
# set +e first: under errexit the (exit $rc) that hands cleanup the status would
# end the shell before cleanup ran, leaving clusters and daemons behind.
trap 'rc=$?; set +e; (exit $rc); cleanup' EXIT

echo "# bench_reconcile: $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 " GiB RAM" }'), $("$PGBIN/postgres" --version)"
echo "# tandem: $TANDEM ($("$TANDEM" version 2>/dev/null | head -n 1))"
echo "# $ROWS rows (id bigint, v text, n int, amount numeric(12,2)); changed run: $CHANGED rows on B; runs: $RUNS"

pg_start A
pg_start B
t0=$(now_us)
pids=()
for c in A B; do
  psql_on "$c" -c "create table t (id bigint primary key, v text not null, n int not null,
                                   amount numeric(12,2)) with (autovacuum_enabled = off)" \
    -c "insert into t select g, md5(g::text), g % 1000, (g % 100000) / 100.0 from generate_series(1, $ROWS) g" \
    -c "vacuum analyze t" -c "checkpoint" &
  pids+=($!)
done
wait_ok=1
for j in "${pids[@]}"; do wait "$j" || wait_ok=0; done
[ "$wait_ok" = 1 ] || { echo "loading the tables failed" >&2; exit 1; }
echo "# loaded $ROWS rows on A and B in $(ms $(( $(now_us) - t0 ))) ms; table size $(psql_on A -c "select pg_size_pretty(pg_table_size('t'))")"

bench_config "$WORK/rec.json" "$WORK/rec.db" rec "$(conninfo_of B)" t:id,v,n,amount
# The floor query must see the same data: it does.
FLOOR_SQL="select md5(string_agg(t::text, '' order by id)) from t"
[ "$(psql_on A -c "$FLOOR_SQL")" = "$(psql_on B -c "$FLOOR_SQL")" ] ||
  { echo "A and B differ before the first run" >&2; exit 1; }

# time_floor: sets FLOOR_US (both queries at once, wall time), FLOOR_A_US, FLOOR_B_US.
time_floor() {
  local t0 ta tb
  wait_quiet; FLOOR_BUSY=$BUSY_PCT
  t0=$(now_us)
  ( psql_on A -c "$FLOOR_SQL" >/dev/null; echo $(( $(now_us) - t0 )) >"$WORK/floor_a" ) &
  local pa=$!
  ( psql_on B -c "$FLOOR_SQL" >/dev/null; echo $(( $(now_us) - t0 )) >"$WORK/floor_b" ) &
  local pb=$!
  if ! wait "$pa" || ! wait "$pb"; then echo "floor query failed" >&2; exit 1; fi
  FLOOR_US=$(( $(now_us) - t0 ))
  ta=$(cat "$WORK/floor_a"); tb=$(cat "$WORK/floor_b")
  FLOOR_A_US=$ta; FLOOR_B_US=$tb
}

# time_reconcile EXPECTED_RC: sets REC_US, REC_RSS_KB, REC_JSON (file).
time_reconcile() {
  local want=$1 t0 rc
  wait_quiet; REC_BUSY=$BUSY_PCT
  REC_JSON="$WORK/reconcile.json"
  t0=$(now_us)
  set +e
  /usr/bin/time -f '%M %e %U %S' -o "$WORK/time.out" \
    "$TANDEM" reconcile -c "$WORK/rec.json" --json >"$REC_JSON" 2>"$WORK/reconcile.log"
  rc=$?
  set -e
  REC_US=$(( $(now_us) - t0 ))
  [ "$rc" = "$want" ] || { echo "tandem reconcile exited $rc, expected $want; see $WORK/reconcile.log" >&2; cat "$WORK/reconcile.log" >&2; exit 1; }
  read -r REC_RSS_KB _ REC_USER REC_SYS < <(tail -n 1 "$WORK/time.out")
}

# rec_detail: what the report says about the method.
rec_detail() {
  jq -r '.mappings[0] | "\(.a.count // "?")/\(.b.count // "?") rows, \(.differences_total) differing;"
    + " buckets \(.method.buckets), \(.method.buckets_differing) differing, rows streamed \(.method.rows_streamed_a)+\(.method.rows_streamed_b);"
    + " reconcile says \(.elapsed_s * 1000 | floor) ms"' "$REC_JSON" 2>/dev/null || echo "(report unreadable)"
}

RATIOS=(); REC_MS=(); FLOOR_MS=(); RSS=(); CH_MS=(); CH_RATIOS=(); CH_RSS=()
for r in $(seq 1 "$RUNS"); do
  # ---- identical tables
  if [ $((r % 2)) = 1 ]; then order="floor first"; time_floor; time_reconcile 0
  else order="reconcile first"; time_reconcile 0; time_floor; fi
  ratio=$(calc "$REC_US / $FLOOR_US")
  RATIOS+=("$ratio"); REC_MS+=("$(ms "$REC_US")"); FLOOR_MS+=("$(ms "$FLOOR_US")"); RSS+=("$REC_RSS_KB")
  printf "run %d identical (%s):\n" "$r" "$order"
  printf "  floor      %9s ms (A %s ms, B %s ms, at once)                    [CPU busy just before: %s%%]\n" \
    "$(ms "$FLOOR_US")" "$(ms "$FLOOR_A_US")" "$(ms "$FLOOR_B_US")" "$FLOOR_BUSY"
  printf "  reconcile  %9s ms, peak RSS %s MB, CPU user %s s sys %s s [CPU busy just before: %s%%]\n" \
    "$(ms "$REC_US")" "$(calc "$REC_RSS_KB / 1024" 1)" "$REC_USER" "$REC_SYS" "$REC_BUSY"
  printf "             %s\n" "$(rec_detail)"
  printf "  ratio reconcile/floor %s\n" "$ratio"

  # ---- CHANGED rows differ on B
  psql_on B -c "update t set v = md5(v) where id % $STEP = 0 and id <= $((STEP * CHANGED))"
  psql_on B -c "checkpoint"
  time_reconcile 3
  CH_MS+=("$(ms "$REC_US")"); CH_RATIOS+=("$(calc "$REC_US / $FLOOR_US")"); CH_RSS+=("$REC_RSS_KB")
  got=$(jq -r '.mappings[0].differences_total' "$REC_JSON")
  [ "$got" = "$CHANGED" ] || echo "# WARNING: reconcile found $got differences, expected $CHANGED"
  printf "run %d with %d rows changed on B:\n" "$r" "$CHANGED"
  printf "  reconcile  %9s ms, peak RSS %s MB, CPU user %s s sys %s s [CPU busy just before: %s%%]\n" \
    "$(ms "$REC_US")" "$(calc "$REC_RSS_KB / 1024" 1)" "$REC_USER" "$REC_SYS" "$REC_BUSY"
  printf "             %s\n" "$(rec_detail)"
  printf "  ratio reconcile/floor %s (floor of this run)\n" "${CH_RATIOS[-1]}"
  # Undo: the same rows back to A's values (B's own update, not replicated).
  psql_on B -c "update t set v = md5(id::text) where id % $STEP = 0 and id <= $((STEP * CHANGED))" -c "vacuum t" -c "checkpoint"
done

RATIO=$(median "${RATIOS[@]}")
RSS_MB=$(calc "$(printf '%s\n' "${RSS[@]}" "${CH_RSS[@]}" | sort -n | tail -1) / 1024" 1)
echo
echo "summary ($ROWS rows, median of $RUNS runs):"
printf '  floor (md5 over both tables at once)        %9.1f ms\n' "$(median "${FLOOR_MS[@]}")"
printf '  reconcile, identical                        %9.1f ms   ratio %.3f   target <= %s: %s\n' \
  "$(median "${REC_MS[@]}")" "$RATIO" "$TARGET_RATIO" "$(verdict "$RATIO" '<=' "$TARGET_RATIO")"
printf '  %-43s %9.1f ms   ratio %.3f\n' "reconcile, $CHANGED rows changed on B" "$(median "${CH_MS[@]}")" "$(median "${CH_RATIOS[@]}")"
printf '  reconcile peak RSS (largest of all runs)    %9s MB   target < %s MB: %s\n' \
  "$RSS_MB" "$TARGET_RSS_MB" "$(verdict "$RSS_MB" '<' "$TARGET_RSS_MB")"
