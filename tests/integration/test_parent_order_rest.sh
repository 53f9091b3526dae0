#!/usr/bin/env bash
# Referential order toward a REST peer (issue 9): PostgreSQL customers and
# invoices (real foreign key) into crmsim, declared with depends_on. The
# REST writer runs changes of different keys concurrently (max_in_flight 8)
# and crmsim is made slow on customer creates and invoice deletes; still
# every customer is created before its invoices and deleted after them
# (checked by crmsim's own strictly increasing updated_at stamps).
source "$(dirname "$0")/lib.sh"
CRMSIM=${CRMSIM:-${2:-}}
[ -n "$CRMSIM" ] || { echo "CRMSIM (path to crmsim) is not set" >&2; exit 2; }
pg_start A
psql_on A -c "create table customers (id bigint primary key, name text);
              create table invoices (id bigint primary key,
                customer_id bigint not null references customers (id), amount numeric);
              alter table customers replica identity full; alter table invoices replica identity full"
crmsim_start --resources customers,invoices
write_config() { # FILE DEPENDS_ON
  cat >"$1" <<JSON
{ "name": "it", "state": { "path": "$WORK/state.db" }, "http": { "listen": "127.0.0.1:0" },
  "endpoints": {
    "app": { "kind": "postgres", "conninfo": "$(conninfo_of A)" },
    "crm": { "kind": "rest", "base_url": "$CRM", "max_in_flight": 8, "timeout_ms": 5000 } },
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
      "direction": "a_to_b" $2 } ] }
JSON
}
write_config "$WORK/cfg.json" ', "depends_on": [ { "mapping": "customers", "fields": { "customer_id": "id" } } ]'
curl -fsS -X POST -H 'Content-Type: application/json' "$CRM/_admin/faults" \
  -d '[{"route": "PUT /customers/{id}", "latency_ms": 300}, {"route": "DELETE /invoices/{id}", "latency_ms": 300}]' >/dev/null
records() { curl -fsS "$CRM/_admin/records/$1"; }
live() { records "$1" | jq '[.[] | select(.deleted == false)] | length'; }
# Invoices stamped before (creates) / after (deletes) their customer.
created_before_parent() {
  jq -n --argjson c "$(records customers)" --argjson i "$(records invoices)" \
    '[$i[] | . as $x | select(($c[] | select(.id == ($x.customer_id | tonumber)) | .updated_at) > $x.updated_at)] | length'
}
deleted_after_parent() {
  jq -n --argjson c "$(records customers)" --argjson i "$(records invoices)" \
    '[$i[] | select(.deleted) | . as $x | select(($c[] | select(.id == ($x.customer_id | tonumber) and .deleted) | .updated_at) < $x.updated_at)] | length'
}
create_all() {
  for c in $(seq 1 10); do
    psql_on A -c "begin; insert into customers values ($c, 'c$c');
                  insert into invoices values ($((c * 10 + 1)), $c, 1), ($((c * 10 + 2)), $c, 2); commit" >/dev/null
  done
  wait_for "all invoices on crmsim" 60 bash -c "[ \"\$(curl -fsS '$CRM/_admin/records/invoices' | jq '[.[] | select(.deleted == false)] | length')\" = 20 ]"
  sleep 1
}
delete_some() {
  for c in $(seq 1 5); do
    psql_on A -c "begin; delete from invoices where customer_id = $c; delete from customers where id = $c; commit" >/dev/null
  done
  wait_for "deletes on crmsim" 60 bash -c "[ \"\$(curl -fsS '$CRM/_admin/records/customers' | jq '[.[] | select(.deleted == false)] | length')\" = 5 ]"
  sleep 1
}

start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
create_all
expect_eq "every customer created before its invoices" 0 "$(created_before_parent)"
delete_some
expect_eq "every customer deleted after its invoices" 0 "$(deleted_after_parent)"
expect_eq "invoices left" 10 "$(live invoices)"
expect_eq "customers left" 5 "$(live customers)"
expect_eq "nothing dead-lettered" 0 "$(sq "select count(*) from dlq where status = 'open'")"
kill -TERM $TANDEM_PID
set +e; wait $TANDEM_PID; rc=$?; set -e
expect_eq "clean stop" 0 $rc

# The control: without depends_on the same run does break the order, so
# the checks above can fail.
curl -fsS -X POST "$CRM/_admin/reset" >/dev/null
curl -fsS -X POST -H 'Content-Type: application/json' "$CRM/_admin/faults" \
  -d '[{"route": "PUT /customers/{id}", "latency_ms": 300}, {"route": "DELETE /invoices/{id}", "latency_ms": 300}]' >/dev/null
psql_on A -c "delete from invoices; delete from customers"
"$TANDEM" teardown -c "$WORK/cfg.json" >/dev/null 2>&1 || true
rm -f "$WORK/state.db" "$WORK/state.db-wal" "$WORK/state.db-shm"
write_config "$WORK/nodeps.json" ''
start_tandem "$WORK/nodeps.json" "$WORK/tandem2.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem2.log"
create_all
broken=$(created_before_parent)
delete_some
broken=$((broken + $(deleted_after_parent)))
check "without depends_on the order breaks ($broken out of order)" test "$broken" -gt 0
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
finish
