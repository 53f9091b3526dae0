#!/usr/bin/env bash
# bench_rest.sh BUILD_DIR: tandem between PostgreSQL and a REST API (issue 5),
# against the bundled CRM simulator (tests/crmsim), measured beside crmsim's
# own request ceiling (wrk, or ab, in the same run). Prints ratios.
#
#   (a) REST -> PG: IN_ROWS records preloaded into crmsim, then `tandem run`
#       pages them (updated_since feed) into a PostgreSQL table: records/s
#       from process start to the last row's arrival (a column default
#       clock_timestamp() on the table).
#   (b) PG -> REST: OUT_ROWS rows inserted into a PostgreSQL table (in
#       OUT_TXN_ROWS-row transactions) while `tandem run` streams them to
#       crmsim, once with max_in_flight 1 and once with 8: writes/s from the
#       writer's start until crmsim has answered every create with a 2xx
#       (GET /_admin/stats, polled every 20 ms).
#   (c) crmsim's ceiling: wrk (ab when wrk cannot be installed) for CEIL_S
#       seconds on the feed page route (1 connection, as tandem pages: one
#       page at a time), GET /{res}/{id} (8 connections) and the create route
#       tandem uses (1 and 8 connections).
# (a) and (b) print their rate as a fraction of the matching ceiling, and the
# issue's targets (>= 10k records/s in; >= 5k writes/s out with 8 in flight).
#
# Environment: IN_ROWS (100000), OUT_ROWS (20000), OUT_TXN_ROWS (1000),
# RUNS (3), PAGE_SIZE (1000: crmsim's cap), MAX_RPS (100000: the endpoint's
# max_requests_per_s, so the limiter is not what is measured), CREATE (POST |
# PUT: the mapping's write.create), CEIL_S (5), PARTS ("in out": (a) and
# (b); the ceiling is always measured), CRMSIM (BUILD_DIR/tests/crmsim/crmsim),
# KEEP_WORK=1 keeps the work directory.
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_NEEDS="tandem and tests/crmsim/crmsim" source "$HERE/lib_bench.sh" "${1:-}"

IN_ROWS=${IN_ROWS:-100000}
OUT_ROWS=${OUT_ROWS:-20000}
OUT_TXN_ROWS=${OUT_TXN_ROWS:-1000}
RUNS=${RUNS:-3}
PAGE_SIZE=${PAGE_SIZE:-1000}
MAX_RPS=${MAX_RPS:-100000}
CREATE=${CREATE:-POST}
CEIL_S=${CEIL_S:-5}
PARTS=${PARTS:-in out}
TIMEOUT_S=${TIMEOUT_S:-600}
CRMSIM=$(readlink -f "${CRMSIM:-$BUILD_DIR/tests/crmsim/crmsim}")
TARGET_IN=10000
TARGET_OUT=5000
[ -x "$CRMSIM" ] || { echo "crmsim not found at $CRMSIM (set CRMSIM)" >&2; exit 2; }
case $CREATE in POST|PUT) ;; *) echo "CREATE must be POST or PUT" >&2; exit 2 ;; esac

# The load tool: wrk (Debian package `wrk`), else ab (apache2-utils).
LOADTOOL=""
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null 2>&1 ||
    { $sudo apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null 2>&1; }
}
ensure_loadtool() {
  if ! command -v wrk >/dev/null 2>&1; then
    echo "# wrk missing: installing it" >&2
    apt_install wrk || true
  fi
  if command -v wrk >/dev/null 2>&1; then LOADTOOL=wrk; return 0; fi
  if ! command -v ab >/dev/null 2>&1; then
    echo "# wrk unavailable: installing apache2-utils for ab" >&2
    apt_install apache2-utils || true
  fi
  command -v ab >/dev/null 2>&1 || { echo "bench: wrk or ab is required" >&2; exit 2; }
  LOADTOOL=ab
}
for tool in curl jq; do command -v $tool >/dev/null 2>&1 || apt_install $tool; done
ensure_bc
ensure_loadtool
# set +e first: under errexit the (exit $rc) that hands cleanup the status would
# end the shell before cleanup ran, leaving clusters and daemons behind.
trap 'rc=$?; set +e; (exit $rc); cleanup' EXIT

echo "# bench_rest: $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 " GiB RAM" }'), $("$PGBIN/postgres" --version), load tool $LOADTOOL"
echo "# tandem: $TANDEM ($("$TANDEM" version 2>/dev/null | head -n 1))"
echo "# (a) $IN_ROWS records, page_size $PAGE_SIZE; (b) $OUT_ROWS rows in $OUT_TXN_ROWS-row txns, create $CREATE," \
     "max_in_flight 1 and 8; max_requests_per_s $MAX_RPS; runs: $RUNS; ceiling: $CEIL_S s per route"

pg_start A
RESOURCES=rin,ceil
for r in $(seq 1 "$RUNS"); do RESOURCES="$RESOURCES,out1r$r,out8r$r"; done
# 2 + 2 * RUNS resources (crmsim holds at most 16): one resource per (b) run,
# so every run starts on an empty resource without resetting the backlog.
[ $((2 + 2 * RUNS)) -le 16 ] || { echo "RUNS at most 7" >&2; exit 2; }
"$CRMSIM" --listen 127.0.0.1:0 --resources "$RESOURCES" >"$WORK/crm.out" 2>"$WORK/crmsim.log" &
CRM_PID=$!
DAEMONS+=("$CRM_PID")
wait_for "crmsim listening" 10 grep -q listening "$WORK/crm.out"
CRM_HOSTPORT=$(sed -n 's/.*"listening":"\([^"]*\)".*/\1/p' "$WORK/crm.out")
CRM="http://$CRM_HOSTPORT"

# ---- schema: (a) one table per run, (b) one per run and in-flight setting.
# `arrived` is not mapped: tandem's insert leaves it to its default.
cols="id bigint primary key, name text, email text, n int"
for r in $(seq 1 "$RUNS"); do
  psql_on A -c "create table rin_r$r ($cols, arrived timestamptz default clock_timestamp()) with (autovacuum_enabled = off)"
  for k in 1 8; do
    psql_on A -c "create table out${k}r$r ($cols) with (autovacuum_enabled = off);
                  alter table out${k}r$r replica identity full"
  done
done
psql_on A -c "
  create procedure bench_fill(tbl text, n bigint, per_txn int) language plpgsql as \$\$
  declare i bigint := 1;
  begin
    while i <= n loop
      execute format('insert into %I select g, ''name '' || g, ''e'' || g || ''@example.com'', g %% 1000
                      from generate_series(\$1, \$2) g', tbl) using i, least(i + per_txn - 1, n);
      commit;
      i := i + per_txn;
    end loop;
  end \$\$;"

# rest_config FILE TAG DIRECTION TABLE RESOURCE IN_FLIGHT: one mapping
# between A's TABLE and crmsim's RESOURCE (fields id, name, email, n).
rest_config() {
  local file=$1 tag=$2 dir=$3 table=$4 res=$5 inflight=$6
  cat >"$file" <<JSON
{ "name": "bench_$tag", "state": { "path": "$WORK/$tag.db" },
  "log": { "level": "${LOG_LEVEL:-info}" },
  "http": { "listen": "127.0.0.1:0" },
  "endpoints": {
    "app": { "kind": "postgres", "conninfo": "$(conninfo_of A)",
             "publication": "tandem_$tag", "slot": "tandem_$tag", "origin": "tandem_$tag" },
    "crm": { "kind": "rest", "base_url": "$CRM", "poll_interval_ms": 200,
             "page_size": $PAGE_SIZE, "timeout_ms": 10000, "max_in_flight": $inflight,
             "max_requests_per_s": $MAX_RPS } },
  "mappings": [
    { "name": "$table",
      "a": { "endpoint": "app", "table": "public.$table", "key": ["id"] },
      "b": { "endpoint": "crm", "resource": "/$res", "key": ["id"],
             "feed": { "style": "updated_since", "cursor_field": "updated_at",
                       "cursor_param": "updated_at_gte", "limit_param": "limit",
                       "offset_param": "offset", "deleted_field": "deleted" },
             "write": { "create": "$CREATE", "update": "PATCH", "delete": "DELETE" } },
      "fields": { "id": "id", "name": "name", "email": "email", "n": "n" },
      "direction": "$dir", "conflict": { "strategy": "last_write_wins" } } ] }
JSON
}

tandem_ready() { grep -q '"msg":"ready' "$1"; }
sqs() { sqlite3 -readonly -cmd ".timeout 5000" "$WORK/$1.db" "$2"; }
tandem_setup() {
  "$TANDEM" setup -c "$WORK/$1.json" >>"$WORK/setup.log" 2>&1 ||
    { echo "tandem setup failed; see $WORK/setup.log" >&2; exit 1; }
}
tandem_finish() {
  HWM_KB=$(vm_kb "$TANDEM_PID" VmHWM)
  stop_tandem
  "$TANDEM" teardown -c "$WORK/$1.json" >>"$WORK/setup.log" 2>&1 || echo "# tandem teardown of $1 failed; see $WORK/setup.log"
  drop_slot "tandem_$1"
  log_oddities "$WORK/$1.log"
  local odd
  odd=$(sqs "$1" "select (select count(*) from conflicts) || ' conflict(s), ' || (select count(*) from dlq) || ' dead-lettered'")
  [ "$odd" = "0 conflict(s), 0 dead-lettered" ] || echo "# WARNING: tandem $1 recorded $odd"
}

# crm_writes_ok RES: 2xx answers to POST/PUT/PATCH on RES so far (from
# /_admin/stats; bash only, as it is polled every 20 ms).
crm_writes_ok() {
  local s n=0 re="\"(POST|PUT|PATCH) /$1(/\\{id\\})?\":\\{([^}]*)\\}" obj c
  s=$(curl -fsS "$CRM/_admin/stats") || { echo 0; return; }
  while [[ $s =~ $re ]]; do
    obj=${BASH_REMATCH[3]}
    s=${s#*"${BASH_REMATCH[0]}"}
    while [[ $obj =~ \"2[0-9][0-9]\":([0-9]+) ]]; do
      c=${BASH_REMATCH[1]}; n=$((n + c)); obj=${obj#*"${BASH_REMATCH[0]}"}
    done
  done
  echo "$n"
}
# crm_routes RES: the routes on RES with their answers, one line each.
crm_routes() {
  curl -fsS "$CRM/_admin/stats" | jq -r --arg r "/$1" '.routes | to_entries[]
    | select(.key | split(" ")[1] | startswith($r)) | "\(.key) \(.value | tojson)"' | paste -sd ';' -
}

# ---- preload: IN_ROWS PUTs into /rin, 16 at a time, from one curl config.
preload() {
  local t0 t1
  awk -v crm="$CRM" -v n="$IN_ROWS" 'BEGIN {
    for (i = 1; i <= n; i++) {
      if (i > 1) print "next"
      printf "url = \"%s/rin/%d\"\nrequest = \"PUT\"\nheader = \"Content-Type: application/json\"\n", crm, i
      printf "data = \"{\\\"name\\\":\\\"name %d\\\",\\\"email\\\":\\\"e%d@example.com\\\",\\\"n\\\":%d}\"\n", i, i, i % 1000
      print "output = \"/dev/null\""
    } }' >"$WORK/preload.curl"
  t0=$(now_us)
  curl -sS --no-progress-meter --parallel --parallel-max 16 -K "$WORK/preload.curl" 2>"$WORK/preload.log" ||
    { echo "preload failed; see $WORK/preload.log" >&2; exit 1; }
  t1=$(now_us)
  local got
  got=$(crm_writes_ok rin)
  [ "$got" = "$IN_ROWS" ] || { echo "preload: crmsim answered $got of $IN_ROWS PUTs with 2xx" >&2; exit 1; }
  echo "preload: $IN_ROWS records PUT into crmsim in $(ms $((t1 - t0))) ms ($(rate "$IN_ROWS" $((t1 - t0))) PUTs/s, curl --parallel, 16 at a time)"
}

# ---- (c) the ceiling: loadtool NAME PATH CONNS [BODYKIND]; sets CEIL
# (requests/s) and prints a line. Without BODYKIND: GET PATH; put: a new id
# per request, PUT PATH/{n}; post: POST PATH (server-assigned id).
loadtool() {
  local name=$1 path=$2 conns=$3 kind=${4:-} out rps non2xx
  wait_quiet
  if [ "$LOADTOOL" = wrk ]; then
    local script="$WORK/wrk_$kind.lua"
    case $kind in
      put) cat >"$script" <<'LUA'
local n = 0
local hdr = { ["Content-Type"] = "application/json" }
request = function()
  n = n + 1
  return wrk.format("PUT", wrk.path .. "/" .. n, hdr,
    '{"name":"name ' .. n .. '","email":"e' .. n .. '@example.com","n":' .. (n % 1000) .. '}')
end
LUA
        ;;
      post) cat >"$script" <<'LUA'
local n = 0
local hdr = { ["Content-Type"] = "application/json" }
request = function()
  n = n + 1
  return wrk.format("POST", wrk.path, hdr,
    '{"name":"name ' .. n .. '","email":"e' .. n .. '@example.com","n":' .. (n % 1000) .. '}')
end
LUA
        ;;
      *) script="" ;;
    esac
    out=$(wrk -t 1 -c "$conns" -d "${CEIL_S}s" ${script:+-s "$script"} "$CRM$path" 2>&1) ||
      { echo "wrk failed: $out" >&2; exit 1; }
    rps=$(printf '%s\n' "$out" | awk '/^Requests\/sec:/ { print $2 }')
    non2xx=$(printf '%s\n' "$out" | awk '/Non-2xx/ { print $NF }')
  else
    # ab: one URL, one body (a PUT replaces the same record).
    local args=(-q -k -c "$conns" -t "$CEIL_S" -n 10000000)
    case $kind in
      put)  echo '{"name":"name 1","email":"e1@example.com","n":1}' >"$WORK/ab.json"
            args+=(-u "$WORK/ab.json" -T application/json); path="$path/1" ;;
      post) echo '{"name":"name 1","email":"e1@example.com","n":1}' >"$WORK/ab.json"
            args+=(-p "$WORK/ab.json" -T application/json) ;;
    esac
    out=$(ab "${args[@]}" "$CRM$path" 2>&1) || { echo "ab failed: $out" >&2; exit 1; }
    rps=$(printf '%s\n' "$out" | awk '/^Requests per second:/ { print $4 }')
    non2xx=$(printf '%s\n' "$out" | awk '/^Non-2xx responses:/ { print $3 }')
  fi
  [ -n "$rps" ] || { echo "$LOADTOOL printed no rate: $out" >&2; exit 1; }
  CEIL=$(calc "$rps" 0)
  printf "ceiling %-34s %2d conn: %8s requests/s%s [CPU busy just before: %s%%]\n" "$name" "$conns" "$CEIL" \
    "$([ -n "$non2xx" ] && echo " (WARNING: $non2xx non-2xx answers)")" "$BUSY_PCT"
}

# ---- (a) REST -> PG
run_in() {
  local r=$1 tag="in_r$1" t="rin_r$1" t0 t1 tj first
  rest_config "$WORK/$tag.json" "$tag" b_to_a "$t" rin 8
  tandem_setup "$tag"
  wait_quiet
  t0=$(now_us)
  start_tandem "$WORK/$tag.json" "$WORK/$tag.log"
  wait_for "$t has $IN_ROWS rows" "$TIMEOUT_S" \
    bash -c "[ \"\$(psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c 'select count(*) from $t')\" = $IN_ROWS ]" ||
    { echo "(a) run $r: timeout; $t has $(psql_on A -c "select count(*) from $t") rows" >&2; exit 1; }
  t1=$(psql_on A -c "select (extract(epoch from max(arrived)) * 1000000)::bigint from $t")
  first=$(psql_on A -c "select (extract(epoch from min(arrived)) * 1000000)::bigint from $t")
  tj=$(sqs "$tag" "select max(committed_at_us) from journal_txn")
  tandem_finish "$tag"
  local wrong
  wrong=$(psql_on A -c "select count(*) from $t where name <> 'name ' || id or email <> 'e' || id || '@example.com' or n <> id % 1000")
  [ "$wrong" = 0 ] || echo "# WARNING: $wrong rows of $t differ from the records"
  VAL=$(rate "$IN_ROWS" $((t1 - t0)))
  DETAIL="$(ms $((t1 - t0))) ms from process start (first row $(ms $((first - t0))) ms, journal complete $(ms $((tj - t0))) ms); first to last row $(rate "$IN_ROWS" $((t1 - first))) rows/s"
}

# ---- (b) PG -> REST
poll_crm_writes() { # RES N TIMEOUT_S: polls every 20 ms until N writes answered 2xx
  local deadline=$(( $(date +%s) + $3 ))
  while [ "$(crm_writes_ok "$1")" -lt "$2" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.02
  done
}
run_out() {
  local r=$1 k=$2 tag="out${2}_r$1" t="out${2}r$1" t0 tw t1 got
  rest_config "$WORK/$tag.json" "$tag" a_to_b "$t" "$t" "$k"
  tandem_setup "$tag"
  start_tandem "$WORK/$tag.json" "$WORK/$tag.log"
  wait_for "tandem $tag ready" 60 tandem_ready "$WORK/$tag.log"
  wait_quiet
  t0=$(now_us)
  psql_on A -c "call bench_fill('$t', $OUT_ROWS, $OUT_TXN_ROWS)"
  tw=$(now_us)
  poll_crm_writes "$t" "$OUT_ROWS" "$TIMEOUT_S" ||
    { echo "(b) run $r in flight $k: timeout; crmsim has $(crm_writes_ok "$t") writes" >&2; exit 1; }
  t1=$(now_us)
  tandem_finish "$tag"
  got=$(curl -fsS "$CRM/_admin/records/$t" | jq '[.[] | select(.deleted | not)] | length')
  [ "$got" = "$OUT_ROWS" ] || echo "# WARNING: crmsim holds $got live records in /$t, expected $OUT_ROWS"
  VAL=$(rate "$OUT_ROWS" $((t1 - t0)))
  DETAIL="$(ms $((t1 - t0))) ms from writer start (writer $(ms $((tw - t0))) ms); crmsim saw: $(crm_routes "$t")"
}

preload
echo
loadtool "GET feed page ($PAGE_SIZE records)" "/rin?updated_at_gte=1970-01-01T00:00:00.000Z&limit=$PAGE_SIZE" 1
CEIL_PAGE=$CEIL
loadtool "GET /rin/{id} (one record)" "/rin/$((IN_ROWS / 2))" 8
CEIL_GET=$CEIL
if [ "$CREATE" = POST ]; then ck=post; croute="POST /ceil"; else ck=put; croute="PUT /ceil/{n}"; fi
loadtool "$croute (create)" /ceil 1 "$ck"
CEIL_W1=$CEIL
loadtool "$croute (create)" /ceil 8 "$ck"
CEIL_W8=$CEIL
if [ "$CREATE" = POST ]; then loadtool "PUT /ceil/{n} (create)" /ceil 8 put; fi
CEIL_IN=$(calc "$CEIL_PAGE * $PAGE_SIZE" 0)
echo "  => feed ceiling: $CEIL_PAGE pages/s x $PAGE_SIZE = $CEIL_IN records/s for a client paging one page at a time"
echo

IN_VALS=(); OUT1_VALS=(); OUT8_VALS=()
for r in $(seq 1 "$RUNS"); do
  HWM_KB=0
  if [[ " $PARTS " == *" in "* ]]; then
    run_in "$r"
    IN_VALS+=("$VAL")
    printf "run %d (a) REST->PG   %7s records/s = %.3f of the feed ceiling; %s; tandem VmHWM %s MB [CPU busy just before: %s%%]\n" \
      "$r" "$VAL" "$(calc "$VAL / $CEIL_IN")" "$DETAIL" "$(calc "$HWM_KB / 1024" 1)" "$BUSY_PCT"
  fi
  [[ " $PARTS " == *" out "* ]] || continue
  if [ $((r % 2)) = 1 ]; then order="1 8"; else order="8 1"; fi
  for k in $order; do
    run_out "$r" "$k"
    if [ "$k" = 1 ]; then OUT1_VALS+=("$VAL"); c=$CEIL_W1; else OUT8_VALS+=("$VAL"); c=$CEIL_W8; fi
    printf "run %d (b) PG->REST %d in flight %7s writes/s = %.3f of the create ceiling at %d conn; %s; tandem VmHWM %s MB [CPU busy just before: %s%%]\n" \
      "$r" "$k" "$VAL" "$(calc "$VAL / $c")" "$k" "$DETAIL" "$(calc "$HWM_KB / 1024" 1)" "$BUSY_PCT"
  done
done

echo
echo "summary (median of $RUNS runs; crmsim ceiling measured once, with $LOADTOOL, in this run):"
printf '  %-46s %10s %14s %9s  %s\n' measurement tandem "crmsim ceiling" fraction target
if [ ${#IN_VALS[@]} -gt 0 ]; then
  in_m=$(median "${IN_VALS[@]}")
  printf '  %-46s %10.0f %14s %9.3f  >= %s records/s: %s\n' "(a) REST->PG, $IN_ROWS records (records/s)" "$in_m" "$CEIL_IN" \
    "$(calc "$in_m / $CEIL_IN")" "$TARGET_IN" "$(verdict "$in_m" '>=' "$TARGET_IN")"
fi
if [ ${#OUT1_VALS[@]} -gt 0 ]; then
  o1=$(median "${OUT1_VALS[@]}"); o8=$(median "${OUT8_VALS[@]}")
  printf '  %-46s %10.0f %14s %9.3f  (no target)\n' "(b) PG->REST, $OUT_ROWS rows, 1 in flight (writes/s)" "$o1" "$CEIL_W1" "$(calc "$o1 / $CEIL_W1")"
  printf '  %-46s %10.0f %14s %9.3f  >= %s writes/s: %s\n' "(b) PG->REST, $OUT_ROWS rows, 8 in flight (writes/s)" "$o8" "$CEIL_W8" \
    "$(calc "$o8 / $CEIL_W8")" "$TARGET_OUT" "$(verdict "$o8" '>=' "$TARGET_OUT")"
fi
printf '  %-46s %10s %14s\n' "crmsim GET /{res}/{id}, 8 connections" "" "$CEIL_GET"
