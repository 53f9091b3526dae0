#!/usr/bin/env bash
# PostgreSQL <-> REST, what test_rest.sh leaves out (issue 5): delete
# policies side by side (soft flag, ignore, propagate); "numeric": "string"
# keeping 30-digit values exact both ways; the REST resource as side a with
# ids the server assigns (kept in the key cross-reference); and 10k changes
# each way at once under 500s, 429s and dropped connections, ending equal,
# without duplicates or DLQ entries, then 2000 records edited on both sides
# at once.
# Usage: test_rest_more.sh path/to/tandem   (CRMSIM=path/to/crmsim)
source "$(dirname "$0")/lib.sh"
CRMSIM=${CRMSIM:-${2:-}}
[ -n "$CRMSIM" ] || { echo "CRMSIM (path to crmsim) is not set" >&2; exit 2; }
CRMSIM=$(readlink -f "$CRMSIM")

pg_start A
for t in notes_soft notes_ign notes_prop; do
  psql_on A -c "create table $t (id bigint primary key, body text, archived boolean not null default false);
                alter table $t replica identity full"
done
psql_on A -c "create table amounts (id bigint primary key, amount numeric(30,10));
              alter table amounts replica identity full"
psql_on A -c "create table leads (id bigint primary key, name text, email text);
              alter table leads replica identity full"
psql_on A -c "create table big (id bigint primary key, name text, n int);
              alter table big replica identity full"

# leads: the server owns its ids (a POST's body id is ignored).
crmsim_start --seed 7 --assign-ids leads --resources notes_soft,notes_ign,notes_prop,amounts,leads,big
HTTP_PORT=$(free_port)

FEED="$CRM_FEED,
      \"write\": { \"create\": \"POST\", \"update\": \"PATCH\", \"delete\": \"DELETE\" }"
# rest_map NAME ENDPOINT DELETES [FIELDS]: PostgreSQL table NAME (side a)
# with the resource /NAME (side b).
rest_map() {
  echo "{ \"name\": \"$1\",
      \"a\": { \"endpoint\": \"app\", \"table\": \"public.$1\", \"key\": [\"id\"] },
      \"b\": { \"endpoint\": \"$2\", \"resource\": \"/$1\", \"key\": [\"id\"], $FEED },
      \"fields\": { ${4:-\"id\": \"id\", \"body\": \"body\"} },
      \"direction\": \"both\", \"conflict\": { \"strategy\": \"last_write_wins\" },
      \"deletes\": $3 }"
}
REST_EP='"poll_interval_ms": 200, "page_size": 500, "timeout_ms": 5000,
         "max_in_flight": 16, "max_requests_per_s": 10000'
cat >"$WORK/cfg.json" <<JSON
{ "name": "it", "state": { "path": "$WORK/state.db" },
  "log": { "level": "${LOG_LEVEL:-info}" },
  "http": { "listen": "127.0.0.1:$HTTP_PORT" },
  "retry": { "max_attempts": 50, "max_retry_s": 600, "backoff_max_ms": 1000 },
  "endpoints": {
    "app": { "kind": "postgres", "conninfo": "$(conninfo_of A)" },
    "crm": { "kind": "rest", "base_url": "$CRM", $REST_EP },
    "crms": { "kind": "rest", "base_url": "$CRM", "numeric": "string", "tls_verify": false,
              $REST_EP } },
  "mappings": [
    $(rest_map notes_soft crm '{ "soft": "archived" }'),
    $(rest_map notes_ign crm '"ignore"'),
    $(rest_map notes_prop crm '"propagate"'),
    $(rest_map amounts crms '"propagate"' '"id": "id", "amount": "amount"'),
    $(rest_map big crm '"propagate"' '"id": "id", "name": "name", "n": "n"'),
    { "name": "leads",
      "a": { "endpoint": "crm", "resource": "/leads", "key": ["id"], $FEED },
      "b": { "endpoint": "app", "table": "public.leads", "key": ["id"] },
      "fields": { "id": "id", "full_name": "name", "email": "email" },
      "direction": "both", "conflict": { "strategy": "last_write_wins" } } ] }
JSON

crm_get() { curl -fsS "$CRM$1"; }
crm_write() { # METHOD PATH [BODY]
  local code
  code=$(curl -sS --max-time 5 -o "$WORK/last_body" -w '%{http_code}' -X "$1" \
    -H 'Content-Type: application/json' "$CRM$2" ${3:+-d "$3"} || echo 000)
  case $code in 2??) return 0 ;; esac
  echo "crm_write $1 $2: $code $(cat "$WORK/last_body")" >&2; return 1
}
# crm_q RES SELECT [WHERE]: SQL over the records of RES (all, deleted ones
# too) as r, read through a file: they outgrow a command-line argument.
crm_q() {
  curl -fsS "$CRM/_admin/records/$1" >"$WORK/records_$1.json"
  chmod 644 "$WORK/records_$1.json"
  psql_on A -c "select $2 from json_array_elements(pg_read_file('$WORK/records_$1.json')::json) r ${3:-}"
}
LIVE="where not (r->>'deleted')::bool"
pg_q() { psql_on A -c "$1"; }
# pg_w SQL: a write racing tandem's apply on the same rows; retried when
# PostgreSQL picks it as a deadlock victim, as any application would.
pg_w() { psql_retry A -c "$1" >/dev/null; }
crm_changes() { # MAPPING: changes journaled from the CRM for it
  sq "select count(*) from journal_change c join journal_txn t using (txn)
      where t.endpoint in ('crm', 'crms') and c.mapping = '$1'"
}
# wait_secs DESC TIMEOUT_S CMD...: wait_for by the clock, for slow CMDs.
wait_secs() {
  local desc=$1 end=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { echo "timeout waiting for: $desc" >&2; return 1; }
    sleep 0.2
  done
}
eq_wait() { # DESC TIMEOUT EXPECTED CMD...: waits until CMD prints EXPECTED
  local desc=$1 t=$2 want=$3; shift 3
  wait_secs "$desc" "$t" bash -c "[ \"\$($(printf '%q ' "$@"))\" = $(printf '%q' "$want") ]" || true
  expect_eq "$desc" "$want" "$("$@")"
}
export -f crm_q pg_q psql_on port_of
export CRM WORK A_PORT LIVE

start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
expect_eq "tls_verify false is warned about at start, for that endpoint only" 1 \
  "$(grep -c '"level":"warn".*"msg":"TLS verification is off.*"endpoint":"crms"' "$WORK/tandem.log")"

# ---- 1. deletes: soft flag, ignore, propagate on three mappings ----
for t in notes_soft notes_ign notes_prop; do
  pg_q "insert into $t (id, body) select g, 'note' || g from generate_series(1, 6) g"
done
for t in notes_soft notes_ign notes_prop; do
  eq_wait "$t in the CRM" 30 6 crm_q $t "count(*)" "$LIVE"
done
for t in notes_soft notes_ign notes_prop; do pg_q "delete from $t where id in (1, 2)"; done
eq_wait "soft delete flags written" 30 "1 2" \
  crm_q notes_soft "string_agg(r->>'id', ' ' order by r->>'id')" "where (r->>'archived')::bool"
eq_wait "propagated deletes" 30 "1 2" \
  crm_q notes_prop "string_agg(r->>'id', ' ' order by r->>'id')" "where (r->>'deleted')::bool"
# Barrier for "ignore": a row inserted after the deletes arrives after them.
pg_q "insert into notes_ign (id, body) values (7, 'after the delete')"
eq_wait "notes_ign barrier" 30 7 crm_q notes_ign "count(*)" "$LIVE"
expect_eq "soft: the records stay (not deleted by the server)" "6 0" \
  "$(crm_q notes_soft "count(*) || ' ' || count(*) filter (where (r->>'deleted')::bool)")"
expect_eq "soft: GET still finds the flagged record" '200 true' \
  "$(curl -sS -o "$WORK/n1" -w '%{http_code}' "$CRM/notes_soft/1") $(sed -n 's/.*"archived":\([a-z]*\).*/\1/p' "$WORK/n1")"
expect_eq "soft: no DELETE request was sent" "" \
  "$(crm_get /_admin/stats | grep -o '"DELETE /notes_soft[^"]*"' || true)"
expect_eq "ignore: the CRM records are untouched" "7 0 0" \
  "$(crm_q notes_ign "count(*) || ' ' || count(*) filter (where (r->>'deleted')::bool)
       || ' ' || count(*) filter (where r->>'archived' is not null)")"
expect_eq "propagate: the server's own soft delete, nothing else" "6 2 0" \
  "$(crm_q notes_prop "count(*) || ' ' || count(*) filter (where (r->>'deleted')::bool)
       || ' ' || count(*) filter (where r->>'archived' is not null)")"
sleep 2
expect_eq "soft: the flag does not come back as a change" 0 "$(crm_changes notes_soft)"
expect_eq "soft: the deleted rows stay deleted in PostgreSQL" "3 4 5 6" \
  "$(pg_q "select string_agg(id::text, ' ' order by id) from notes_soft")"

# A row inserted again under a soft-deleted key revives the record.
pg_q "insert into notes_soft (id, body) values (1, 'again')"
eq_wait "soft: re-insert revives the record" 30 "again|" \
  crm_q notes_soft "(r->>'body') || '|' || coalesce(r->>'archived', '')" "where r->>'id' = '1'"

# The flag taken back in the CRM: a newer write, so the row returns.
crm_write PATCH /notes_soft/2 '{"archived": false, "body": "restored in crm"}'
eq_wait "soft: clearing the flag in the CRM brings the row back" 30 "restored in crm" \
  pg_q "select coalesce(string_agg(body, ','), '-') from notes_soft where id = 2"

# Deletes made in the CRM, under each policy.
for t in notes_soft notes_ign notes_prop; do crm_write DELETE "/$t/3"; done
eq_wait "propagate: CRM delete reaches PostgreSQL" 30 0 pg_q "select count(*) from notes_prop where id = 3"
crm_write POST /notes_ign '{"id": 8, "body": "barrier"}'
eq_wait "notes_ign feed barrier" 30 1 pg_q "select count(*) from notes_ign where id = 8"
expect_eq "ignore: a CRM delete leaves the PostgreSQL row" 1 \
  "$(pg_q "select count(*) from notes_ign where id = 3")"
# SPEC §4: on a postgres peer too, the delete becomes the flag.
eq_wait "soft: a CRM delete becomes the flag in PostgreSQL" 30 true \
  pg_q "select coalesce(string_agg(archived::text, ','), 'gone') from notes_soft where id = 3"

# ---- 2. numeric "string": 30 digits exact both ways ----
pg_q "insert into amounts values (1, 12345678901234567890.1234567890), (2, -0.0000000001),
        (3, 1e-10), (4, -99999999999999999999.9999999999), (5, 0), (6, null)"
eq_wait "amounts in the CRM" 30 6 crm_q amounts "count(*)"
expect_eq "numeric string: JSON strings with every digit" \
  "1:string:12345678901234567890.1234567890 2:string:-0.0000000001 3:string:0.0000000001 4:string:-99999999999999999999.9999999999 5:string:0.0000000000 6:null:-" \
  "$(crm_q amounts "string_agg(r->>'id' || ':' || json_typeof(r->'amount') || ':' ||
       coalesce(r->>'amount', '-'), ' ' order by (r->>'id')::int)")"
crm_write PATCH /amounts/1 '{"amount": "98765432109876543210.0000000001"}'
crm_write PATCH /amounts/2 '{"amount": "-12345678901234567890.9876543210"}'
crm_write PATCH /amounts/5 '{"amount": "-1e-10"}'
crm_write PATCH /amounts/6 '{"amount": 123456789012345678}'
eq_wait "CRM amounts in PostgreSQL" 30 \
  "98765432109876543210.0000000001 -12345678901234567890.9876543210 -0.0000000001 123456789012345678.0000000000" \
  pg_q "select string_agg(coalesce(amount::text, '-'), ' ' order by id) from amounts where id in (1, 2, 5, 6)"
pg_q "update amounts set amount = amount + 1 where id in (3, 5)"
eq_wait "PostgreSQL updates in the CRM" 30 "1.0000000001 0.9999999999" \
  crm_q amounts "string_agg(r->>'amount', ' ' order by r->>'id')" "where r->>'id' in ('3', '5')"
# Strings compare as text (restfeed.h rf_value_equal), so "-1e-10" in the
# CRM against -0.0000000001 in PostgreSQL meets the next change as a
# conflict, which the strategy decides: shown, not asserted.
echo "# numeric string: conflicts on amounts: $(sq "select count(*) from conflicts where mapping = 'amounts'")"
expect_eq "numeric string: both sides hold the same values" \
  "$(pg_q "select string_agg(id || '=' || coalesce(amount::text, '-'), ' ' order by id) from amounts")" \
  "$(crm_q amounts "string_agg((r->>'id') || '=' || coalesce((r->>'amount')::numeric(30,10)::text, '-'),
       ' ' order by (r->>'id')::int)")"
sleep 1
expect_eq "numeric string: no echo of tandem's own writes" 4 "$(crm_changes amounts)"

# ---- 3. REST as side a, ids assigned by the server ----
for i in $(seq 1 20); do
  crm_write POST /leads "{\"full_name\": \"crm lead $i\", \"email\": \"c$i@x\"}"
done
eq_wait "CRM leads in PostgreSQL" 30 20 pg_q "select count(*) from leads"
# PostgreSQL's own ids, far from the server's: the server ignores them.
pg_q "insert into leads select 1000000 + g, 'pg lead ' || g, 'p' || g || '@x' from generate_series(1, 30) g"
eq_wait "PostgreSQL leads in the CRM" 30 50 crm_q leads "count(*)" "$LIVE"
expect_eq "server-assigned ids 21..50 for the PostgreSQL rows" "21 50 30" \
  "$(crm_q leads "min((r->>'id')::int) || ' ' || max((r->>'id')::int) || ' ' || count(*)" \
                 "where r->>'full_name' like 'pg lead %'")"
expect_eq "the server ids are in the key cross-reference" 30 \
  "$(sq "select count(*) from xref where mapping = 'leads'")"
pg_q "update leads set email = 'updated-' || email where id between 1000001 and 1000010"
pg_q "delete from leads where id between 1000011 and 1000015"
# Creates run concurrently: which server id a row got is in the records.
lead1=$(crm_q leads "r->>'id'" "where r->>'full_name' = 'pg lead 1'")
expect_eq "the cross-reference pairs row 1000001 with its record" "[\"$lead1\"]" \
  "$(sq "select key_a from xref where mapping = 'leads' and key_b = '[\"1000001\"]'")"
crm_write PATCH "/leads/$lead1" '{"full_name": "pg lead 1 renamed in crm"}'
crm_write PATCH /leads/5 '{"email": "crm5-changed@x"}'
pg_leads() {
  pg_q "select string_agg(name || '|' || email, ',' order by name) from leads"
}
crm_leads() {
  crm_q leads "string_agg((r->>'full_name') || '|' || (r->>'email'), ',' order by r->>'full_name')" "$LIVE"
}
export -f pg_leads crm_leads
wait_secs "leads agree" 60 bash -c '[ "$(pg_leads)" = "$(crm_leads)" ]' || true
expect_eq "leads: both sides equal" "$(pg_leads)" "$(crm_leads)"
expect_eq "leads: no duplicate records, 5 deleted" "50 5 50" \
  "$(crm_q leads "count(*) || ' ' || count(*) filter (where (r->>'deleted')::bool)
       || ' ' || count(distinct r->>'full_name')")"
expect_eq "leads: the CRM edit of a PostgreSQL-created record reached its row" \
  "pg lead 1 renamed in crm" "$(pg_q "select name from leads where id = 1000001")"
expect_eq "leads: PostgreSQL rows keep their own ids" "25 20" \
  "$(pg_q "select count(*) filter (where id > 1000000) || ' ' || count(*) filter (where id <= 20) from leads")"
# Deletes both ways across the cross-reference, and a deleted key created
# again (a new record, the pairing moves to it).
lead20=$(crm_q leads "r->>'id'" "where r->>'full_name' = 'pg lead 20'")
lead11=$(crm_q leads "r->>'id'" "where r->>'full_name' = 'pg lead 11'")
crm_write DELETE "/leads/$lead20"
pg_q "delete from leads where id = 6"
pg_q "insert into leads values (1000011, 'pg lead 11 again', 'again@x')"
wait_secs "leads agree again" 60 bash -c '[ "$(pg_leads)" = "$(crm_leads)" ]' || true
expect_eq "leads: equal after deletes both ways" "$(pg_leads)" "$(crm_leads)"
expect_eq "leads: a CRM delete of a server-id record removed its row" 0 \
  "$(pg_q "select count(*) from leads where id = 1000020")"
expect_eq "leads: a PostgreSQL delete reached the CRM's own record" true \
  "$(crm_q leads "r->>'deleted'" "where r->>'id' = '6'")"
lead11b=$(crm_q leads "r->>'id'" "where r->>'full_name' = 'pg lead 11 again'")
check "leads: the key created again is a new record ($lead11 -> $lead11b)" \
  test -n "$lead11b" -a "$lead11b" != "$lead11"
expect_eq "leads: its pairing moved to the new record" "[\"$lead11b\"]" \
  "$(sq "select key_a from xref where mapping = 'leads' and key_b = '[\"1000011\"]'")"
# reconcile pairs a rest side a's server ids through the cross-reference.
set +e
"$TANDEM" reconcile -c "$WORK/cfg.json" -m leads >"$WORK/reconcile_leads.out" 2>&1; rc=$?
set -e
expect_eq "reconcile: leads agree through the cross-reference" 0 "$rc"
# G3: creates whose answer is lost (the server applied them) are retried
# with the same Idempotency-Key, so the server-assigned records are not
# duplicated.
curl -fsS -X POST -H 'Content-Type: application/json' "$CRM/_admin/faults" \
  -d '{"route": "POST /leads", "seed": 5, "lost_reply_rate": 0.4}' >/dev/null
pg_q "insert into leads select 2000000 + g, 'lost reply ' || g, 'l' || g || '@x' from generate_series(1, 30) g"
eq_wait "every lost-reply lead in the CRM" 60 30 \
  crm_q leads "count(*)" "where r->>'full_name' like 'lost reply %'"
lost=$(curl -fsS "$CRM/_admin/stats" | jq '.faults.lost_reply // 0')
check "answers were lost ($lost)" test "$lost" -gt 0
curl -fsS -X DELETE "$CRM/_admin/faults" >/dev/null
sleep 1
expect_eq "no lead created twice" 30 "$(crm_q leads "count(*)" "where r->>'full_name' like 'lost reply %'")"
expect_eq "each paired once" 30 "$(sq "select count(*) from xref where mapping = 'leads' and key_b like '[\"20000%'")"

# ---- 4. 10k changes each way at once ----
N=5000
# curl config files, one transfer per record ("next" between them).
for i in $(seq 1 $N); do
  [ "$i" = 1 ] || echo next
  printf 'url = "%s/big"\nrequest = "POST"\nheader = "Content-Type: application/json"\ndata = "{\\"id\\": %d, \\"name\\": \\"crm%d\\", \\"n\\": 0}"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nfail\nretry = 30\nretry-all-errors\n' \
    "$CRM" $((100000 + i)) "$i"
done >"$WORK/post.cfg"
for i in $(seq 1 $N); do
  [ "$i" = 1 ] || echo next
  printf 'url = "%s/big/%d"\nrequest = "PATCH"\nheader = "Content-Type: application/json"\ndata = "{\\"n\\": 1, \\"name\\": \\"crm%du\\"}"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nfail\nretry = 30\nretry-all-errors\n' \
    "$CRM" $((100000 + i)) "$i"
done >"$WORK/patch.cfg"
t_scale=$SECONDS
# Faults on every route meanwhile: tandem retries, and so do these writers.
curl -fsS -X POST -H 'Content-Type: application/json' "$CRM/_admin/faults" -d \
  '{"route": "*", "seed": 3, "error_rate": 0.02, "rate_limit_rate": 0.01, "drop_rate": 0.01}' >/dev/null
(
  for b in $(seq 0 49); do
    pg_q "insert into big select g, 'pg' || g, 0 from generate_series($b * 100 + 1, $b * 100 + 100) g"
  done
  for b in $(seq 0 49); do
    pg_w "update big set n = n + 1, name = name || 'u' where id between $b * 100 + 1 and $b * 100 + 100"
  done
) &
pg_pid=$!
curl -sS --parallel --parallel-max 32 -K "$WORK/post.cfg" >"$WORK/post.codes" 2>"$WORK/curl.err" || true
curl -sS --parallel --parallel-max 32 -K "$WORK/patch.cfg" >"$WORK/patch.codes" 2>>"$WORK/curl.err" || true
wait "$pg_pid"
curl -fsS -X DELETE "$CRM/_admin/faults" >/dev/null
t_written=$((SECONDS - t_scale))
check "faults fired ($(crm_get /_admin/stats | grep -o '"faults":{[^}]*}'))" bash -c \
  "curl -fsS $CRM/_admin/stats | grep -q '\"drop\":[1-9]'"
expect_eq "CRM writes all answered 2xx" "$((2 * N))" "$(cat "$WORK/post.codes" "$WORK/patch.codes" | grep -c '^2')"
pg_big() { pg_q "select md5(string_agg(id || '|' || name || '|' || n, ',' order by id)) from big"; }
crm_big() {
  crm_q big "md5(string_agg((r->>'id') || '|' || (r->>'name') || '|' || (r->>'n'), ',' order by (r->>'id')::bigint))" "$LIVE"
}
export -f pg_big crm_big
wait_secs "10k each way converge" 150 bash -c '[ "$(pg_big)" = "$(crm_big)" ]' ||
  echo "# big: pg $(pg_q "select count(*) from big") crm $(crm_q big "count(*)" "$LIVE")" >&2
echo "# scale: written in ${t_written}s, converged after $((SECONDS - t_scale))s"
expect_eq "scale: both sides equal on every mapped field" "$(pg_big)" "$(crm_big)"
expect_eq "scale: rows" "10000 10000" \
  "$(pg_q "select count(*) from big") $(crm_q big "count(*)" "$LIVE")"
expect_eq "scale: no duplicate records in the CRM" 0 \
  "$(crm_q big "count(*) - count(distinct r->>'name')")"
expect_eq "scale: every PostgreSQL update and CRM edit landed" "10000" \
  "$(pg_q "select count(*) from big where n = 1 and name like '%u'")"

# The same 2000 records edited on both sides at once: decided, converged.
for i in $(seq 1 1000) $(seq 100001 101000); do
  [ "$i" = 1 ] || echo next
  printf 'url = "%s/big/%d"\nrequest = "PATCH"\nheader = "Content-Type: application/json"\ndata = "{\\"name\\": \\"both%d\\"}"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nfail\nretry = 30\nretry-all-errors\n' \
    "$CRM" "$i" "$i"
done >"$WORK/both.cfg"
t_both=$SECONDS
(
  for b in $(seq 0 9); do
    pg_w "update big set n = n + 10 where id between $b * 100 + 1 and $b * 100 + 100
            or id between 100001 + $b * 100 and 100100 + $b * 100"
  done
) &
pg_pid=$!
curl -sS --parallel --parallel-max 8 -K "$WORK/both.cfg" >"$WORK/both.codes" 2>>"$WORK/curl.err" || true
wait "$pg_pid"
expect_eq "concurrent edits: CRM writes answered 2xx" 2000 "$(grep -c '^2' "$WORK/both.codes")"
wait_secs "concurrent edits converge" 60 bash -c '[ "$(pg_big)" = "$(crm_big)" ]' || true
# (a user's write landing while tandem's conditional apply waited for the
# row's lock could leave one record apart: fixed in the PostgreSQL writer)
echo "# both sides at once: $((SECONDS - t_both))s"
# A user's write that lands on a row while tandem's conditional apply waits
# for its lock makes that apply write nothing (connectors/pg/pgsink.c: the
# row it locked is newer than its UPDATE's snapshot) and log "target kept":
# the sides can keep one record apart. Reported, not asserted.
if [ "$(pg_big)" = "$(crm_big)" ]; then
  check "concurrent edits: both sides equal" true
else
  check "concurrent edits: both sides equal" false
  echo "# records apart: $(pg_q "with c as (select (r->>'id')::bigint id,
      r->>'name' name, (r->>'n')::int n from json_array_elements(pg_read_file('$WORK/records_big.json')::json) r
      where not (r->>'deleted')::bool) select string_agg(format('%s pg=%s/%s crm=%s/%s', b.id, b.name, b.n,
      c.name, c.n), '; ') from big b join c using (id) where (b.name, b.n) is distinct from (c.name, c.n)")"
fi
expect_eq "concurrent edits: each record took one side's edit or both" 0 \
  "$(pg_q "select count(*) from big where (id <= 1000 or id between 100001 and 101000)
             and name not like 'both%' and n <> 11")"
conflicts=$(sq "select count(*) from conflicts where mapping = 'big'")
check "concurrent edits: conflicts decided and recorded ($conflicts)" test "$conflicts" -gt 0
expect_eq "nothing in the DLQ" 0 "$(sq "select count(*) from dlq")"

kill -TERM "$TANDEM_PID"
set +e; wait "$TANDEM_PID"; rc=$?; set -e
expect_eq "clean stop" 0 "$rc"
echo "# total ${SECONDS}s"
finish
