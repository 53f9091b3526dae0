#!/usr/bin/env bash
# bench_capture.sh BUILD_DIR: tandem's PostgreSQL capture (issue 3), measured
# against pg_recvlogical on the same slot contents in the same run.
#
#   1. Throughput: a backlog of ROWS rows in TXN_ROWS-row transactions is
#      written on cluster A after two slots exist (tandem's and a second one);
#      pg_recvlogical drains the second to --endpos into /dev/null, tandem
#      drains its own into the journal. changes/s for both, and the ratio.
#   2. Peak RSS (VmHWM) of tandem while capturing one BIG_ROWS-row transaction.
#
# Capture only: the peer (B) is a closed loopback port, so tandem applies
# nothing while it is measured (it logs that B is unreachable and retries).
# Environment: ROWS (200000), TXN_ROWS (1000), RUNS (5), BIG_ROWS (5000000;
# 0 skips part 2), BIG_RECV (1: also time pg_recvlogical on the big
# transaction), KEEP_WORK=1 keeps the work directory.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib_bench.sh" "${1:-}"

ROWS=${ROWS:-200000}
TXN_ROWS=${TXN_ROWS:-1000}
RUNS=${RUNS:-5}
BIG_ROWS=${BIG_ROWS:-5000000}
BIG_RECV=${BIG_RECV:-1}
NTXN=$(( (ROWS + TXN_ROWS - 1) / TXN_ROWS ))
TARGET_RATIO=0.9
TARGET_RSS_MB=32

ensure_bc
RECV_PID=""
bench_cleanup() {
  local rc=$?
  set +e    # (exit $rc) must not end the shell before cleanup runs
  [ -n "$RECV_PID" ] && kill "$RECV_PID" 2>/dev/null
  (exit $rc); cleanup
}
trap bench_cleanup EXIT

echo "# bench_capture: $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 " GiB RAM" }'), $("$PGBIN/postgres" --version)"
echo "# tandem: $TANDEM ($("$TANDEM" version 2>/dev/null | head -n 1))"
echo "# backlog: $ROWS rows in $NTXN transactions of $TXN_ROWS; runs: $RUNS; big transaction: $BIG_ROWS rows"

pg_start A
BCONN="host=127.0.0.1 port=$(free_port) dbname=postgres user=postgres connect_timeout=1"
B_DOWN_RE="\"endpoint\":\"B\""  # B is down on purpose: its retry lines are expected
# No autovacuum on the table: it would wake at random moments of a measurement.
psql_on A -c "create table t (id bigint primary key, v text) with (autovacuum_enabled = off);
  create procedure bench_fill(first bigint, n bigint, per_txn int) language plpgsql as \$\$
  declare i bigint := first;
  begin
    while i < first + n loop
      insert into t (id, v) select g, md5(g::text)
        from generate_series(i, least(i + per_txn, first + n) - 1) g;
      commit;
      i := i + per_txn;
    end loop;
  end \$\$;"

jq_state() { sqlite3 -readonly -cmd ".timeout 5000" "$1" "$2"; }
journal_done() { [ "$(jq_state "$1" "select count(*) from journal_txn where commit_seq is not null")" -ge "$2" ]; }

# prepare TAG: fresh table contents, tandem's slot and a second slot, both
# created before anything is written.
prepare() {
  local tag=$1
  psql_on A -c "truncate t"
  bench_config "$WORK/$tag.json" "$WORK/$tag.db" "$tag" "$BCONN" t:id,v
  "$TANDEM" setup -c "$WORK/$tag.json" >>"$WORK/setup.log" 2>&1 || true # B is down on purpose
  slot_exists "tandem_$tag" || { echo "tandem setup created no slot; see $WORK/setup.log" >&2; exit 1; }
  psql_on A -c "select pg_create_logical_replication_slot('recv_$tag', 'pgoutput')" >/dev/null
}

# finish_run TAG: drops what prepare created.
finish_run() {
  local tag=$1
  "$TANDEM" teardown -c "$WORK/$tag.json" >>"$WORK/setup.log" 2>&1 || true
  drop_slot "tandem_$tag"
  drop_slot "recv_$tag"
  psql_on A -c "drop publication if exists tandem_$tag" >/dev/null
}

# time_recv TAG END_LSN: sets RECV_US, the time pg_recvlogical takes to
# stream the slot to END_LSN.
time_recv() {
  local t0 t1
  wait_quiet; RECV_BUSY=$BUSY_PCT
  t0=$(now_us)
  pg_recvlogical -h 127.0.0.1 -p "$A_PORT" -U postgres -d postgres --slot "recv_$1" \
    --start --endpos "$2" --no-loop -o proto_version=1 -o "publication_names=tandem_$1" \
    -f /dev/null 2>>"$WORK/recvlogical.log" &
  RECV_PID=$!
  wait "$RECV_PID" || { echo "pg_recvlogical failed; see $WORK/recvlogical.log" >&2; exit 1; }
  RECV_PID=""
  t1=$(now_us)
  RECV_US=$((t1 - t0))
}

# time_tandem TAG NTXN TIMEOUT_S: starts tandem on the backlog; sets TAN_US
# (start of the process to the journal commit of the last transaction),
# SPAN_US (first journal transaction opened to last committed), HWM_KB.
time_tandem() {
  local tag=$1 ntxn=$2 timeout=$3 t0 first last
  wait_quiet; TAN_BUSY=$BUSY_PCT
  t0=$(now_us)
  start_tandem "$WORK/$tag.json" "$WORK/$tag.log"
  wait_for "journal holds $ntxn transactions ($tag)" "$timeout" journal_done "$WORK/$tag.db" "$ntxn"
  HWM_KB=$(vm_kb "$TANDEM_PID" VmHWM)
  stop_tandem
  first=$(jq_state "$WORK/$tag.db" "select min(opened_at_us) from journal_txn")
  last=$(jq_state "$WORK/$tag.db" "select max(committed_at_us) from journal_txn")
  TAN_US=$((last - t0))
  SPAN_US=$((last - first))
  # The longest pause between consecutive journal commits: a stall shows here.
  GAP_US=$(jq_state "$WORK/$tag.db" "select coalesce(max(g), 0) from (select committed_at_us -
             lag(committed_at_us) over (order by commit_seq) as g from journal_txn where commit_seq is not null)")
}

# ---- 1. throughput on the backlog
RATIOS=(); SPAN_RATIOS=(); RECV_RATES=(); TAN_RATES=()
for r in $(seq 1 "$RUNS"); do
  tag="cap$r"
  prepare "$tag"
  psql_on A -c "call bench_fill(1, $ROWS, $TXN_ROWS)"
  psql_on A -c "checkpoint"  # not during the measurement
  end_lsn=$(psql_on A -c "select pg_current_wal_lsn()")
  # Alternate which reader goes first, so neither always gets warm caches.
  if [ $((r % 2)) = 1 ]; then order="pg_recvlogical first"; time_recv "$tag" "$end_lsn"; time_tandem "$tag" "$NTXN" 600
  else order="tandem first"; time_tandem "$tag" "$NTXN" 600; time_recv "$tag" "$end_lsn"; fi
  got=$(jq_state "$WORK/$tag.db" "select count(*) from journal_change")
  [ "$got" = "$ROWS" ] || echo "# WARNING run $r: journal holds $got changes, expected $ROWS"
  finish_run "$tag"
  rr=$(rate "$ROWS" "$RECV_US"); tr=$(rate "$ROWS" "$TAN_US"); sr=$(rate "$ROWS" "$SPAN_US")
  RECV_RATES+=("$rr"); TAN_RATES+=("$tr")
  RATIOS+=("$(calc "$RECV_US / $TAN_US")"); SPAN_RATIOS+=("$(calc "$RECV_US / $SPAN_US")")
  printf "run %d (%s):\n" "$r" "$order"
  printf "  pg_recvlogical %8s ms = %6s changes/s                  [CPU busy just before: %s%%]\n" "$(ms "$RECV_US")" "$rr" "$RECV_BUSY"
  printf "  tandem         %8s ms = %6s changes/s; VmHWM %s MB [CPU busy just before: %s%%]\n" "$(ms "$TAN_US")" "$tr" "$(calc "$HWM_KB / 1024" 1)" "$TAN_BUSY"
  printf "                 journal span %s ms = %s changes/s; longest pause between journal commits %s ms\n" "$(ms "$SPAN_US")" "$sr" "$(ms "$GAP_US")"
  printf "  ratio tandem/pg_recvlogical %s\n" "${RATIOS[-1]}"
  log_oddities "$WORK/$tag.log" "$B_DOWN_RE"
done

RATIO=$(median "${RATIOS[@]}")
echo
echo "capture throughput, $ROWS changes in $TXN_ROWS-row transactions (median of $RUNS runs):"
printf '  pg_recvlogical   %8.0f changes/s\n' "$(median "${RECV_RATES[@]}")"
printf '  tandem           %8.0f changes/s   (process start to last journal commit)\n' "$(median "${TAN_RATES[@]}")"
printf '  ratio tandem/pg_recvlogical  %.3f   target >= %s: %s\n' "$RATIO" "$TARGET_RATIO" "$(verdict "$RATIO" '>=' "$TARGET_RATIO")"
printf '  ratio on tandem journal span %.3f   (first journal txn opened to last committed)\n' "$(median "${SPAN_RATIOS[@]}")"

# ---- 2. peak RSS on one big transaction
if [ "$BIG_ROWS" -gt 0 ]; then
  tag=big
  prepare "$tag"
  t0=$(now_us)
  psql_on A -c "insert into t (id, v) select g, md5(g::text) from generate_series(1, $BIG_ROWS) g"
  write_us=$(( $(now_us) - t0 ))
  psql_on A -c "checkpoint"
  end_lsn=$(psql_on A -c "select pg_current_wal_lsn()")
  echo
  echo "big transaction: $BIG_ROWS rows written on A in $(ms "$write_us") ms"
  if [ "$BIG_RECV" = 1 ]; then
    time_recv "$tag" "$end_lsn"
    echo "  pg_recvlogical  $(ms "$RECV_US") ms = $(rate "$BIG_ROWS" "$RECV_US") changes/s"
  fi
  # Samples VmRSS while capturing, for the shape of the curve.
  wait_quiet
  t0=$(now_us)
  start_tandem "$WORK/$tag.json" "$WORK/$tag.log"
  maxrss=0; samples=0; timeout_s=$(( BIG_ROWS / 2000 + 600 ))
  while ! journal_done "$WORK/$tag.db" 1 2>/dev/null; do
    kill -0 "$TANDEM_PID" 2>/dev/null || { echo "tandem exited while capturing the big transaction" >&2; exit 1; }
    rss=$(vm_kb "$TANDEM_PID" VmRSS); [ "$rss" -gt "$maxrss" ] && maxrss=$rss
    samples=$((samples + 1))
    [ $(( ($(now_us) - t0) / 1000000 )) -lt "$timeout_s" ] || { echo "timeout capturing the big transaction" >&2; exit 1; }
    sleep 0.2
  done
  HWM_KB=$(vm_kb "$TANDEM_PID" VmHWM)
  stop_tandem
  last=$(jq_state "$WORK/$tag.db" "select max(committed_at_us) from journal_txn")
  got=$(jq_state "$WORK/$tag.db" "select count(*) from journal_change")
  [ "$got" = "$BIG_ROWS" ] || echo "# WARNING: journal holds $got changes of the big transaction, expected $BIG_ROWS"
  big_us=$((last - t0))
  echo "  tandem          $(ms "$big_us") ms = $(rate "$BIG_ROWS" "$big_us") changes/s; state file $(du -m "$WORK/$tag.db" | cut -f1) MB"
  [ "$BIG_RECV" = 1 ] && printf '  ratio tandem/pg_recvlogical  %.3f (no target)\n' "$(calc "$RECV_US / $big_us")"
  hwm_mb=$(calc "$HWM_KB / 1024" 1)
  printf '  tandem peak RSS (VmHWM) %s MB (max sampled VmRSS %s MB over %d samples)   target <= %s MB: %s\n' \
    "$hwm_mb" "$(calc "$maxrss / 1024" 1)" "$samples" "$TARGET_RSS_MB" "$(verdict "$hwm_mb" '<=' "$TARGET_RSS_MB")"
  log_oddities "$WORK/$tag.log" "$B_DOWN_RE"
  finish_run "$tag"
fi
