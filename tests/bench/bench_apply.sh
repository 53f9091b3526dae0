#!/usr/bin/env bash
# bench_apply.sh BUILD_DIR: tandem's PostgreSQL apply (issue 4), measured
# against PostgreSQL's own logical replication (CREATE SUBSCRIPTION) between
# the same two clusters in the same run. Prints tandem/native ratios.
#
# Workloads (each on its own table pair, fresh slots every run):
#   a    ROWS rows in TXN_ROWS-row transactions, replicator running, end to end
#   c    BIG_TXN_ROWS rows in one transaction (from its commit to the last row on B)
#   e1   backlog drain of (a): written while the replicator is stopped, then started
#   e2   backlog drain of UPD_TXNS one-row update transactions
#   lat  one-row inserts every LAT_INTERVAL_MS for LAT_S seconds: p50/p99 latency
# Arrival on B: a column `arrived timestamptz default clock_timestamp()` for
# the insert workloads; an ENABLE ALWAYS trigger for e2 and lat.
# Environment: ROWS (200000), TXN_ROWS (1000), BIG_TXN_ROWS (50000),
# UPD_TXNS (20000), LAT_S (10), LAT_INTERVAL_MS (10), RUNS (3),
# WORKLOADS ("a c e1 e2 lat"), REPLICA_IDENTITY (full | default),
# FSYNC (off, as tests/integration/lib.sh sets it | on: both clusters flush
# commits to disk), KEEP_WORK=1 keeps the work directory, PROFILE_DIR=DIR
# records each tandem run with `perf record` (DWARF call graphs) into
# DIR/<workload>_<run>.data and prints where its CPU went
# (tests/bench/perf_split.py); a profiled run is slower: read its times
# apart.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib_bench.sh" "${1:-}"

ROWS=${ROWS:-200000}
TXN_ROWS=${TXN_ROWS:-1000}
BIG_TXN_ROWS=${BIG_TXN_ROWS:-50000}
UPD_TXNS=${UPD_TXNS:-20000}
LAT_S=${LAT_S:-10}
LAT_INTERVAL_MS=${LAT_INTERVAL_MS:-10}
LAT_N=$(( LAT_S * 1000 / LAT_INTERVAL_MS ))
RUNS=${RUNS:-3}
WORKLOADS=${WORKLOADS:-a c e1 e2 lat}
REPLICA_IDENTITY=${REPLICA_IDENTITY:-full}
TIMEOUT_S=${TIMEOUT_S:-600}
FSYNC=${FSYNC:-off}

ensure_bc
if [ -n "${PROFILE_DIR:-}" ]; then
  ensure_tool perf linux-perf
  mkdir -p "$PROFILE_DIR"
fi
trap 'rc=$?; set +e; (exit $rc); cleanup' EXIT

echo "# bench_apply: $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 " GiB RAM" }'), $("$PGBIN/postgres" --version)"
echo "# tandem: $TANDEM ($("$TANDEM" version 2>/dev/null | head -n 1))"
echo "# a/e1: $ROWS rows in $TXN_ROWS-row txns; c: $BIG_TXN_ROWS rows in 1 txn; e2: $UPD_TXNS one-row update txns;" \
     "lat: every $LAT_INTERVAL_MS ms for $LAT_S s; runs: $RUNS; source replica identity: $REPLICA_IDENTITY; fsync: $FSYNC"

pg_start A
pg_start B
# The logical replication launcher starts workers at most once per
# wal_retrieve_retry_interval (5 s by default, for all subscriptions at once):
# the benchmark enables subscriptions back to back, so that throttle would be
# measured as drain time. Lower it on B (it changes nothing else measured).
psql_on B -c "alter system set wal_retrieve_retry_interval = '20ms'" -c "select pg_reload_conf()" >/dev/null
if [ "$FSYNC" = on ]; then
  for c in A B; do psql_on "$c" -c "alter system set fsync = on" -c "select pg_reload_conf()" >/dev/null; done
fi

# ---- schema: one table per workload and replicator, same definition on A
# and B; B adds `arrived`. No autovacuum on them: it would wake at random
# moments of a measurement (tables are truncated before every run instead).
psql_on A -c "
  create procedure bench_fill(tbl text, first bigint, n bigint, per_txn int) language plpgsql as \$\$
  declare i bigint := first;
  begin
    while i < first + n loop
      execute format('insert into %I (id, v) select g, md5(g::text) from generate_series(\$1, \$2) g', tbl)
        using i, least(i + per_txn, first + n) - 1;
      commit;
      i := i + per_txn;
    end loop;
  end \$\$;
  create procedure bench_update(tbl text, n bigint) language plpgsql as \$\$
  begin
    for i in 1 .. n loop
      execute format('update %I set v = md5(v), n = n + 1 where id = \$1', tbl) using i;
      commit;
    end loop;
  end \$\$;
  create procedure bench_tick(tbl text, n int, interval_ms int) language plpgsql as \$\$
  begin
    for i in 1 .. n loop
      execute format('insert into %I (id, v) values (\$1, md5(\$1::text))', tbl) using i;
      commit;
      perform pg_sleep(interval_ms / 1000.0);
    end loop;
  end \$\$;"
psql_on B -c "
  create function bench_arrived() returns trigger language plpgsql as \$\$
  begin new.arrived := clock_timestamp(); return new; end \$\$;"
for w in a c e1 e2 lat; do
  for R in nat tan; do
    t="${w}_$R"
    cols="id bigint primary key, v text, n int not null default 0, created timestamptz not null default clock_timestamp()"
    psql_on A -c "create table $t ($cols) with (autovacuum_enabled = off); alter table $t replica identity $REPLICA_IDENTITY"
    psql_on B -c "create table $t ($cols, arrived timestamptz default clock_timestamp()) with (autovacuum_enabled = off)"
    if [ "$w" = e2 ] || [ "$w" = lat ]; then
      psql_on B -c "create trigger arrived before insert or update on $t for each row execute function bench_arrived();
                    alter table $t enable always trigger arrived"
    fi
  done
done

# ---- replicators. R is nat (CREATE SUBSCRIPTION) or tan (tandem a_to_b).
# NAME is unique per workload and run, so no slot, origin or state is reused.
sub_streaming() {
  [ "$(psql_on A -c "select count(*) from pg_stat_replication where application_name = '$1' and state = 'streaming'")" = 1 ]
}
tandem_ready() { grep -q '"msg":"ready' "$1"; }
# bq: psql on B without the NOTICEs of CREATE/DROP SUBSCRIPTION.
bq() { PGOPTIONS="-c client_min_messages=warning" psql_on B "$@"; }

# rep_prepare R NAME TABLE ENABLED: creates the replicator's slot; with
# ENABLED=1 also starts it and waits until it streams.
rep_prepare() {
  local R=$1 name=$2 t=$3 enabled=$4
  if [ "$R" = nat ]; then
    psql_on A -c "create publication $name for table $t"
    bq -c "create subscription $name connection '$(conninfo_of A)' publication $name
                  with (copy_data = false, enabled = $([ "$enabled" = 1 ] && echo true || echo false))"
    [ "$enabled" = 1 ] && wait_for "subscription $name streaming" 60 sub_streaming "$name"
  else
    rm -f "$WORK/$name.db" "$WORK/$name.db-wal" "$WORK/$name.db-shm"
    bench_config "$WORK/$name.json" "$WORK/$name.db" "$name" "$(conninfo_of B)" "$t:id,v,n,created"
    "$TANDEM" setup -c "$WORK/$name.json" >>"$WORK/setup.log" 2>&1 ||
      { echo "tandem setup failed; see $WORK/setup.log" >&2; exit 1; }
    if [ "$enabled" = 1 ]; then rep_start "$R" "$name"; wait_for "tandem $name ready" 60 tandem_ready "$WORK/$name.log"; fi
  fi
  return 0
}

# rep_start R NAME: starts a prepared replicator (no waiting).
rep_start() {
  if [ "$1" = nat ]; then psql_on B -c "alter subscription $2 enable"
  else start_tandem "$WORK/$2.json" "$WORK/$2.log"; profile_start "$2"; fi
}

# With PROFILE_DIR: perf records tandem from its start until it stops.
PERF_PID=""
profile_start() {
  [ -n "${PROFILE_DIR:-}" ] || return 0
  # perf -p follows the threads there when it attaches: wait (at most 2 s)
  # for libuv's pool (4 threads, started by the first state sync), which
  # runs the syncs and checkpoints.
  local i=0
  while [ "$(ls "/proc/$TANDEM_PID/task" 2>/dev/null | wc -l)" -lt 5 ] && [ $i -lt 200 ]; do
    sleep 0.01; i=$((i + 1))
  done
  perf record -q --call-graph dwarf,16384 -F 1999 -p "$TANDEM_PID" \
    -o "$PROFILE_DIR/$1.data" >/dev/null 2>&1 &
  PERF_PID=$!
}
profile_stop() {
  [ -n "$PERF_PID" ] || return 0
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=""
}

# rep_stop R NAME: stops it; its slot keeps the position.
rep_stop() {
  if [ "$1" = nat ]; then
    psql_on B -c "alter subscription $2 disable"
    wait_for "slot $2 inactive" 60 slot_inactive "$2"
  else
    profile_stop
    stop_tandem
    wait_for "slot tandem_$2 inactive" 60 slot_inactive "tandem_$2"
  fi
}

# rep_finish R NAME: stops it and drops everything it created.
rep_finish() {
  if [ "$1" = nat ]; then
    bq -c "drop subscription $2"
    psql_on A -c "drop publication if exists $2"
  else
    [ -n "${TANDEM_PID:-}" ] && HWM_KB=$(vm_kb "$TANDEM_PID" VmHWM)
    profile_stop
    stop_tandem
    "$TANDEM" teardown -c "$WORK/$2.json" >>"$WORK/setup.log" 2>&1 || echo "# tandem teardown of $2 failed; see $WORK/setup.log"
    drop_slot "tandem_$2"
    log_oddities "$WORK/$2.log"
    # Nothing here conflicts or is rejected: any such row is worth a look.
    local odd
    odd=$(sqlite3 -readonly -cmd ".timeout 5000" "$WORK/$2.db" \
      "select (select count(*) from conflicts) || ' conflict(s), ' || (select count(*) from dlq) || ' dead-lettered'")
    [ "$odd" = "0 conflict(s), 0 dead-lettered" ] || echo "# WARNING: tandem $2 recorded $odd"
  fi
}

# b_wait DESC TABLE ID [MIN_N]: waits until row ID of TABLE is on B with
# n >= MIN_N, polling every 20 ms from one session. (Polling with a psql
# process per try, as wait_for does, cost ~20 ms of CPU per try on this
# 2-core machine, taken from whichever replicator was being measured.)
b_wait() {
  PGOPTIONS="-c statement_timeout=${TIMEOUT_S}s" psql_on B -c "do \$\$ begin
      while not exists (select 1 from $2 where id = $3 and n >= ${4:-0}) loop
        perform pg_sleep(0.02);
      end loop;
    end \$\$" >/dev/null || { echo "timeout waiting for: $1" >&2; exit 1; }
}
b_max_arrived_us() { psql_on B -c "select (extract(epoch from max(arrived)) * 1000000)::bigint from $1 where n >= ${2:-0}"; }
# verify TABLE EXPECTED_ROWS: B equals A (rows and md5 over ordered rows).
verify() {
  local cnt
  cnt=$(psql_on B -c "select count(*) from $1")
  if [ "$cnt" != "$2" ] || [ "$(table_md5 A "$1" 'id, v, n, created')" != "$(table_md5 B "$1" 'id, v, n, created')" ]; then
    echo "# WARNING: $1 on B differs from A after the run (B has $cnt rows, expected $2)"
  fi
}
truncate_both() { psql_on A -c "truncate $1"; psql_on B -c "truncate $1"; checkpoint_both; }
checkpoint_both() { psql_on A -c checkpoint; psql_on B -c checkpoint; }
# journaled_ms R NAME T0: for tandem, when its journal held the whole workload.
journaled_ms() {
  [ "$1" = tan ] || return 0
  local last
  last=$(sqlite3 -readonly -cmd ".timeout 5000" "$WORK/$2.db" "select max(committed_at_us) from journal_txn")
  echo "; tandem journal complete at $(ms $((last - $3))) ms"
}

# ---- CPU per replicator process. The measured window's CPU time (user +
# system) of the replicator's walsender on A, its applier (the native apply
# worker, or tandem) and, for tandem, its backend on B: where a ratio's time
# goes. cpu_begin (replicator running) marks the start; without it (e1, e2
# start their replicator inside the window) totals since process start count.
declare -A CPU0
rep_pids() {
  if [ "$1" = nat ]; then
    echo "walsender:$(psql_on A -c "select active_pid from pg_replication_slots where slot_name = '$2'")" \
         "apply-worker:$(psql_on B -c "select pid from pg_stat_subscription where subname = '$2' and relid is null")"
  else
    echo "walsender:$(psql_on A -c "select active_pid from pg_replication_slots where slot_name = 'tandem_$2'")" \
         "tandem:${TANDEM_PID:-}" \
         "B-backend:$(psql_on B -c "select pid from pg_stat_activity where application_name = 'tandem' and backend_type = 'client backend' order by backend_start limit 1")"
  fi
}
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000 / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
cpu_begin() {
  local p
  CPU0=()
  for p in $(rep_pids "$1" "$2"); do [ -n "${p#*:}" ] && CPU0[${p#*:}]=$(cpu_ms "${p#*:}"); done
  return 0
}
# cpu_end R NAME: "; CPU ms walsender N, tandem N, ..." (call before rep_finish).
cpu_end() {
  local p pid out=""
  for p in $(rep_pids "$1" "$2"); do
    pid=${p#*:}
    [ -n "$pid" ] || continue
    out="$out${out:+, }${p%%:*} $(( $(cpu_ms "$pid") - ${CPU0[$pid]:-0} ))"
  done
  echo "; CPU ms $out"
}

# machine_cpu MARK UNITS: the CPU every process on the machine used since
# MARK (taken when the measured time starts), per unit of work. Sets
# MCPU_DETAIL for the run's line and MCPU ("microseconds per unit:busy
# percent") for the summary. Both replicators keep every CPU busy on a
# small machine, so a throughput ratio there is close to the inverse
# ratio of these per-unit costs: they show what a ratio is made of.
machine_cpu() {
  local used pct
  read -r used pct <<<"$(cpu_since "$1")"
  MCPU="$(calc "$used * 1000 / $2" 2):$pct"
  MCPU_DETAIL="; machine CPU $used ms ($pct% of $(nproc) CPUs, $(calc "$used * 1000 / $2" 2) us per unit)"
}

# Each run_W R NAME sets VAL (rows/s or txn/s, or "p50 p99") and DETAIL.
run_a() {
  local R=$1 name=$2 t="a_$1" t0 tw t1 cpu
  truncate_both "$t"
  rep_prepare "$R" "$name" "$t" 1
  wait_quiet
  cpu_begin "$R" "$name"
  t0=$(now_us); m0=$(cpu_mark)
  psql_on A -c "call bench_fill('$t', 1, $ROWS, $TXN_ROWS)"
  tw=$(now_us)
  b_wait "$t complete on B" "$t" "$ROWS"
  machine_cpu "$m0" "$ROWS"
  t1=$(b_max_arrived_us "$t")
  cpu=$(cpu_end "$R" "$name")$MCPU_DETAIL
  rep_finish "$R" "$name"
  verify "$t" "$ROWS"
  VAL=$(rate "$ROWS" $((t1 - t0)))
  DETAIL="$(ms $((t1 - t0))) ms from writer start (writer $(ms $((tw - t0))) ms, last row $(ms $((t1 - tw))) ms after it)$(journaled_ms "$R" "$name" "$t0")$cpu"
}

run_c() {
  local R=$1 name=$2 t="c_$1" t0 tc t1 cpu
  truncate_both "$t"
  rep_prepare "$R" "$name" "$t" 1
  wait_quiet
  cpu_begin "$R" "$name"
  t0=$(now_us)
  psql_on A -c "insert into $t (id, v) select g, md5(g::text) from generate_series(1, $BIG_TXN_ROWS) g"
  tc=$(now_us); m0=$(cpu_mark)
  b_wait "$t complete on B" "$t" "$BIG_TXN_ROWS"
  machine_cpu "$m0" "$BIG_TXN_ROWS"
  t1=$(b_max_arrived_us "$t")
  cpu=$(cpu_end "$R" "$name")$MCPU_DETAIL
  rep_finish "$R" "$name"
  verify "$t" "$BIG_TXN_ROWS"
  VAL=$(rate "$BIG_TXN_ROWS" $((t1 - tc)))
  DETAIL="last row $(ms $((t1 - tc))) ms after the commit returned ($(ms $((t1 - t0))) ms from writer start = $(rate "$BIG_TXN_ROWS" $((t1 - t0))) rows/s)$cpu"
}

run_e1() {
  local R=$1 name=$2 t="e1_$1" t0 t1 cpu
  truncate_both "$t"
  rep_prepare "$R" "$name" "$t" 0
  psql_on A -c "call bench_fill('$t', 1, $ROWS, $TXN_ROWS)"
  checkpoint_both
  wait_quiet
  t0=$(now_us); m0=$(cpu_mark)
  rep_start "$R" "$name"
  b_wait "$t complete on B" "$t" "$ROWS"
  machine_cpu "$m0" "$ROWS"
  t1=$(b_max_arrived_us "$t")
  cpu=$(cpu_end "$R" "$name")$MCPU_DETAIL
  rep_finish "$R" "$name"
  verify "$t" "$ROWS"
  VAL=$(rate "$ROWS" $((t1 - t0)))
  DETAIL="$(ms $((t1 - t0))) ms from replicator start$(journaled_ms "$R" "$name" "$t0")$cpu"
}

run_e2() {
  local R=$1 name=$2 t="e2_$1" t0 t1 cpu
  truncate_both "$t"
  # The rows exist on both sides, put there by the replicator itself (so
  # tandem's shadow knows them); then it stops and the updates pile up.
  rep_prepare "$R" "$name" "$t" 1
  psql_on A -c "call bench_fill('$t', 1, $UPD_TXNS, 1000)"
  b_wait "$t seeded on B" "$t" "$UPD_TXNS"
  rep_stop "$R" "$name"
  psql_on A -c "call bench_update('$t', $UPD_TXNS)"
  checkpoint_both
  wait_quiet
  t0=$(now_us); m0=$(cpu_mark)
  rep_start "$R" "$name"
  b_wait "$t updates complete on B" "$t" "$UPD_TXNS" 1
  machine_cpu "$m0" "$UPD_TXNS"
  t1=$(b_max_arrived_us "$t" 1)
  cpu=$(cpu_end "$R" "$name")$MCPU_DETAIL
  rep_finish "$R" "$name"
  verify "$t" "$UPD_TXNS"
  VAL=$(rate "$UPD_TXNS" $((t1 - t0)))
  DETAIL="$(ms $((t1 - t0))) ms from replicator start$cpu"
}

run_lat() {
  local R=$1 name=$2 t="lat_$1" q cpu
  truncate_both "$t"
  rep_prepare "$R" "$name" "$t" 1
  wait_quiet
  cpu_begin "$R" "$name"
  psql_on A -c "call bench_tick('$t', $LAT_N, $LAT_INTERVAL_MS)"
  b_wait "$t complete on B" "$t" "$LAT_N"
  cpu=$(cpu_end "$R" "$name")
  rep_finish "$R" "$name"
  verify "$t" "$LAT_N"
  # created: clock_timestamp() of the insert on A (replicated); arrived: the
  # trigger's clock_timestamp() when the row is written on B. (B's commit
  # timestamps cannot serve: a replicated commit carries the origin's time.)
  q=$(psql_on B -F ' ' -c "
    with l as (select extract(epoch from arrived - created) * 1000 as ms from $t)
    select round(percentile_cont(0.5) within group (order by ms)::numeric, 2),
           round(percentile_cont(0.99) within group (order by ms)::numeric, 2),
           round(avg(ms)::numeric, 2), round(max(ms)::numeric, 2) from l")
  # shellcheck disable=SC2086 # four numbers, split on purpose
  set -- $q
  VAL="$1 $2"
  DETAIL="p50 $1 ms p99 $2 ms (mean $3 ms, max $4 ms) over $LAT_N inserts$cpu"
}

# proc_cpu_sum DETAIL: the sum of a run line's "CPU ms name N, name N".
proc_cpu_sum() { echo "$1" | sed -n 's/.*; CPU ms \([^;]*\).*/\1/p' | tr ',' '\n' | awk '{ s += $NF } END { print s + 0 }'; }

# ---- floor of (e1): what the cheapest form of the work tandem cannot skip
# costs on this machine, in CPU ms for ROWS rows. Both replicators keep
# both CPUs busy in (e1), so its ratio is bounded by native's CPU over
# this sum. Three parts:
#  - the walsender's decoding and sending (as tandem's runs measured it;
#    native's walsender does the same work);
#  - the rows' insert on B at its cheapest: one INSERT ... SELECT over
#    generate_series into a copy of the table, no parameters, no protocol;
#  - the journal and shadow rows tandem must keep (G1, G6) at their
#    cheapest: a bare bulk insert in one SQLite transaction, synchronous
#    off, with the schema and page size of the last (e1) run's state file
#    and that run's own shadow rows as values.
# Everything else tandem does (pgoutput decoding, JSON, hashing, libpq,
# commits, checkpoints) is left out, so the floor is below what any
# implementation of tandem's design can reach.
sqlite_cpu_ms() { sed -n 's/^Run Time: real [0-9.]* user \([0-9.]*\) sys \([0-9.]*\)$/\1 \2/p' | awk '{ s += $1 + $2 } END { printf "%d", s * 1000 }'; }
floor_insert_on_b() {
  psql_on B -c "create table floor_b (like e1_tan including all)"
  psql_on B -c "create temp table floor_src as select g as id, md5(g::text) as v from generate_series(1, $ROWS) g" \
    -c '\timing on' -c "insert into floor_b (id, v) select id, v from floor_src" |
    sed -n 's/^Time: \([0-9]*\)[.0-9]* ms.*/\1/p'
  psql_on B -c "drop table floor_b"
}
floor_state_rows() {
  local fdb="$WORK/floor.db"
  rm -f "$fdb" "$fdb-wal" "$fdb-shm"
  { echo "PRAGMA page_size = $(sqlite3 -readonly "$1" 'PRAGMA page_size');"
    echo "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;"
    sqlite3 -readonly "$1" '.schema journal_change' '.schema shadow'
    echo "ATTACH '$1' AS run;"
    echo "CREATE TEMP TABLE src AS SELECT row_number() OVER () AS seq, * FROM"
    echo " (SELECT * FROM run.shadow ORDER BY mapping, klen, key LIMIT $ROWS);"
    echo "DETACH run;"
    echo ".timer on"
    echo "INSERT INTO journal_change (seq, txn, mapping, op, key, fields, version_us)"
    echo " SELECT seq, 1 + (seq - 1) / $TXN_ROWS, mapping, 'I', key, fields, version_a_us FROM src;"
    echo "INSERT INTO shadow SELECT mapping, klen, key, hash, fields, version_a_us, version_b_us,"
    echo " tombstone, updated_at_us FROM src;"
  } | sqlite3 "$fdb" | sqlite_cpu_ms
}
# Each part is the least of 3 tries on a quiet machine (a floor).
floor_e1() {
  local state i b_ms=() sq_ms=() ws
  state=$(ls "$WORK"/e1_tan_r*.db 2>/dev/null | tail -n 1)
  [ -n "$state" ] && [ -n "$E1_WALSENDER" ] || return 0
  # shellcheck disable=SC2086 # a list of numbers
  ws=$(median $E1_WALSENDER)
  wait_quiet
  for i in 1 2 3; do
    b_ms+=("$(floor_insert_on_b)")
    sq_ms+=("$(floor_state_rows "$state")")
  done
  b_ms=$(printf '%s\n' "${b_ms[@]}" | sort -n | head -n 1)
  sq_ms=$(printf '%s\n' "${sq_ms[@]}" | sort -n | head -n 1)
  echo
  echo "floor of (e1), CPU ms for $ROWS rows (see the script's comment):"
  echo "  walsender $ws + insert on B $b_ms + journal and shadow rows $sq_ms = $((ws + b_ms + sq_ms))"
  # shellcheck disable=SC2086 # lists of numbers
  printf '  measured: native (walsender + apply worker) %s, tandem (walsender + tandem + B backend) %s\n' \
    "$(median ${PROC_CPU[e1,nat]})" "$(median ${PROC_CPU[e1,tan]})"
}

# ---- runs
declare -A VALS MCPUS PROC_CPU
E1_WALSENDER=""
for r in $(seq 1 "$RUNS"); do
  for w in $WORKLOADS; do
    if [ $(( r % 2 )) = 1 ]; then order="nat tan"; else order="tan nat"; fi
    for R in $order; do
      HWM_KB=0
      CPU0=()
      "run_$w" "$R" "${w}_${R}_r$r"
      VALS[$w,$R]="${VALS[$w,$R]:-} ${VAL// /:}"
      MCPUS[$w,$R]="${MCPUS[$w,$R]:-} ${MCPU:-}"; MCPU=""
      PROC_CPU[$w,$R]="${PROC_CPU[$w,$R]:-} $(proc_cpu_sum "$DETAIL")"
      [ "$w/$R" = e1/tan ] && E1_WALSENDER="${E1_WALSENDER:-} $(echo "$DETAIL" | sed -n 's/.*walsender \([0-9]*\).*/\1/p')"
      extra=""; [ "$R" = tan ] && extra="; tandem VmHWM $(calc "$HWM_KB / 1024" 1) MB"
      printf "run %d %-3s %-6s %s%s [CPU busy just before: %s%%]\n" "$r" "$w" "$([ "$R" = nat ] && echo native || echo tandem)" "$DETAIL" "$extra" "$BUSY_PCT"
    done
  done
done

# ---- summary: medians over runs; ratios are tandem/native (for latency,
# native/tandem, so higher is better everywhere).
echo
echo "summary (median of $RUNS runs; ratio = tandem/native throughput):"
printf '  %-44s %12s %12s %7s  %s\n' workload native tandem ratio target
col() { local v out=(); for v in $1; do out+=("$(echo "$v" | cut -d: -f"$2")"); done; median "${out[@]}"; }
for w in $WORKLOADS; do
  case $w in
    a)  label="(a) $ROWS rows, $TXN_ROWS-row txns, end to end"; unit="rows/s"; target=1.0 ;;
    c)  label="(c) $BIG_TXN_ROWS rows in one txn, after commit"; unit="rows/s"; target=1.0 ;;
    e1) label="(e1) backlog drain of (a)"; unit="rows/s"; target=1.0 ;;
    e2) label="(e2) backlog drain, $UPD_TXNS 1-row updates"; unit="txn/s"; target=1.5 ;;
    lat) continue ;;
  esac
  # The ratio is the median of the per-run ratios (runs pair native and tandem).
  ratios=(); read -r -a nv <<<"${VALS[$w,nat]}"; read -r -a tv <<<"${VALS[$w,tan]}"
  for i in "${!nv[@]}"; do ratios+=("$(calc "${tv[$i]} / ${nv[$i]}")"); done
  ratio=$(median "${ratios[@]}")
  printf '  %-44s %12.0f %12.0f %7.3f  >= %s %s: %s\n' "$label" "$(median "${nv[@]}")" "$(median "${tv[@]}")" \
    "$ratio" "$target" "$unit" "$(verdict "$ratio" '>=' "$target")"
  per=${unit%/s}
  printf '  %-44s %12s %12s\n' "  machine CPU per ${per%s}, us (CPUs busy)" \
    "$(col "${MCPUS[$w,nat]}" 1) ($(col "${MCPUS[$w,nat]}" 2)%)" "$(col "${MCPUS[$w,tan]}" 1) ($(col "${MCPUS[$w,tan]}" 2)%)"
done
if [[ " $WORKLOADS " == *" lat "* ]]; then
  for R in nat tan; do
    p50=$(col "${VALS[lat,$R]}" 1); p99=$(col "${VALS[lat,$R]}" 2)
    if [ $R = nat ]; then np99=$p99; fi
    printf '  %-44s p50 %6.2f ms  p99 %6.2f ms%s\n' "latency, one-row inserts every $LAT_INTERVAL_MS ms, $([ $R = nat ] && echo native || echo tandem)" \
      "$p50" "$p99" "$([ $R = tan ] && echo "   p99 target <= 10 ms: $(verdict "$p99" '<=' 10); native p99 / tandem p99 = $(calc "$np99 / $p99" 2)")"
  done
fi

[[ " $WORKLOADS " != *" e1 "* ]] || floor_e1

if [ -n "${PROFILE_DIR:-}" ]; then
  for f in "$PROFILE_DIR"/*.data; do
    [ -f "$f" ] || continue
    echo
    echo "profile $(basename "$f" .data): share of tandem's CPU samples (innermost tagged frame)"
    perf script -i "$f" 2>/dev/null | python3 "$(dirname "$0")/perf_split.py"
  done
fi
