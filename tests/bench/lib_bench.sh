# lib_bench.sh: helpers shared by tests/bench/bench_*.sh, each of which
# starts with `source lib_bench.sh BUILD_DIR`: the build directory is
# checked and tests/integration/lib.sh (clusters, psql_on, start_tandem,
# wait_for) sourced with its tandem. Measures, never asserts: a benchmark
# only fails when it cannot measure.

BUILD_DIR=${1:-}
if [ -z "$BUILD_DIR" ] || [ ! -x "$BUILD_DIR/tandem" ]; then
  echo "usage: $0 BUILD_DIR (a release build containing ${BENCH_NEEDS:-tandem})" >&2; exit 2;
fi
source "$(dirname "${BASH_SOURCE[0]}")/../integration/lib.sh" "$BUILD_DIR/tandem"

# Numbers are formatted with '.' whatever the caller's locale.
export LC_ALL=C

# ensure_tool CMD PACKAGE: installs PACKAGE (Debian) when CMD is missing.
# bc is the only tool beyond packaging/install-deps every bench needs;
# perf (linux-perf) only bench_apply.sh's PROFILE_DIR.
ensure_tool() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "# $1 missing: installing $2" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null 2>&1 ||
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null; }
  command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is required" >&2; exit 2; }
}
ensure_bc() { ensure_tool bc bc; }

# now_us: wall clock in microseconds (same clock as clock_timestamp() and
# tandem's journal timestamps: all on this host).
now_us() { local t=$EPOCHREALTIME; echo "${t/[.,]/}"; }

# calc EXPR [SCALE]: bc arithmetic, printed with SCALE decimals (default 3).
calc() { printf "%.${2:-3}f" "$(echo "scale=9; $1" | bc -l)"; }

# rate N DURATION_US: N per second.
rate() { calc "$1 * 1000000 / $2" 0; }

# ms DURATION_US: milliseconds with one decimal.
ms() { calc "$1 / 1000" 1; }

# median V...: median of numeric values (mean of the middle two when even).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { if (NR == 0) exit 1; if (NR % 2) printf "%s", v[(NR + 1) / 2];
          else printf "%.6f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# verdict VALUE OP TARGET: "meets" or "misses" for the printed target column.
verdict() {
  if [ "$(echo "$1 $2 $3" | bc -l)" = 1 ]; then echo "meets"; else echo "misses"; fi
}

# vm_kb PID FIELD: a /proc/PID/status field in kB (VmHWM, VmRSS), or 0.
vm_kb() { awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# bench_config FILE STATE TAG B_CONNINFO SPEC...: an a_to_b pipeline from
# cluster A to the B conninfo; each SPEC is table:f1,f2 (key id). Publication,
# slot and origin are named tandem_TAG / tandem_TAG_b so runs never share them.
bench_config() {
  local file=$1 state=$2 tag=$3 bconn=$4; shift 4
  local maps="" sep="" spec t f fields fsep
  for spec in "$@"; do
    t=${spec%%:*}; fields=""; fsep=""
    for f in $(echo "${spec#*:}" | tr ',' ' '); do fields="$fields$fsep\"$f\": \"$f\""; fsep=", "; done
    maps="$maps$sep{ \"name\": \"$t\",
      \"a\": { \"endpoint\": \"A\", \"table\": \"public.$t\", \"key\": [\"id\"] },
      \"b\": { \"endpoint\": \"B\", \"table\": \"public.$t\", \"key\": [\"id\"] },
      \"fields\": { $fields }, \"direction\": \"a_to_b\",
      \"conflict\": { \"strategy\": \"last_write_wins\" } }"
    sep=", "
  done
  cat >"$file" <<JSON
{ "name": "bench_$tag",
  "state": { "path": "$state" },
  "log": { "level": "${LOG_LEVEL:-info}" },
  "http": { "listen": "127.0.0.1:0" },
  "endpoints": {
    "A": { "kind": "postgres", "conninfo": "$(conninfo_of A)",
           "publication": "tandem_$tag", "slot": "tandem_$tag", "origin": "tandem_$tag" },
    "B": { "kind": "postgres", "conninfo": "$bconn",
           "publication": "tandem_${tag}_b", "slot": "tandem_${tag}_b", "origin": "tandem_${tag}_b" } },
  "mappings": [ $maps ] }
JSON
}

# stop_tandem: SIGTERM the daemon started by start_tandem and wait for it.
stop_tandem() {
  [ -n "${TANDEM_PID:-}" ] || return 0
  kill -TERM "$TANDEM_PID" 2>/dev/null || true
  local i=0
  while kill -0 "$TANDEM_PID" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
  if kill -0 "$TANDEM_PID" 2>/dev/null; then
    echo "# tandem $TANDEM_PID ignored SIGTERM for 60 s: killed" >&2
    kill -9 "$TANDEM_PID" 2>/dev/null || true
  fi
  wait "$TANDEM_PID" 2>/dev/null || true
  TANDEM_PID=""
}

# slot_exists NAME: the logical slot NAME exists on A.
slot_exists() { [ "$(psql_on A -c "select count(*) from pg_replication_slots where slot_name = '$1'")" = 1 ]; }
slot_inactive() { [ "$(psql_on A -c "select count(*) from pg_replication_slots where slot_name = '$1' and not active")" = 1 ]; }

# drop_slot NAME: drops slot NAME on A if it exists (waits until inactive).
drop_slot() {
  slot_exists "$1" || return 0
  wait_for "slot $1 inactive" 60 slot_inactive "$1" || true
  psql_on A -c "select pg_drop_replication_slot('$1')" >/dev/null
}

# log_oddities LOG [EXPECTED_RE]: prints tandem's warn/error lines, counted per
# distinct message; lines matching EXPECTED_RE (grep -E) are left out.
log_oddities() {
  [ -s "$1" ] || return 0
  local lines
  lines=$(grep '"level":"\(warn\|error\|fatal\)"' "$1" | { if [ -n "${2:-}" ]; then grep -Ev "$2"; else cat; fi; } || true)
  [ -n "$lines" ] || return 0
  echo "# tandem logged $(printf '%s\n' "$lines" | wc -l) unexpected warn/error line(s) in $1:"
  printf '%s\n' "$lines" |
    sed -n 's/.*"level":"\([a-z]*\)".*"msg":"\([^"]*\)".*/\1: \2/p' | sort | uniq -c | sed 's/^/#   /'
  printf '%s\n' "$lines" | head -n 3 | cut -c1-400 | sed 's/^/#   e.g. /'
}

# cpu_mark: the machine's busy and idle CPU time so far ("BUSY IDLE", in
# clock ticks, all CPUs together; iowait counts as idle), from /proc/stat.
cpu_mark() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }

# cpu_since MARK: "BUSY_MS PCT": the CPU time every process on the machine
# used since MARK, and the share of all CPUs' time that was.
cpu_since() {
  echo "$1 $(cpu_mark) $(getconf CLK_TCK)" |
    awk '{ busy = $3 - $1; idle = $4 - $2; t = busy + idle;
           printf "%d %d", busy * 1000 / $5, (t > 0 ? 100 * busy / t : 0) }'
}

# cpu_busy_pct WINDOW_S: share of all CPUs busy over the window, in percent.
cpu_busy_pct() {
  local a
  a=$(cpu_mark)
  sleep "$1"
  cpu_since "$a" | cut -d' ' -f2
}

# wait_quiet: the machine may be shared (other test suites, builds); before a
# measurement, write back the dirty pages earlier workloads left (with
# fsync=off the clusters leave many: whoever fsyncs next would wait behind
# them), then wait up to QUIET_WAIT_S (60) for CPU use by others to fall
# below QUIET_PCT (20) percent. Sets BUSY_PCT to the last sample; never fails.
wait_quiet() {
  local deadline=$(( $(date +%s) + ${QUIET_WAIT_S:-60} ))
  sync
  while :; do
    BUSY_PCT=$(cpu_busy_pct 0.5)
    [ "$BUSY_PCT" -lt "${QUIET_PCT:-20}" ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || { echo "# machine still ${BUSY_PCT}% busy after ${QUIET_WAIT_S:-60} s; measuring anyway"; return 0; }
  done
}
