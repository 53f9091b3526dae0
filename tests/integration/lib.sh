# lib.sh: helpers for integration tests, sourced by tests/integration/test_*.sh.
# Starts throwaway PostgreSQL 15 clusters (initdb into a temp dir, run as the
# postgres user, loopback only, wal_level=logical) and always stops them on
# exit, even when a test fails.
set -euo pipefail

TANDEM=${1:-${TANDEM:-}}
[ -n "$TANDEM" ] || { echo "usage: $0 path/to/tandem" >&2; exit 2; }
TANDEM=$(readlink -f "$TANDEM")
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
WORK=$(mktemp -d /tmp/tandem-it.XXXXXX)
chmod 755 "$WORK"
CLUSTERS=()
DAEMONS=()
FAILS=0
PASSES=0

cleanup() {
  local rc=$?
  for pid in "${DAEMONS[@]:-}"; do
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  for d in "${CLUSTERS[@]:-}"; do
    [ -n "$d" ] && run_pg "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
  done
  if [ "${KEEP_WORK:-0}" = 1 ] || [ $rc -ne 0 ] || [ $FAILS -ne 0 ]; then
    echo "# work dir kept: $WORK" >&2
    for f in "$WORK"/*.log; do
      [ -f "$f" ] || continue
      echo "# --- tail $f" >&2; tail -n 30 "$f" >&2
    done
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT

run_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# free_port: a loopback TCP port nobody listens on (bash only, no python).
free_port() {
  local p
  while :; do
    # Below the kernel's ephemeral range (32768+), where client sockets
    # would make a listener's bind fail.
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"; return
    fi
  done
}

# pg_start NAME: starts a cluster; sets ${NAME}_PORT and ${NAME}_DIR.
pg_start() {
  local name=$1 dir="$WORK/pg_$1" port
  port=$(free_port)
  mkdir -p "$dir"
  chown postgres "$dir" 2>/dev/null || true
  run_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$WORK/initdb_$name.log" 2>&1
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_logical_replication_workers = 8
max_worker_processes = 16
fsync = off
synchronous_commit = on
wal_sender_timeout = 60s
track_commit_timestamp = on
CONF
  CLUSTERS+=("$dir/data")
  touch "$WORK/pg_$name.log"
  chown postgres "$WORK/pg_$name.log" 2>/dev/null || true
  # A port taken between the probe and the bind: try another.
  local tries=0
  until run_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$WORK/pg_$name.log" -w start >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ $tries -lt 5 ] || { echo "cannot start cluster $name" >&2; return 1; }
    port=$(free_port)
    sed -i "s/^port = .*/port = $port/" "$dir/data/postgresql.conf"
  done
  printf -v "${name}_PORT" '%s' "$port"
  printf -v "${name}_DIR" '%s' "$dir/data"
  psql_on "$name" -c "select 1" >/dev/null
}

# A fast stop waits for walsenders to ship all WAL to tandem: allow time.
pg_stop() { run_pg "$PGBIN/pg_ctl" -D "$WORK/pg_$1/data" -m fast -t 600 -w stop >/dev/null; }
pg_restart_cluster() { run_pg "$PGBIN/pg_ctl" -D "$WORK/pg_$1/data" -l "$WORK/pg_$1.log" -w start >/dev/null; }

port_of() { local v="${1}_PORT"; echo "${!v}"; }
conninfo_of() { echo "host=127.0.0.1 port=$(port_of "$1") dbname=postgres user=postgres"; }

# psql_on NAME ARGS...: runs psql against cluster NAME, quiet, tuples only.
psql_on() {
  local name=$1; shift
  psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(port_of "$name")" -U postgres -d postgres "$@"
}

# psql_retry NAME ARGS...: psql_on that retries a statement PostgreSQL
# aborted as a deadlock victim or serialization failure — the test's own
# writers race tandem's apply on the same rows, as any application would.
psql_retry() {
  local i out
  for i in 1 2 3 4 5 6 7 8 9 10; do
    if out=$(psql_on "$@" 2>&1); then printf '%s' "$out"; [ -z "$out" ] || echo; return 0; fi
    case "$out" in
      *"deadlock detected"*|*"could not serialize"*) sleep 0.$((RANDOM % 5 + 1)) ;;
      *) printf '%s\n' "$out" >&2; return 1 ;;
    esac
  done
  printf '%s\n' "$out" >&2; return 1
}

# crmsim_start ARGS...: starts the bundled CRM simulator ($CRMSIM) on a free
# loopback port with ARGS; sets CRM to its base URL.
crmsim_start() {
  "$CRMSIM" --listen 127.0.0.1:0 "$@" >"$WORK/crm.out" 2>"$WORK/crmsim.log" &
  DAEMONS+=($!)
  wait_for "crmsim listening" 10 grep -q listening "$WORK/crm.out"
  CRM="http://$(sed -n 's/.*"listening":"\([^"]*\)".*/\1/p' "$WORK/crm.out")"
}

# CRM_FEED: the updated_since feed of a crmsim resource, as a config member.
CRM_FEED='"feed": { "style": "updated_since", "cursor_field": "updated_at",
             "cursor_param": "updated_at_gte", "limit_param": "limit",
             "offset_param": "offset", "deleted_field": "deleted" }'

# start_tandem CONFIG LOG: runs `tandem run` in the background; sets TANDEM_PID.
start_tandem() {
  "$TANDEM" run -c "$1" >>"$2" 2>&1 &
  TANDEM_PID=$!
  DAEMONS+=("$TANDEM_PID")
}

# start_tandem_limitable CONFIG LOG [LIMIT_KB]: start_tandem for a daemon
# whose file size a test limits (a full disk), from the start with
# LIMIT_KB (a soft limit) or later with prlimit --fsize=BYTES:unlimited.
# Writes past the limit fail with EFBIG instead of killing the process
# (SIGXFSZ ignored, as the exec keeps it); the log goes through a pipe,
# which no file-size limit stops.
start_tandem_limitable() {
  ( trap '' XFSZ; [ -z "${3:-}" ] || ulimit -S -f "$3"
    exec "$TANDEM" run -c "$1" > >(exec cat >>"$2") 2>&1 ) &
  TANDEM_PID=$!
  DAEMONS+=("$TANDEM_PID")
}

# wait_for DESC TIMEOUT_S CMD...: polls CMD until it succeeds.
wait_for() {
  local desc=$1 timeout=$2 i=0; shift 2
  while ! "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt $((timeout * 10)) ]; then
      echo "timeout waiting for: $desc" >&2
      return 1
    fi
    sleep 0.1
  done
}

# check DESC CMD...: one assertion; prints ok/FAIL and counts.
check() {
  local desc=$1; shift
  if "$@"; then
    PASSES=$((PASSES + 1)); echo "ok - $desc"
  else
    FAILS=$((FAILS + 1)); echo "FAIL - $desc"
  fi
}

# expect_eq DESC EXPECTED ACTUAL
expect_eq() {
  if [ "$2" = "$3" ]; then
    PASSES=$((PASSES + 1)); echo "ok - $1"
  else
    FAILS=$((FAILS + 1)); echo "FAIL - $1: expected [$2], got [$3]"
  fi
}

finish() {
  echo "# $PASSES checks passed, $FAILS failed"
  [ $FAILS -eq 0 ]
}

# pg_pg_config FILE DIRECTION TABLE[:f1,f2,...]... : a pipeline between
# clusters A and B mapping each TABLE (same name and columns on both sides;
# fields default to id,v) with key id.
pg_pg_config() {
  local file=$1 dir=$2; shift 2
  local maps="" sep="" spec t f fields fsep
  for spec in "$@"; do
    t=${spec%%:*}; fields=""; fsep=""
    [ "$spec" = "$t" ] && spec="$t:id,v"
    for f in $(echo "${spec#*:}" | tr ',' ' '); do fields="$fields$fsep\"$f\": \"$f\""; fsep=", "; done
    maps="$maps$sep{ \"name\": \"$t\",
      \"a\": { \"endpoint\": \"A\", \"table\": \"public.$t\", \"key\": [\"id\"] },
      \"b\": { \"endpoint\": \"B\", \"table\": \"public.$t\", \"key\": [\"id\"] },
      \"fields\": { $fields }, \"direction\": \"$dir\",
      \"conflict\": { \"strategy\": \"last_write_wins\" } }"
    sep=", "
  done
  cat >"$file" <<JSON
{ "name": "it",
  "state": { "path": "$WORK/state.db" },
  "log": { "level": "${LOG_LEVEL:-info}" },
  "http": { "listen": "127.0.0.1:${HTTP_PORT:-0}" },
  "endpoints": {
    "A": { "kind": "postgres", "conninfo": "$(conninfo_of A)",
           "publication": "tandem_a", "slot": "tandem_a", "origin": "tandem_a" },
    "B": { "kind": "postgres", "conninfo": "$(conninfo_of B)",
           "publication": "tandem_b", "slot": "tandem_b", "origin": "tandem_b" } },
  "mappings": [ $maps ] }
JSON
}

# pg_pair_table COLUMNS: clusters A and B, each with table t (COLUMNS) of
# replica identity full, and a free HTTP_PORT for the config.
pg_pair_table() {
  pg_start A
  pg_start B
  HTTP_PORT=$(free_port)
  for db in A B; do
    psql_on $db -c "create table t ($1); alter table t replica identity full"
  done
}

# hold_row_lock CLUSTER TABLE ID: a session on CLUSTER locks TABLE's row
# id = ID (SELECT ... FOR UPDATE in an open transaction) until
# release_row_lock: writes to that row, tandem's included, wait for it.
hold_row_lock() {
  local fifo="$WORK/lock.$RANDOM.fifo" locks
  mkfifo "$fifo"
  psql -X -q -h 127.0.0.1 -p "$(port_of "$1")" -U postgres -d postgres <"$fifo" >/dev/null 2>&1 &
  LOCK_SESSION=$!
  exec 7>"$fifo"
  echo "begin; select 1 from $2 where id = $3 for update; select pg_sleep(0);" >&7
  locks() { [ "$(psql_on "$1" -c "select count(*) from pg_locks l join pg_class c on c.oid = l.relation
                                   where c.relname = '$2' and l.mode = 'RowShareLock'")" -ge 1 ]; }
  wait_for "row lock on $1" 30 locks "$1" "$2"
}
release_row_lock() {
  echo "commit;" >&7
  exec 7>&-
  wait "$LOCK_SESSION" || true
}

# sq SQL: runs SQL on the state file (read-only).
sq() { sqlite3 -readonly -cmd ".timeout 5000" "$WORK/state.db" "$@"; }

# count_writes CLUSTER TABLE: TABLE's int column `applied` counts the
# writes each row received (1 after its insert): a change applied twice
# shows there.
count_writes() {
  psql_on "$1" -c "create or replace function count_writes() returns trigger language plpgsql as \$\$
    begin
      new.applied := case when tg_op = 'INSERT' then 1 else old.applied + 1 end;
      return new;
    end \$\$;
    create trigger count_writes before insert or update on $2 for each row
      execute function count_writes();" >/dev/null
}

# table_md5 NAME TABLE [COLUMNS]: md5 over the ordered rows of TABLE.
table_md5() {
  psql_on "$1" -c "select md5(coalesce(string_agg(r::text, '|' order by r.id), '')) from (select ${3:-*} from $2) r"
}
