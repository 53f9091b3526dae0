#!/usr/bin/env bash
# Conflict strategies between PostgreSQL and a REST peer (issue 6): the
# same records edited on both sides while tandem is stopped, one mapping
# per strategy. source_priority keeps its side; field_merge keeps both
# sides' edits of different fields and falls back per field; manual parks
# until an operator resolves; the example plugin decides per field. Both
# sides end equal (checked with psql and GET).
source "$(dirname "$0")/lib.sh"
CRMSIM=${CRMSIM:-${2:-}}
[ -n "$CRMSIM" ] || { echo "CRMSIM (path to crmsim) is not set" >&2; exit 2; }
[ -f "${PLUGIN_EXAMPLE:-}" ] || { echo "PLUGIN_EXAMPLE not set" >&2; exit 2; }
pg_start A
for t in prio merge man plug; do
  psql_on A -c "create table $t (id bigint primary key, v text, w text); alter table $t replica identity full"
done
crmsim_start --resources prio,merge,man,plug
mapping() { # NAME CONFLICT
  cat <<JSON
    { "name": "$1",
      "a": { "endpoint": "app", "table": "public.$1", "key": ["id"] },
      "b": { "endpoint": "crm", "resource": "/$1", "key": ["id"],
             $CRM_FEED,
             "write": { "create": "PUT", "update": "PATCH", "delete": "DELETE" } },
      "fields": { "id": "id", "v": "v", "w": "w" }, "direction": "both",
      "conflict": $2 }
JSON
}
cat >"$WORK/cfg.json" <<JSON
{ "name": "it", "state": { "path": "$WORK/state.db" }, "http": { "listen": "127.0.0.1:0" },
  "endpoints": {
    "app": { "kind": "postgres", "conninfo": "$(conninfo_of A)" },
    "crm": { "kind": "rest", "base_url": "$CRM", "poll_interval_ms": 200, "page_size": 100 } },
  "mappings": [
$(mapping prio '{ "strategy": "source_priority", "priority": "a" }'),
$(mapping merge '{ "strategy": "field_merge", "fallback": "last_write_wins" }'),
$(mapping man '{ "strategy": "manual" }'),
$(mapping plug "{ \"strategy\": \"plugin\", \"plugin\": \"$PLUGIN_EXAMPLE\" }") ] }
JSON
patch_crm() { curl -fsS -X PATCH -H 'Content-Type: application/json' "$CRM$1" -d "$2" >/dev/null; }
crm_field() { curl -fsS "$CRM/$1/$2" | jq -r ".$3"; }
pg_field() { psql_on A -c "select $3 from $1 where id = $2"; }
live() { curl -fsS "$CRM/_admin/records/$1" | jq '[.[] | select(.deleted == false)] | length'; }

start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
for t in prio merge man plug; do
  psql_on A -c "insert into $t select g, 'base', 'base' from generate_series(1, 5) g"
done
all_on_crm() { for t in prio merge man plug; do [ "$(live $t)" = 5 ] || return 1; done; }
wait_for "base records on crmsim" 30 all_on_crm
sleep 1    # let the feeds read back tandem's own writes (echoes)
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true

# Both sides edit while tandem is stopped; the REST side writes last.
psql_on A -c "update prio set v = 'pg-v'; update merge set v = 'pg-v' where id <= 4;
              update merge set w = 'pg-w5' where id = 5; update man set v = 'pg-v';
              update plug set v = 'longer-from-pg', w = 'p'"
sleep 0.2
for i in 1 2 3 4 5; do
  patch_crm "/prio/$i" '{"v": "crm-v"}'
  [ $i -le 4 ] && patch_crm "/merge/$i" '{"w": "crm-w"}'
  [ $i = 5 ] && patch_crm "/merge/$i" '{"w": "crm-w5"}'
  patch_crm "/man/$i" '{"v": "crm-v"}'
  patch_crm "/plug/$i" '{"v": "c", "w": "longer-from-crm"}'
done
start_tandem "$WORK/cfg.json" "$WORK/tandem2.log"
settled() {
  [ "$(crm_field prio 3 v)" = pg-v ] && [ "$(pg_field merge 3 w)" = crm-w ] &&
  [ "$(crm_field merge 3 v)" = pg-v ] && [ "$(pg_field plug 3 w)" = longer-from-crm ] &&
  [ "$(crm_field plug 3 v)" = longer-from-pg ] && [ "$(pg_field merge 5 w)" = crm-w5 ]
}
wait_for "strategies decided on both sides" 60 settled
for i in 1 3 5; do
  expect_eq "source_priority (a) wins on both sides, record $i" "pg-v|pg-v" "$(pg_field prio $i v)|$(crm_field prio $i v)"
  expect_eq "plugin: longer value per field on both sides, record $i" \
    "longer-from-pg|longer-from-crm|longer-from-pg|longer-from-crm" \
    "$(pg_field plug $i v)|$(pg_field plug $i w)|$(crm_field plug $i v)|$(crm_field plug $i w)"
  expect_eq "manual: each side keeps its own, record $i" "pg-v|crm-v" "$(pg_field man $i v)|$(crm_field man $i v)"
done
for i in 1 4; do
  expect_eq "field_merge: both sides' edits kept, record $i" "pg-v|crm-w|pg-v|crm-w" \
    "$(pg_field merge $i v)|$(pg_field merge $i w)|$(crm_field merge $i v)|$(crm_field merge $i w)"
done
expect_eq "field_merge: a field both changed goes to the later write (REST)" "crm-w5|crm-w5" \
  "$(pg_field merge 5 w)|$(crm_field merge 5 w)"
expect_eq "each strategy recorded its conflicts" "prio|merge|plug" \
  "$(sq "select group_concat(mapping, '|') from (select distinct mapping from conflicts where mapping != 'man' order by case mapping when 'prio' then 1 when 'merge' then 2 else 3 end)")"
check "field_merge conflicts carry per-field decisions" \
  bash -c "sqlite3 -readonly '$WORK/state.db' \"select decisions from conflicts where mapping = 'merge'\" | grep -q one_side_changed"
expect_eq "manual parks every key" 5 "$(sq "select count(*) from parked where mapping = 'man' and reason = 'conflict'")"
cid=$(sq "select id from conflicts where mapping = 'man' and key = '[\"2\"]' and open = 1 order by id limit 1")
"$TANDEM" conflicts resolve "$cid" --take a -c "$WORK/cfg.json" >/dev/null
wait_for "the operator's choice on the REST side" 30 bash -c "[ \"\$(curl -fsS '$CRM/man/2' | jq -r .v)\" = pg-v ]"
expect_eq "manual: the chosen record on both sides" "pg-v|pg-v" "$(pg_field man 2 v)|$(crm_field man 2 v)"
expect_eq "manual: one decision settles the key's conflicts in both directions" 0 \
  "$(sq "select count(*) from conflicts where mapping = 'man' and key = '[\"2\"]' and open = 1")"
expect_eq "manual: the decision superseded the key's waiting change (no new conflict)" 0 \
  "$(sq "select count(*) from conflicts where mapping = 'man' and key = '[\"2\"]'
         and ts_us > (select resolved_ts_us from conflicts where id = $cid)")"
expect_eq "manual: other keys stay as they were" "pg-v|crm-v" "$(pg_field man 3 v)|$(crm_field man 3 v)"
expect_eq "nothing dead-lettered" 0 "$(sq "select count(*) from dlq where status = 'open'")"
kill -TERM $TANDEM_PID
set +e; wait $TANDEM_PID; rc=$?; set -e
expect_eq "clean stop" 0 $rc
finish
