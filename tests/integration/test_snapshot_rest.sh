#!/usr/bin/env bash
# snapshot of a mapping with a REST side (issue 7): existing PostgreSQL rows
# load into crmsim through the stream (setup, backfill chunks journaled,
# written by the REST writer several at a time); records already on crmsim
# with the same key merge by the mapping's policy; crmsim-only records come
# through its feed from the beginning; no duplicates on either side.
source "$(dirname "$0")/lib.sh"
CRMSIM=${CRMSIM:-${2:-}}
[ -n "$CRMSIM" ] || { echo "CRMSIM (path to crmsim) is not set" >&2; exit 2; }
pg_start A
psql_on A -c "create table customers (id bigint primary key, name text); alter table customers replica identity full;
              insert into customers select g, 'pg ' || g from generate_series(1, 1500) g"
crmsim_start --resources customers
for i in 1 2 3; do
  curl -fsS -X PUT -H 'Content-Type: application/json' "$CRM/customers/$i" -d "{\"name\": \"pg $i\"}" >/dev/null
done
curl -fsS -X PUT -H 'Content-Type: application/json' "$CRM/customers/900001" -d '{"name": "crm only"}' >/dev/null
cat >"$WORK/cfg.json" <<JSON
{ "name": "it", "state": { "path": "$WORK/state.db" }, "http": { "listen": "127.0.0.1:0" },
  "endpoints": {
    "app": { "kind": "postgres", "conninfo": "$(conninfo_of A)" },
    "crm": { "kind": "rest", "base_url": "$CRM", "poll_interval_ms": 200, "page_size": 500,
             "max_in_flight": 8, "max_requests_per_s": 2000 } },
  "mappings": [
    { "name": "customers",
      "a": { "endpoint": "app", "table": "public.customers", "key": ["id"] },
      "b": { "endpoint": "crm", "resource": "/customers", "key": ["id"],
             $CRM_FEED,
             "write": { "create": "PUT", "update": "PATCH", "delete": "DELETE" } },
      "fields": { "id": "id", "name": "name" }, "direction": "both" } ] }
JSON
"$TANDEM" snapshot -c "$WORK/cfg.json" -m customers >"$WORK/snap.out" 2>&1
check "snapshot of a mapping with a rest side requests a backfill" grep -q "backfill requested" "$WORK/snap.out"
expect_eq "the source slot exists now" 1 "$(psql_on A -c "select count(*) from pg_replication_slots where slot_name like 'tandem_%'")"
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
psql_on A -c "update customers set name = 'changed ' || id where id % 100 = 0"
live() { curl -fsS "$CRM/_admin/records/customers" | jq '[.[] | select(.deleted == false)] | length'; }
wait_for "every row on crmsim" 120 bash -c "[ \"\$(curl -fsS '$CRM/_admin/records/customers' | jq '[.[] | select(.deleted == false)] | length')\" = 1501 ]"
expect_eq "every row on crmsim, and the crm-only record" 1501 "$(live)"
wait_for "the crm-only record in PostgreSQL" 30 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c 'select count(*) from customers where id = 900001') = 1 ]"
pg_digest() { psql_on A -c "select md5(string_agg(id || ':' || name, ',' order by id)) from customers"; }
crm_digest() {
  curl -fsS "$CRM/_admin/records/customers" >"$WORK/recs.json"; chmod 644 "$WORK/recs.json"
  psql_on A -c "select md5(string_agg((r->>'id') || ':' || (r->>'name'), ',' order by (r->>'id')::bigint))
                from json_array_elements(pg_read_file('$WORK/recs.json')::json) r where not (r->>'deleted')::bool"
}
agree() { [ "$(pg_digest)" = "$(crm_digest)" ]; }
wait_for "both sides equal" 60 agree
expect_eq "both sides equal, changes during the load included" "$(pg_digest)" "$(crm_digest)"
expect_eq "no duplicate records" 0 "$(curl -fsS "$CRM/_admin/records/customers" | jq '[.[].id] | length - (unique | length)')"
check "the backfill finished" grep -q '"msg":"backfill done"' "$WORK/tandem.log"
expect_eq "nothing dead-lettered" 0 "$(sq "select count(*) from dlq")"
kill -TERM $TANDEM_PID
set +e; wait $TANDEM_PID; rc=$?; set -e
expect_eq "clean stop" 0 $rc
finish
