#!/usr/bin/env bash
# Referential order (issue 9): two crmsim resources (customers, invoices
# with customer_id) synced into PostgreSQL tables with a real foreign key.
# Invoices that arrive before their customer wait (parked as
# waiting_for_parent) and land right after it; a customer's delete that
# arrives before its invoices' waits for them; an invoice whose customer
# never comes goes to the DLQ after dependency_wait_s, naming the parent,
# while other keys flow.
source "$(dirname "$0")/lib.sh"
CRMSIM=${CRMSIM:-${2:-}}
[ -n "$CRMSIM" ] || { echo "CRMSIM (path to crmsim) is not set" >&2; exit 2; }
pg_start A
psql_on A -c "create table customers (id bigint primary key, name text);
              create table invoices (id bigint primary key,
                customer_id bigint not null references customers (id), amount numeric)"
crmsim_start --resources customers,invoices
HTTP_PORT=$(free_port)
feed=$CRM_FEED
cat >"$WORK/cfg.json" <<JSON
{ "name": "it", "state": { "path": "$WORK/state.db" },
  "http": { "listen": "127.0.0.1:$HTTP_PORT" },
  "endpoints": {
    "app": { "kind": "postgres", "conninfo": "$(conninfo_of A)" },
    "crm": { "kind": "rest", "base_url": "$CRM", "poll_interval_ms": 200, "page_size": 100 } },
  "mappings": [
    { "name": "customers",
      "a": { "endpoint": "app", "table": "public.customers", "key": ["id"] },
      "b": { "endpoint": "crm", "resource": "/customers", "key": ["id"], $feed },
      "fields": { "id": "id", "name": "name" }, "direction": "b_to_a" },
    { "name": "invoices",
      "a": { "endpoint": "app", "table": "public.invoices", "key": ["id"] },
      "b": { "endpoint": "crm", "resource": "/invoices", "key": ["id"], $feed },
      "fields": { "id": "id", "customer_id": "customer_id", "amount": "amount" },
      "direction": "b_to_a", "dependency_wait_s": 4,
      "depends_on": [ { "mapping": "customers", "fields": { "customer_id": "id" } } ] } ] }
JSON
put() { curl -fsS -X PUT -H 'Content-Type: application/json' "$CRM$1" -d "$2" >/dev/null; }
del() { curl -fsS -X DELETE -H 'Content-Type: application/json' "$CRM$1" >/dev/null; }
count() { psql_on A -c "select count(*) from $1 ${2:-}"; }
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

# Invoices first; their customers only once tandem has seen them wait. The
# invoices feed also repeats and reorders records across its pages.
curl -fsS -X POST -H 'Content-Type: application/json' "$CRM/_admin/faults" \
  -d '[{"route": "GET /invoices", "seed": 3, "duplicate_rate": 0.5, "backwards_rate": 0.5}]' >/dev/null
for i in $(seq 1 20); do put "/invoices/$i" "{\"customer_id\": $(( (i - 1) / 2 + 1 )), \"amount\": \"$i.50\"}"; done
waiting() { [ "$(sq "select count(*) from parked where mapping = 'invoices' and reason = 'waiting_for_parent'")" -ge 1 ]; }
check "invoices without their customer wait, parked" wait_for "invoices parked" 20 waiting
parked_metric() { curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | grep -q '^tandem_parked_keys{reason="waiting_for_parent"} [1-9]'; }
check "tandem_parked_keys counts them by reason" wait_for "parked metric" 10 parked_metric
expect_eq "no invoice is in PostgreSQL yet" 0 "$(count invoices)"
for c in $(seq 1 10); do put "/customers/$c" "{\"name\": \"customer $c\"}"; done
wait_for "every invoice lands after its customer" 30 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c 'select count(*) from invoices') = 20 ]"
expect_eq "all 20 invoices landed" 20 "$(count invoices)"
expect_eq "with their amounts" "220.00" "$(psql_on A -c 'select sum(amount) from invoices')"
expect_eq "nothing dead-lettered" 0 "$(sq "select count(*) from dlq where status = 'open'")"
faulted() { curl -fsS "$CRM/_admin/stats" | jq -e '(.faults.duplicate // 0) + (.faults.backwards // 0) > 0' >/dev/null; }
check "the reorder and duplicate faults fired" faulted
curl -fsS -X DELETE "$CRM/_admin/faults" >/dev/null
wait_for "no key left parked" 10 bash -c "[ \$(sqlite3 -readonly '$WORK/state.db' 'select count(*) from parked') = 0 ]"
expect_eq "no key left parked" 0 "$(sq "select count(*) from parked")"

# A customer deleted before its invoices: the customer's delete waits for them.
del /customers/1
sleep 1
del /invoices/1
del /invoices/2
wait_for "customer 1 and its invoices gone" 30 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c 'select count(*) from customers where id = 1') = 0 ]"
expect_eq "customer 1 gone" 0 "$(count customers 'where id = 1')"
expect_eq "its invoices gone" 0 "$(count invoices 'where customer_id = 1')"
expect_eq "still nothing dead-lettered" 0 "$(sq "select count(*) from dlq where status = 'open'")"

# An invoice whose customer never comes: the DLQ after dependency_wait_s.
put /invoices/99 '{"customer_id": 999, "amount": "1"}'
put /invoices/100 '{"customer_id": 2, "amount": "2"}'
wait_for "the other invoice flows" 20 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c 'select count(*) from invoices where id = 100') = 1 ]"
expect_eq "another key is not held up" 1 "$(count invoices 'where id = 100')"
orphan_dead() { [ "$(sq "select count(*) from dlq where status = 'open' and mapping = 'invoices' and key = '[\"99\"]'")" = 1 ]; }
check "the orphan is dead-lettered after the wait" wait_for "orphan in the DLQ" 20 orphan_dead
check "its DLQ entry names the missing parent" bash -c "sqlite3 -readonly '$WORK/state.db' \"select error from dlq where key = '[\\\"99\\\"]' and status = 'open'\" | grep -q 'customer_id)=(999)'"
check "dlq list shows it" bash -c "'$TANDEM' dlq list -c '$WORK/cfg.json' | grep -q 'dependency_wait_s'"
expect_eq "it never reached PostgreSQL" 0 "$(count invoices 'where id = 99')"
kill -TERM $TANDEM_PID
set +e; wait $TANDEM_PID; rc=$?; set -e
expect_eq "clean stop" 0 $rc

# A cycle through a foreign key: customers declared to wait for invoices,
# while the peer's foreign key makes invoices wait for customers.
sed -e 's|"direction": "b_to_a" },|"direction": "b_to_a", "depends_on": [ { "mapping": "invoices", "fields": { "id": "id" } } ] },|' \
    -e '/"mapping": "customers", "fields": { "customer_id": "id" }/d' \
    -e 's|"dependency_wait_s": 4,|"dependency_wait_s": 4 } ] }|' "$WORK/cfg.json" >"$WORK/cycle.json"
check "the variant declares only customers -> invoices" bash -c "grep -c depends_on '$WORK/cycle.json' | grep -qx 1"
set +e; "$TANDEM" check -c "$WORK/cycle.json" >"$WORK/check.out" 2>&1; rc=$?; set -e
expect_eq "check exits 2 on a cycle through a foreign key" 2 $rc
check "check names the cycle" grep -q "dependency cycle.*customers -> invoices -> customers\|dependency cycle.*invoices -> customers -> invoices" "$WORK/check.out"
set +e; timeout 20 "$TANDEM" run -c "$WORK/cycle.json" >"$WORK/run.out" 2>&1; rc=$?; set -e
expect_eq "run exits 2 on it too" 2 $rc
finish
