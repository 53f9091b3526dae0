#!/usr/bin/env bash
# reconcile with a REST side (issue 7): a PostgreSQL table <-> crmsim
# resource mapping synced by `tandem run`, then drift made behind tandem's
# back on both sides (PostgreSQL under the endpoint's own replication
# origin, the CRM by direct HTTP calls while tandem is stopped) is found
# exactly, with no false difference (numbers equal by value, a key through
# the key cross-reference); --repair writes both ways (the CRM through the
# REST writer, PostgreSQL from a CRM record), inline without a daemon and
# through a running one; unusable feed pages and an unreachable CRM exit 1
# with a message naming the endpoint and the request, never the token.
# Usage: test_reconcile_rest.sh path/to/tandem   (CRMSIM=path/to/crmsim)
source "$(dirname "$0")/lib.sh"
CRMSIM=${CRMSIM:-${2:-}}
[ -n "$CRMSIM" ] || { echo "CRMSIM (path to crmsim) is not set" >&2; exit 2; }
CRMSIM=$(readlink -f "$CRMSIM")

pg_start A
psql_on A -c "create table customers (id bigint primary key, name text, email text,
                balance numeric(30,2)); alter table customers replica identity full"

"$CRMSIM" --listen 127.0.0.1:0 --seed 3 --resources customers \
  >"$WORK/crm.out" 2>"$WORK/crmsim.log" &
CRMSIM_PID=$!
DAEMONS+=($CRMSIM_PID)
wait_for "crmsim listening" 10 grep -q listening "$WORK/crm.out"
CRM="http://$(sed -n 's/.*"listening":"\([^"]*\)".*/\1/p' "$WORK/crm.out")"
HTTP_PORT=$(free_port)

cat >"$WORK/cfg.json" <<JSON
{ "name": "it", "state": { "path": "$WORK/state.db" },
  "log": { "level": "${LOG_LEVEL:-info}" },
  "http": { "listen": "127.0.0.1:$HTTP_PORT" },
  "retry": { "max_attempts": 20, "max_retry_s": 600, "backoff_max_ms": 1000 },
  "endpoints": {
    "app": { "kind": "postgres", "conninfo": "$(conninfo_of A)", "origin": "tandem_app" },
    "crm": { "kind": "rest", "base_url": "$CRM", "poll_interval_ms": 200,
             "page_size": 50, "timeout_ms": 2000, "max_in_flight": 8,
             "max_requests_per_s": 2000,
             "headers": { "Authorization": "Bearer s3cr3t-token" } } },
  "mappings": [
    { "name": "customers",
      "a": { "endpoint": "app", "table": "public.customers", "key": ["id"] },
      "b": { "endpoint": "crm", "resource": "/customers", "key": ["id"],
             $CRM_FEED,
             "write": { "create": "POST", "update": "PATCH", "delete": "DELETE" } },
      "fields": { "id": "id", "name": "full_name", "email": "email", "balance": "balance" },
      "direction": "both", "conflict": { "strategy": "last_write_wins" } } ] }
JSON

crm_get() { curl -fsS "$CRM$1"; }
crm_code() { curl -sS -o /dev/null -w '%{http_code}' "$CRM$1"; }
crm_write() { # METHOD PATH [BODY]
  local code
  code=$(curl -sS --max-time 5 -o "$WORK/last_body" -w '%{http_code}' -X "$1" \
    -H 'Content-Type: application/json' "$CRM$2" ${3:+-d "$3"})
  case $code in 2??) return 0 ;; esac
  echo "crm_write $1 $2: $code $(cat "$WORK/last_body")" >&2; return 1
}
# crm_field ID FIELD: one field of a live CRM record, as JSON text.
crm_field() { crm_get "/customers/$1" | jq -c ".$2"; }
faults() { curl -fsS -X POST -H 'Content-Type: application/json' "$CRM/_admin/faults" -d "$1" >/dev/null; }
no_faults() { curl -fsS -X DELETE "$CRM/_admin/faults" >/dev/null; }
crm_live() { crm_get /_admin/records/customers | jq '[.[] | select(.deleted | not)] | length'; }
pg_count() { psql_on A -c "select count(*) from customers ${1:-}"; }
pg_val() { psql_on A -c "select $2 from customers where id = $1"; }
# Digests of the same rows on both sides (deleted CRM records left out).
pg_digest() {
  psql_on A -c "select md5(coalesce(string_agg(format('%s|%s|%s|%s', id, name, email, balance),
                 ',' order by id), '')) from customers"
}
crm_digest() {
  crm_get /_admin/records/customers >"$WORK/records.json"
  chmod 644 "$WORK/records.json"
  psql_on A -c "select md5(coalesce(string_agg(format('%s|%s|%s|%s', r->>'id', r->>'full_name',
     r->>'email', (r->>'balance')::numeric(30,2)), ',' order by (r->>'id')::bigint), ''))
     from json_array_elements(pg_read_file('$WORK/records.json')::json) r
     where not (r->>'deleted')::bool"
}
agree() { [ "$(pg_digest)" = "$(crm_digest)" ]; }
# behind SQL...: runs SQL under the app endpoint's own origin, so its
# reader skips it as if tandem had written it: drift tandem never sees.
behind() { psql_on A -c "select pg_replication_origin_session_setup('tandem_app')" "$@" >/dev/null; }
# rec ARGS...: runs reconcile; RC, output in rec.out / rec.err.
rec() {
  set +e
  "$TANDEM" reconcile -c "$WORK/cfg.json" "$@" >"$WORK/rec.out" 2>"$WORK/rec.err"
  RC=$?
  set -e
}
jqv() { jq -r "$1" "$WORK/rec.out"; }
command -v jq >/dev/null || { echo "jq is needed" >&2; exit 2; }

# ---- 2000 records synced both ways by the real daemon ----
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
psql_on A -c "insert into customers select g, 'pg' || g, 'pg' || g || '@x', g * 1.25
              from generate_series(1, 1500) g"
for i in $(seq 100001 100500); do
  crm_write POST /customers "{\"id\":$i,\"full_name\":\"crm$i\",\"email\":null,\"balance\":$((i % 97)).5}"
done
wait_for "2000 rows on both sides" 180 agree
expect_eq "synced: rows in PostgreSQL" 2000 "$(pg_count)"
expect_eq "synced: records in the CRM" 2000 "$(crm_live)"

rec -m customers
expect_eq "in sync: exit 0" 0 $RC
check "in sync: 2000 same, nothing else" grep -q "same 2000, only_a 0, only_b 0, different 0, stale 0" "$WORK/rec.out"
check "in sync: counts on both sides" grep -q "(2000 records) vs /customers on crm (2000 records)" "$WORK/rec.out"
check "in sync: every row compared" grep -q "compared every row (a 2000, b 2000)" "$WORK/rec.out"
check "in sync: says no drift" grep -q "^  no drift" "$WORK/rec.out"

# ---- drift behind tandem's back ----
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
behind -c "delete from customers where id = 10" \
       -c "update customers set name = 'changed on pg', balance = 7.10 where id in (11, 12)" \
       -c "insert into customers values (5001, 'new on pg', 'n1@x', 1.50), (5002, 'new on pg', null, 2)"
crm_write DELETE /customers/100010
crm_write PATCH /customers/100011 '{"full_name":"changed on crm"}'
crm_write PATCH /customers/13 '{"balance":99.99}'
crm_write POST /customers '{"id":100900,"full_name":"new on crm","email":"c@x","balance":3}'
# Not drift: the same values written again (17.5 is 17.50), a new updated_at.
crm_write PATCH /customers/14 '{"balance":17.5,"full_name":"pg14"}'
# Not drift either: a record the CRM keeps under its own id (200000) for
# PostgreSQL row 5000, paired in the key cross-reference as the writer
# pairs a server-assigned id.
behind -c "insert into customers values (5000, 'paired', 'p@x', 5)"
crm_write PUT /customers/200000 '{"full_name":"paired","email":"p@x","balance":5.00}'
sqlite3 "$WORK/state.db" "insert into xref (mapping, key_a, key_b, updated_at_us)
                          values ('customers', '[\"5000\"]', '[\"200000\"]', 0)"

rec -m customers
expect_eq "drift: exit 3" 3 $RC
check "drift: exact counts per class" grep -q "same 1995, only_a 3, only_b 2, different 4, stale 0" "$WORK/rec.out"
check "drift: record counts" grep -q "(2002 records) vs /customers on crm (2001 records)" "$WORK/rec.out"
for k in 5001 5002 100010; do check "only_a lists $k" grep -q "only_a  *\[\"$k\"\]" "$WORK/rec.out"; done
for k in 10 100900; do check "only_b lists $k" grep -q "only_b  *\[\"$k\"\]" "$WORK/rec.out"; done
check "different lists 11 with its field values" grep -q \
  "different  *\[\"11\"\]  name: a \"changed on pg\" | b \"pg11\"; balance: a \"7.10\" | b \"13.75\"" "$WORK/rec.out"
check "different lists 13 (balance changed on the CRM)" grep -q \
  "different  *\[\"13\"\]  balance: a \"16.25\" | b \"99.99\"" "$WORK/rec.out"
check "different lists 100011" grep -q "different  *\[\"100011\"\]  name: a \"crm100011\" | b \"changed on crm\"" "$WORK/rec.out"
check "17.5 equals 17.50: key 14 is not listed" bash -c "! grep -q '\[\"14\"\]' '$WORK/rec.out'"
check "the cross-referenced key is not listed" bash -c "! grep -q '\[\"5000\"\]\|\[\"200000\"\]' '$WORK/rec.out'"
check "says drift" grep -q "^  drift" "$WORK/rec.out"

rec -m customers --json
expect_eq "--json: exit 3" 3 $RC
expect_eq "--json: exactly the drifted keys, in key order" \
  '["10"] ["100010"] ["100011"] ["100900"] ["11"] ["12"] ["13"] ["5001"] ["5002"]' \
  "$(jqv '[.mappings[0].differences[].key | tojson] | join(" ")')"
expect_eq "--json: total differences" 9 "$(jqv '.mappings[0].differences_total')"
expect_eq "--json: no buckets with a rest side" "null 0" \
  "$(jqv '.mappings[0].method | "\(.bucket_method) \(.buckets)"')"
expect_eq "--json: CRM values in side-a names" '{"balance":"99.99"}' \
  "$(jqv '.mappings[0].differences[] | select(.key == ["13"]) | .b | tojson')"
check "--json: the CRM side's versions are its updated_at" test \
  "$(jqv '.mappings[0].differences[] | select(.key == ["100011"]) | .version_b_us')" -gt 0

# ---- repair without a daemon: applied inline, both ways ----
before=$(sqlite3 "$WORK/state.db" "select coalesce(max(id), 0) from conflicts")
rec -m customers --repair
expect_eq "inline repair: exit 0" 0 $RC
check "inline repair: applied by this command" grep -q "applied by this command" "$WORK/rec.out"
check "inline repair: 9 keys decided" grep -q "repair: 9 key(s) decided" "$WORK/rec.out"
check "inline repair: no drift after" grep -q "^  no drift" "$WORK/rec.out"
expect_eq "inline repair: one conflict per key, rule reconcile" 9 \
  "$(sqlite3 "$WORK/state.db" "select count(distinct key) from conflicts where id > $before and rule like 'reconcile:%'")"
# PostgreSQL's drift reached the CRM (the REST writer).
expect_eq "repair: pg delete reached the CRM" 404 "$(crm_code /customers/10)"
expect_eq "repair: pg update reached the CRM" '"changed on pg" 7.1' \
  "$(crm_field 11 full_name) $(crm_field 11 balance)"
expect_eq "repair: pg insert reached the CRM" '"new on pg" null' \
  "$(crm_field 5002 full_name) $(crm_field 5002 email)"
# The CRM's drift reached PostgreSQL.
expect_eq "repair: crm delete reached PostgreSQL" 0 "$(pg_count "where id = 100010")"
expect_eq "repair: crm update reached PostgreSQL" "changed on crm" "$(pg_val 100011 name)"
expect_eq "repair: crm balance reached PostgreSQL" "99.99" "$(pg_val 13 balance)"
expect_eq "repair: crm insert reached PostgreSQL" "new on crm|c@x|3.00" \
  "$(psql_on A -c "select concat_ws('|', name, email, balance) from customers where id = 100900")"
expect_eq "repair: the CRM record of row 5000 keeps its own id" 404 "$(crm_code /customers/5000)"
rec -m customers
expect_eq "second reconcile: exit 0" 0 $RC
check "second reconcile: 2002 same" grep -q "same 2002, only_a 0, only_b 0, different 0, stale 0" "$WORK/rec.out"
expect_eq "rows in PostgreSQL after repair" 2002 "$(pg_count)"
expect_eq "records in the CRM after repair" 2002 "$(crm_live)"

# ---- the daemon reads the repairs back as echoes; repair through it ----
# Drift for the daemon to repair, made before it starts (while it runs, its
# writer holds the origin): it never sees these changes.
behind -c "update customers set name = 'fixed through the daemon' where id = 20" \
       -c "delete from customers where id = 21"
crm_before=$(sqlite3 "$WORK/state.db" "select count(*) from journal_change c join journal_txn t using (txn) where t.endpoint = 'crm'")
start_tandem "$WORK/cfg.json" "$WORK/tandem2.log"
wait_for "tandem ready again" 30 grep -q '"msg":"ready' "$WORK/tandem2.log"
sleep 3
rec -m customers --json
expect_eq "with the daemon: drift, exit 3" 3 $RC
expect_eq "with the daemon: exactly the new drift" 'different 1, only_a 0, only_b 1: ["20"] ["21"]' \
  "$(jqv '.mappings[0] | "different \(.classes.different), only_a \(.classes.only_a), only_b \(.classes.only_b): \([.differences[].key | tojson] | join(" "))"')"
expect_eq "with the daemon: the daemon was seen" true "$(jqv .daemon_running)"
expect_eq "after restart: the repaired CRM records were echoes, not changes" "$crm_before" \
  "$(sqlite3 "$WORK/state.db" "select count(*) from journal_change c join journal_txn t using (txn)
                               where t.endpoint = 'crm' and c.key <> '[\"5000\"]'")"
rec -m customers --repair
expect_eq "repair with the daemon: exit 0" 0 $RC
check "repair: applied by the running daemon" grep -q "applied by the running daemon" "$WORK/rec.out"
expect_eq "daemon repair: the update reached the CRM" '"fixed through the daemon"' "$(crm_field 20 full_name)"
expect_eq "daemon repair: the delete reached the CRM" 404 "$(crm_code /customers/21)"
rec -m customers
expect_eq "after the daemon's repair: exit 0" 0 $RC
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true

# ---- feed pages that cannot be used, an unreachable CRM ----
faults '{"route":"GET /customers","seed":1,"malformed_rate":1}'
rec -m customers
no_faults
expect_eq "unusable pages: exit 1" 1 $RC
check "unusable pages: endpoint and request named" grep -q \
  "endpoint crm: GET /customers?limit=50: the feed page cannot be used (5 attempts)" "$WORK/rec.err"
check "unusable pages: retried with a log line" grep -q "feed page cannot be parsed; reading it again" "$WORK/rec.err"
kill -TERM $CRMSIM_PID; wait $CRMSIM_PID || true
rec -m customers
expect_eq "unreachable CRM: exit 1" 1 $RC
check "unreachable CRM: endpoint named, what to do" grep -q \
  "endpoint crm: GET /customers?limit=50: no answer.*tandem check" "$WORK/rec.err"
check "the token never appears" bash -c "! grep -q s3cr3t-token '$WORK/rec.err' '$WORK/rec.out' '$WORK/tandem.log' '$WORK/tandem2.log'"
finish
