#!/usr/bin/env bash
# PostgreSQL <-> REST both ways (issue 5) against the bundled CRM simulator:
# rows arrive in both directions without echo loops; updates and deletes
# both ways; server-side faults (500, 429, malformed and duplicated pages)
# still give exactly one record each; permanent errors and bad records go to
# the DLQ while other keys flow; kill -9 loses and duplicates nothing; a
# CouchDB-style mapping (sequence feed, PUT with _rev) syncs too.
# Usage: test_rest.sh path/to/tandem   (CRMSIM=path/to/crmsim)
source "$(dirname "$0")/lib.sh"
CRMSIM=${CRMSIM:-${2:-}}
[ -n "$CRMSIM" ] || { echo "CRMSIM (path to crmsim) is not set" >&2; exit 2; }
CRMSIM=$(readlink -f "$CRMSIM")

pg_start A
psql_on A -c "create table customers (id bigint primary key, name text, email text,
                balance numeric(30,2)); alter table customers replica identity full"
psql_on A -c "create table accounts (id text primary key, title text, score int);
              alter table accounts replica identity full"
psql_on A -c "create table invoices (number text primary key, amount numeric)"

crmsim_start --seed 7 --resources customers,accounts,invoices
HTTP_PORT=$(free_port)

write_config() { # FILE [CRM_URL]
  cat >"$1" <<JSON
{ "name": "it", "state": { "path": "$WORK/state.db" },
  "log": { "level": "${LOG_LEVEL:-info}" },
  "http": { "listen": "127.0.0.1:$HTTP_PORT" },
  "retry": { "max_attempts": 50, "max_retry_s": 600, "backoff_max_ms": 1000 },
  "endpoints": {
    "app": { "kind": "postgres", "conninfo": "$(conninfo_of A)" },
    "crm": { "kind": "rest", "base_url": "${2:-$CRM}", "poll_interval_ms": 200,
             "page_size": 50, "timeout_ms": 2000, "max_in_flight": 8,
             "max_requests_per_s": 2000, "headers": { "Authorization": "Bearer s3cr3t-token" } } },
  "mappings": [
    { "name": "customers",
      "a": { "endpoint": "app", "table": "public.customers", "key": ["id"] },
      "b": { "endpoint": "crm", "resource": "/customers", "key": ["id"],
             $CRM_FEED,
             "write": { "create": "POST", "update": "PATCH", "delete": "DELETE" } },
      "fields": { "id": "id", "name": "full_name", "email": "email", "balance": "balance" },
      "direction": "both", "conflict": { "strategy": "last_write_wins" } },
    { "name": "accounts",
      "a": { "endpoint": "app", "table": "public.accounts", "key": ["id"] },
      "b": { "endpoint": "crm", "resource": "/accounts", "key": ["id"],
             "feed": { "style": "sequence", "path": "/accounts/_changes",
                       "params": { "include_docs": "true" } },
             "write": { "create": "PUT", "update": "PUT", "delete": "DELETE",
                        "revision_field": "_rev", "revision_in": "body" } },
      "fields": { "id": "id", "title": "title", "score": "score" },
      "direction": "both", "conflict": { "strategy": "last_write_wins" } },
    { "name": "invoices",
      "a": { "endpoint": "app", "table": "public.invoices", "key": ["number"] },
      "b": { "endpoint": "crm", "resource": "/invoices", "key": ["number"],
             "feed": { "style": "updated_since", "cursor_field": "updated_at",
                       "cursor_param": "updated_at_gte", "limit_param": "limit" } },
      "fields": { "number": "number", "amount": "amount" },
      "direction": "b_to_a" } ] }
JSON
}
write_config "$WORK/cfg.json"

crm_get() { curl -fsS "$CRM$1"; }
# crm_write METHOD PATH [BODY]: retried while a fault answers (a faulted
# write is not applied by the simulator).
crm_write() {
  local i code
  for i in $(seq 1 50); do
    code=$(curl -sS --max-time 5 -o "$WORK/last_body" -w '%{http_code}' -X "$1" \
      -H 'Content-Type: application/json' "$CRM$2" ${3:+-d "$3"} || echo 000)
    case $code in 2??) return 0 ;; 409|412|404|400|413|415) echo "crm_write $1 $2: $code" >&2; return 1 ;; esac
    sleep 0.1
  done
  echo "crm_write $1 $2: gave up ($code)" >&2; return 1
}
faults() { curl -fsS -X POST -H 'Content-Type: application/json' "$CRM/_admin/faults" -d "$1" >/dev/null; }
no_faults() { curl -fsS -X DELETE "$CRM/_admin/faults" >/dev/null; }
records() { crm_get "/_admin/records/$1"; }
# records_sql RES: SQL text reading the records of RES (through a file: they
# outgrow a command-line argument).
records_sql() {
  records "$1" >"$WORK/records_$1.json"
  chmod 644 "$WORK/records_$1.json"
  echo "pg_read_file('$WORK/records_$1.json')::json"
}

# Digests of the same rows on both sides (deleted CRM records left out).
pg_customers() {
  psql_on A -c "select md5(coalesce(string_agg(format('%s|%s|%s|%s', id, name, email, balance),
                 ',' order by id), '')) from customers"
}
crm_customers() {
  psql_on A -c "select md5(coalesce(string_agg(format('%s|%s|%s|%s', r->>'id', r->>'full_name',
     r->>'email', (r->>'balance')::numeric(30,2)), ',' order by (r->>'id')::bigint), ''))
     from json_array_elements($(records_sql customers)) r where not (r->>'deleted')::bool"
}
pg_accounts() {
  psql_on A -c "select md5(coalesce(string_agg(format('%s|%s|%s', id, title, score), ',' order by id), ''))
                from accounts"
}
crm_accounts() {
  psql_on A -c "select md5(coalesce(string_agg(format('%s|%s|%s', r->>'id', r->>'title', r->>'score'),
     ',' order by r->>'id'), '')) from json_array_elements($(records_sql accounts)) r
     where not (r->>'deleted')::bool"
}
# Records of a resource that share a name: a duplicate create.
crm_dups() {
  psql_on A -c "select count(*) - count(distinct r->>'$2') from json_array_elements($(records_sql "$1")) r"
}
crm_live() { records "$1" | grep -o '"deleted":false' | wc -l; }
pg_count() { psql_on A -c "select count(*) from $1 ${2:-}"; }
customers_agree() { [ "$(pg_customers)" = "$(crm_customers)" ]; }
# customers_diff: rows that differ, for the log when a wait times out.
customers_diff() {
  psql_on A -c "with c as (select (r->>'id')::bigint id, r->>'full_name' name, r->>'email' email,
       (r->>'balance')::numeric(30,2) balance from json_array_elements($(records_sql customers)) r
       where not (r->>'deleted')::bool)
     (select 'pg only', * from customers except select 'pg only', * from c)
     union all (select 'crm only', * from c except select 'crm only', * from customers)
     order by 2 limit 20" >&2
}
converge() { # DESC: waits for the customers to agree, else shows how they differ
  wait_for "$1" 120 customers_agree || { customers_diff; return 1; }
}
accounts_agree() { [ "$(pg_accounts)" = "$(crm_accounts)" ]; }
metric() { curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | sed -n "s/^$1 //p" | head -1; }

# ---- check: reaches the REST side; an unreachable one exits 1 ----
set +e
"$TANDEM" check -c "$WORK/cfg.json" >"$WORK/check.out" 2>&1; rc=$?
set -e
expect_eq "check reaches both sides" 0 "$rc"
check "check names the rest endpoint" grep -q '^ok   crm: GET /customers answered 200' "$WORK/check.out"
write_config "$WORK/cfg_down.json" "http://127.0.0.1:$(free_port)"
set +e
"$TANDEM" check -c "$WORK/cfg_down.json" >"$WORK/check_down.out" 2>&1; rc=$?
set -e
expect_eq "check: unreachable rest endpoint exits 1" 1 "$rc"
check "check prints a FAIL line for it" grep -q '^FAIL crm: GET /customers unreachable' "$WORK/check_down.out"

# accounts: a sequence feed (no record versions) under last_write_wins.
check "check warns that accounts' conflicts cannot be ordered" \
  grep -q '^warn crm: mapping accounts: its sequence feed gives records no version' "$WORK/check.out"
expect_eq "and only for that mapping" 1 "$(grep -c 'gives records no version' "$WORK/check.out")"

start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
check "run warns about it too" grep -q '"msg":"its sequence feed gives records no version.*"mapping":"accounts"' "$WORK/tandem.log"

# ---- REST -> PG (server-assigned ids 1..100), then PG -> REST ----
# Later CRM records carry their own ids (9xxxxx): ids the server assigns
# must not collide with the ids PostgreSQL rows use.
for i in $(seq 1 100); do
  crm_write POST /customers "{\"full_name\":\"crm$i\",\"email\":\"crm$i@x\",\"balance\":$i.5}"
done
wait_for "CRM records in PostgreSQL" 60 bash -c \
  "[ \$(psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c 'select count(*) from customers') = 100 ]"
psql_on A -c "insert into customers select g, 'pg'||g, 'pg'||g||'@x', g * 1.25
              from generate_series(1001, 1200) g"
psql_on A -c "update customers set email = null where id % 17 = 0"
converge "rows both ways"
expect_eq "customers agree after inserts both ways" "$(pg_customers)" "$(crm_customers)"
expect_eq "all rows in PostgreSQL" 300 "$(pg_count customers)"
expect_eq "all records in the CRM" 300 "$(crm_live customers)"
expect_eq "numbers keep their value (1262.50 as a number)" 1262.50 \
  "$(psql_on A -c "select balance from customers where id = 1010")"

# ---- no echo loop: the journal holds only each side's own writes ----
sleep 2
app_txns=$(sq "select count(*) from journal_txn where endpoint = 'app'")
crm_changes=$(sq "select count(*) from journal_change c join journal_txn t using (txn) where t.endpoint = 'crm'")
expect_eq "journal: 2 transactions from PostgreSQL" 2 "$app_txns"
expect_eq "journal: 100 changes from the CRM (no echoes)" 100 "$crm_changes"
sleep 2
expect_eq "journal does not grow while idle" "$crm_changes" \
  "$(sq "select count(*) from journal_change c join journal_txn t using (txn) where t.endpoint = 'crm'")"
echo_n=$(metric 'tandem_echo_suppressed_total{endpoint="crm"}')
check "echo suppression counted (${echo_n:-none})" test "${echo_n:-0}" -ge 200
# Lag into the REST peer: source commit to the last write answered, a
# fraction of a second to a few seconds here, never the 0 of "unknown".
lag=$(metric 'tandem_lag_seconds{from="app",to="crm"}')
check "lag into the rest peer measured (${lag:-none} s)" \
  awk -v l="${lag:-0}" 'BEGIN { exit !(l > 0 && l < 60) }'

# ---- updates and deletes both ways ----
psql_on A -c "update customers set name = name || '-u', balance = balance + 1 where id <= 1050 and id > 1000"
for i in $(seq 1 30); do
  crm_write PATCH "/customers/$i" "{\"full_name\":\"patched$i\",\"balance\":99.99}"
done
converge "updates both ways"
expect_eq "customers agree after updates" "$(pg_customers)" "$(crm_customers)"
expect_eq "REST updates reached PostgreSQL" 30 "$(pg_count customers "where name like 'patched%'")"
psql_on A -c "delete from customers where id between 1051 and 1060"
for i in $(seq 31 40); do crm_write DELETE "/customers/$i"; done
converge "deletes both ways"
expect_eq "deletes: rows left in PostgreSQL" 280 "$(pg_count customers)"
expect_eq "deletes: live records left in the CRM" 280 "$(crm_live customers)"

# ---- CouchDB-style mapping: sequence feed, PUT with _rev ----
psql_on A -c "insert into accounts select 'acc'||g, 'title'||g, g from generate_series(1, 30) g"
for i in $(seq 1 10); do crm_write PUT "/accounts/crmacc$i" "{\"title\":\"from crm $i\",\"score\":$i}"; done
wait_for "accounts both ways" 60 accounts_agree
psql_on A -c "update accounts set score = score + 100 where id in ('acc1', 'acc2', 'crmacc1')"
rev=$(crm_get /accounts/crmacc2 | sed -n 's/.*"_rev":"\([^"]*\)".*/\1/p')
crm_write PUT /accounts/crmacc2 "{\"title\":\"renamed\",\"score\":7,\"_rev\":\"$rev\"}"
psql_on A -c "delete from accounts where id = 'acc30'"
wait_for "accounts updates both ways" 60 accounts_agree
expect_eq "accounts agree" "$(pg_accounts)" "$(crm_accounts)"
expect_eq "accounts: PUT with _rev reached PostgreSQL" renamed \
  "$(psql_on A -c "select title from accounts where id = 'crmacc2'")"
expect_eq "accounts: PostgreSQL update reached the CRM with its _rev" 101 \
  "$(crm_get /accounts/acc1 | sed -n 's/.*"score":\([0-9]*\).*/\1/p')"

# ---- bad input: a number a JSON parser would round; feed records without a key ----
psql_on A -c "insert into customers values (5000, 'huge', 'h@x', 12345678901234567.25)"
psql_on A -c "insert into customers values (5002, 'fine', 'f@x', 1)"
crm_write POST /invoices '{"number":"INV-1","amount":10.10}'
crm_write POST /invoices '{"amount":5}'
crm_write POST /invoices '{"number":{"nested":true},"amount":6}'
crm_write POST /invoices '{"number":"INV-2","amount":1234567890123456789}'
wait_for "good records flow past bad ones" 30 bash -c \
  "[ \$(curl -fsS $CRM/customers/5002 -o /dev/null -w '%{http_code}') = 200 ] &&
   [ \$(psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c 'select count(*) from invoices') = 2 ]"
expect_eq "the rounding number is not sent" 404 \
  "$(curl -sS -o /dev/null -w '%{http_code}' "$CRM/customers/5000")"
expect_eq "DLQ: the rounding number, with the reason" 1 \
  "$(sq "select count(*) from dlq where key = '[\"5000\"]' and error like '%round%'")"
expect_eq "the rejected key is parked" 1 "$(sq "select count(*) from parked where key = '[\"5000\"]'")"
expect_eq "DLQ: the feed records without a usable key, with excerpts" 2 \
  "$(sq "select count(*) from dlq where mapping = 'invoices' and key is null and change like '%amount%'")"
expect_eq "invoices: amounts exact (19 digits kept)" "10.1 1234567890123456789" \
  "$(psql_on A -c "select string_agg(amount::text, ' ' order by number) from invoices")"

# A later change of the parked key waits; dropping the DLQ entry releases it.
psql_on A -c "update customers set balance = 5, name = 'huge-fixed' where id = 5000"
psql_on A -c "update customers set name = 'flows' where id = 5002"
wait_for "other keys flow while one is parked" 30 bash -c \
  "curl -fsS $CRM/customers/5002 | grep -q '\"full_name\":\"flows\"'"
expect_eq "the parked key's later change waits" 404 \
  "$(curl -sS -o /dev/null -w '%{http_code}' "$CRM/customers/5000")"
dlq_id=$(sq "select id from dlq where key = '[\"5000\"]'")
"$TANDEM" dlq -c "$WORK/cfg.json" drop "$dlq_id" >/dev/null
wait_for "released key catches up" 30 bash -c \
  "curl -fsS $CRM/customers/5000 | grep -q '\"full_name\":\"huge-fixed\"'"
check "the released key's change arrived" curl -fsS "$CRM/customers/5000" -o /dev/null

# ---- the same records edited on both sides at once: decided, recorded, converged ----
for r in 1 2 3; do
  pids=()
  psql_retry A -c "update customers set name = 'pg-edit-$r-' || id, balance = balance + 1 where id between 1061 and 1080" &
  pids+=($!)
  for i in $(seq 1061 1080); do
    crm_write PATCH "/customers/$i" "{\"email\":\"crm-edit-$r-$i@x\"}" &
    pids+=($!)
  done
  wait "${pids[@]}"   # not a bare wait: tandem and crmsim run in the background too
done
converge "convergence after concurrent edits"
expect_eq "customers agree after concurrent edits" "$(pg_customers)" "$(crm_customers)"
conflicts=$(sq "select count(*) from conflicts where mapping = 'customers'")
check "conflicts recorded ($conflicts)" test "$conflicts" -gt 0

# ---- faults: 500s, 429s, dropped connections and timeouts on every route ----
faults '{"route":"*","seed":11,"error_rate":0.2,"rate_limit_rate":0.1,"drop_rate":0.05,
         "timeout_rate":0.03,"hang_ms":4000}'
psql_on A -c "insert into customers select g, 'f'||g, 'f'||g||'@x', g from generate_series(10001, 10300) g"
psql_on A -c "update customers set balance = balance + 0.01 where id between 10001 and 10100"
for i in $(seq 1 50); do
  crm_write POST /customers "{\"id\":$((900000 + i)),\"full_name\":\"fault$i\",\"email\":\"fault$i@x\"}"
done
sleep 5
no_faults
converge "convergence after 500s and 429s"
expect_eq "customers agree after faults" "$(pg_customers)" "$(crm_customers)"
expect_eq "exactly once: no duplicate CRM records" 0 "$(crm_dups customers full_name)"
check "answers were lost on the way (drops and timeouts fired)" bash -c \
  "curl -fsS $CRM/_admin/stats | grep -q '\"drop\":[1-9]'"
expect_eq "exactly once: every PostgreSQL row once in the CRM" 300 \
  "$(records customers | grep -o '"full_name":"f1[0-9]*"' | sort -u | wc -l)"
expect_eq "exactly once: every CRM record once in PostgreSQL" 50 "$(pg_count customers "where name like 'fault%'")"
retried=$(metric 'tandem_apply_errors_total{to="crm",kind="transient"}')
check "transient failures were retried (${retried:-none})" test "${retried:-0}" -gt 0

# ---- a malformed page is retried; nothing is lost, the cursor stays ----
faults '{"route":"GET /customers","seed":3,"malformed_rate":1}'
for i in $(seq 1 20); do
  crm_write POST /customers "{\"id\":$((910000 + i)),\"full_name\":\"malformed$i\",\"email\":\"m$i@x\"}"
done
sleep 3
expect_eq "nothing read from malformed pages" 0 "$(pg_count customers "where name like 'malformed%'")"
check "malformed pages logged" grep -q 'feed page cannot be parsed' "$WORK/tandem.log"
no_faults
converge "records behind malformed pages arrive"
expect_eq "every record behind the malformed pages arrived" 20 \
  "$(pg_count customers "where name like 'malformed%'")"

# ---- duplicated and backwards records across pages ----
faults '{"route":"GET /customers","seed":5,"duplicate_rate":0.5,"backwards_rate":0.3}'
for i in $(seq 1 60); do
  crm_write POST /customers "{\"id\":$((920000 + i)),\"full_name\":\"dup$i\",\"email\":\"d$i@x\"}"
done
sleep 3
no_faults
converge "convergence with duplicated pages"
expect_eq "duplicated records arrive once" 60 "$(pg_count customers "where name like 'dup%'")"

# ---- kill -9 during writes, then restart ----
psql_on A -c "insert into customers select g, 'k'||g, 'k'||g||'@x', g from generate_series(20001, 20400) g"
sleep 0.3
kill -9 "$TANDEM_PID"
wait "$TANDEM_PID" 2>/dev/null || true
for i in $(seq 1 20); do crm_write POST /customers "{\"id\":$((930000 + i)),\"full_name\":\"afterkill$i\"}"; done
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
converge "convergence after kill -9"
expect_eq "customers agree after kill -9" "$(pg_customers)" "$(crm_customers)"
expect_eq "kill -9: no duplicate CRM records" 0 "$(crm_dups customers full_name)"
expect_eq "kill -9: all rows once" 400 "$(records customers | grep -o '"full_name":"k2[0-9]*"' | sort -u | wc -l)"

# ---- a delete on one side against an update on the other, offline ----
# (G5, G6): the later of the two wins on both sides. 2 s apart, so the two
# clocks cannot reorder them. The CRM's record reads are slowed, so its
# feed delivers the deletes before the writer decides on the updates: a
# record the API answers 404 for before its feed shows the delete has no
# known delete time, and there the update still wins (an open limit).
kill -TERM "$TANDEM_PID"; wait "$TANDEM_PID" || true
psql_on A -c "update customers set name = 'pg-older' where id between 41 and 45"
sleep 2
for i in $(seq 41 45); do crm_write DELETE "/customers/$i"; done
for i in $(seq 46 50); do crm_write DELETE "/customers/$i"; done
sleep 2
psql_on A -c "update customers set name = 'pg-newer' where id between 46 and 50"
faults '{"route":"GET /customers/{id}","latency_ms":1500}'
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
converge "convergence after delete against update"
no_faults
expect_eq "the newer CRM delete wins in PostgreSQL" 0 "$(pg_count customers "where id between 41 and 45")"
expect_eq "no live CRM record left with the older update" 0 \
  "$(psql_on A -c "select count(*) from json_array_elements($(records_sql customers)) r
                   where (r->>'id')::bigint between 41 and 45 and not (r->>'deleted')::bool")"
expect_eq "the newer PostgreSQL update wins over the CRM delete" 5 \
  "$(psql_on A -c "select count(*) from customers where id between 46 and 50 and name = 'pg-newer'")"

# ---- secrets never appear in logs ----
check "the bearer token never appears in logs" bash -c "! grep -q s3cr3t-token '$WORK/tandem.log'"

kill -TERM "$TANDEM_PID"
set +e; wait "$TANDEM_PID"; rc=$?; set -e
expect_eq "clean stop" 0 "$rc"
finish
