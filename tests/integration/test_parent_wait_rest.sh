#!/usr/bin/env bash
# A REST peer that enforces references (issue 9): crmsim refuses (422) an
# invoice whose customer it does not have. An invoice written in
# PostgreSQL before its customer (no foreign key on the source) waits,
# parked as waiting_for_parent, and lands once the customer did; an invoice
# whose customer never comes goes to the DLQ after dependency_wait_s,
# naming the missing parent; other keys flow meanwhile.
source "$(dirname "$0")/lib.sh"
CRMSIM=${CRMSIM:-${2:-}}
[ -n "$CRMSIM" ] || { echo "CRMSIM (path to crmsim) is not set" >&2; exit 2; }
pg_start A
psql_on A -c "create table customers (id bigint primary key, name text);
              create table invoices (id bigint primary key, customer_id bigint, amount numeric);
              alter table invoices replica identity full"
crmsim_start --resources customers,invoices --ref invoices.customer_id=customers
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/json' \
  "$CRM/invoices/1000" -d '{"customer_id": 1000}')
expect_eq "crmsim refuses an invoice without its customer" 422 "$code"
HTTP_PORT=$(free_port)
cat >"$WORK/cfg.json" <<JSON
{ "name": "it", "state": { "path": "$WORK/state.db" },
  "http": { "listen": "127.0.0.1:$HTTP_PORT" },
  "endpoints": {
    "app": { "kind": "postgres", "conninfo": "$(conninfo_of A)" },
    "crm": { "kind": "rest", "base_url": "$CRM", "max_in_flight": 4 } },
  "mappings": [
    { "name": "customers",
      "a": { "endpoint": "app", "table": "public.customers", "key": ["id"] },
      "b": { "endpoint": "crm", "resource": "/customers", "key": ["id"],
             "write": { "create": "PUT", "update": "PATCH", "delete": "DELETE" } },
      "fields": { "id": "id", "name": "name" }, "direction": "a_to_b" },
    { "name": "invoices",
      "a": { "endpoint": "app", "table": "public.invoices", "key": ["id"] },
      "b": { "endpoint": "crm", "resource": "/invoices", "key": ["id"],
             "write": { "create": "PUT", "update": "PATCH", "delete": "DELETE" } },
      "fields": { "id": "id", "customer_id": "customer_id", "amount": "amount" },
      "direction": "a_to_b", "dependency_wait_s": 5,
      "depends_on": [ { "mapping": "customers", "fields": { "customer_id": "id" } } ] } ] }
JSON
crm_code() { curl -s -o /dev/null -w '%{http_code}' "$CRM$1"; }
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

psql_on A -c "insert into invoices values (1, 1, 10), (2, 1, 20)"
psql_on A -c "insert into customers values (7, 'other')"
waiting() { [ "$(sq "select count(*) from parked where mapping = 'invoices' and reason = 'waiting_for_parent'")" -ge 1 ]; }
check "invoices refused for a missing customer wait, parked" wait_for "invoices waiting" 20 waiting
wait_for "another key flows meanwhile" 20 bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' '$CRM/customers/7') = 200 ]"
expect_eq "another key flows meanwhile" 200 "$(crm_code /customers/7)"
expect_eq "the invoices are not on crmsim yet" 404 "$(crm_code /invoices/1)"
psql_on A -c "insert into customers values (1, 'late parent')"
wait_for "the invoices land after their customer" 30 bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' '$CRM/invoices/2') = 200 ]"
expect_eq "invoice 1 landed" 200 "$(crm_code /invoices/1)"
expect_eq "invoice 2 landed" 200 "$(crm_code /invoices/2)"
expect_eq "nothing dead-lettered" 0 "$(sq "select count(*) from dlq where status = 'open'")"
wait_for "no key left parked" 10 bash -c "[ \$(sqlite3 -readonly '$WORK/state.db' 'select count(*) from parked') = 0 ]"
expect_eq "no key left parked" 0 "$(sq "select count(*) from parked")"

psql_on A -c "insert into invoices values (99, 999, 1)"
orphan_dead() { [ "$(sq "select count(*) from dlq where status = 'open' and key = '[\"99\"]'")" = 1 ]; }
check "an orphan goes to the DLQ after dependency_wait_s" wait_for "orphan in the DLQ" 30 orphan_dead
check "its entry names the missing parent" bash -c "sqlite3 -readonly '$WORK/state.db' \"select error from dlq where key = '[\\\"99\\\"]'\" | grep -q 'customers.*999'"
psql_on A -c "insert into invoices values (3, 7, 30)"
wait_for "a later invoice with a known customer lands" 20 bash -c "[ \$(curl -s -o /dev/null -w '%{http_code}' '$CRM/invoices/3') = 200 ]"
expect_eq "a later invoice with a known customer lands" 200 "$(crm_code /invoices/3)"
kill -TERM $TANDEM_PID
set +e; wait $TANDEM_PID; rc=$?; set -e
expect_eq "clean stop" 0 $rc
finish
