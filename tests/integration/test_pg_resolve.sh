#!/usr/bin/env bash
# field_merge and plugin on a PostgreSQL pair (issue 6): the resolver
# decides inside the PostgreSQL writer. Edits of different fields of one
# row on both sides both survive; a field changed on both sides goes to the
# fallback; the example plugin decides per field; both sides end equal.
source "$(dirname "$0")/lib.sh"
[ -f "${PLUGIN_EXAMPLE:-}" ] || { echo "PLUGIN_EXAMPLE not set" >&2; exit 1; }
pg_start A
pg_start B
for db in A B; do
  psql_on $db -c "create table fm (id bigint primary key, v text, n int, note text); alter table fm replica identity full;
                  create table pl (id bigint primary key, v text, w text); alter table pl replica identity full"
done
pg_pg_config "$WORK/cfg.json" both fm:id,v,n,note pl:id,v,w
sed -i '0,/"strategy": "last_write_wins"/s//"strategy": "field_merge", "fallback": "last_write_wins"/' "$WORK/cfg.json"
sed -i "0,/\"strategy\": \"last_write_wins\" }/s||\"strategy\": \"plugin\", \"plugin\": \"$PLUGIN_EXAMPLE\" }|" "$WORK/cfg.json"
check "config has both strategies" bash -c "grep -q field_merge '$WORK/cfg.json' && grep -q '\"plugin\":' '$WORK/cfg.json'"
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
check "no warning that the writer cannot apply a strategy" bash -c "! grep -q 'not applied by the PostgreSQL writer' '$WORK/tandem.log'"
psql_on A -c "insert into fm select g, 'base', 0, 'base' from generate_series(1, 100) g;
              insert into pl select g, 'base', 'base' from generate_series(1, 10) g"
converged() { [ "$(table_md5 A fm)$(table_md5 A pl)" = "$(table_md5 B fm)$(table_md5 B pl)" ]; }
wait_for "base rows on B" 30 converged
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true

# Offline edits on both sides.
psql_on A -c "update fm set v = 'A-v' where id <= 50"
psql_on B -c "update fm set n = 7 where id <= 50"
psql_on B -c "update fm set note = 'B-early' where id between 51 and 60"
psql_on A -c "update fm set note = 'A-late' where id between 51 and 60"
psql_on A -c "update fm set note = 'A-early' where id between 61 and 70"
psql_on B -c "update fm set note = 'B-late' where id between 61 and 70"
psql_on A -c "delete from fm where id = 100"
psql_on A -c "update pl set v = 'longer-from-A', w = 'a' where id <= 10"
psql_on B -c "update pl set v = 'b', w = 'longer-from-B' where id <= 10"
start_tandem "$WORK/cfg.json" "$WORK/tandem2.log"
wait_for "converge after offline edits" 60 converged
for db in A B; do
  expect_eq "$db: fields changed on one side each are both kept" "50|A-v|7|base" \
    "$(psql_on $db -c "select count(*), min(v), min(n), min(note) from fm where id <= 50 and v = 'A-v' and n = 7")"
  expect_eq "$db: a field changed on both sides goes to the later write (A)" "A-late" \
    "$(psql_on $db -c "select string_agg(distinct note, ',') from fm where id between 51 and 60")"
  expect_eq "$db: a field changed on both sides goes to the later write (B)" "B-late" \
    "$(psql_on $db -c "select string_agg(distinct note, ',') from fm where id between 61 and 70")"
  expect_eq "$db: the delete reached both sides" 0 "$(psql_on $db -c "select count(*) from fm where id = 100")"
  expect_eq "$db: the plugin took the longer value per field" "longer-from-A|longer-from-B" \
    "$(psql_on $db -c "select string_agg(distinct v || '|' || w, ',') from pl")"
done
expect_eq "identical after offline edits" "$(table_md5 A fm)$(table_md5 A pl)" "$(table_md5 B fm)$(table_md5 B pl)"
expect_eq "each doubly edited fm key is a field_merge conflict" 70 \
  "$(sq "select count(distinct key) from conflicts where mapping = 'fm' and strategy = 'field_merge'")"
expect_eq "each doubly edited pl key is a plugin conflict" 10 \
  "$(sq "select count(distinct key) from conflicts where mapping = 'pl' and strategy = 'plugin'")"
check "conflict results hold the merged record" bash -c "[ \$(sqlite3 -readonly '$WORK/state.db' \"select count(*) from conflicts where mapping = 'fm' and key = '[\\\"1\\\"]' and result like '%A-v%' and result like '%\\\"n\\\":\\\"7\\\"%'\") -ge 1 ]"

cid=$(sq "select id from conflicts where mapping = 'fm' and key = '[\"1\"]' order by id limit 1")
"$TANDEM" conflicts show "$cid" -c "$WORK/cfg.json" | tr -d ' \n' >"$WORK/show.out"
check "conflicts show explains each field: v from one side" grep -q '"field":"v","taken_from":"a","rule":"one_side_changed"' "$WORK/show.out"
check "conflicts show explains each field: n from the other" grep -q '"field":"n","taken_from":"b","rule":"one_side_changed"' "$WORK/show.out"
check "conflicts show explains each field: note untouched" grep -q '"field":"note","taken_from":"both_equal"' "$WORK/show.out"
fallback_named() { sq "select decisions from conflicts where mapping = 'fm' and key = '[\"55\"]'" | grep -q '"field":"note","taken_from":"[ab]","rule":"last_write_wins"'; }
check "a field both changed names the fallback" fallback_named

# Live: the same rows edited on both sides at once, different fields.
for r in 1 2 3 4 5; do
  psql_retry A -c "update fm set v = 'A$r' where id <= 50" >/dev/null & U1=$!
  psql_retry B -c "update fm set n = n + 10 where id <= 50" >/dev/null & U2=$!
  wait $U1 $U2
done
wait_for "converge after concurrent edits" 90 converged
for db in A B; do
  expect_eq "$db: every edit of both sides survived" "50" \
    "$(psql_on $db -c "select count(*) from fm where id <= 50 and v = 'A5' and n = 57")"
done
expect_eq "nothing dead-lettered" 0 "$(sq "select count(*) from dlq")"
kill -TERM $TANDEM_PID
set +e; wait $TANDEM_PID; rc=$?; set -e
expect_eq "clean stop" 0 $rc

# A plugin that cannot be used is a config error at start (exit 2).
for bad in "$WORK/no-such-resolver.so" "$(dirname "$PLUGIN_EXAMPLE")/abi_mismatch_resolver.so"; do
  sed "s|$PLUGIN_EXAMPLE|$bad|" "$WORK/cfg.json" >"$WORK/bad.json"
  set +e; "$TANDEM" check -c "$WORK/bad.json" >"$WORK/bad.out" 2>&1; rc=$?; set -e
  expect_eq "check exits 2 for plugin $(basename "$bad")" 2 $rc
  check "the message names the plugin setting and the file" \
    grep -q "conflict.plugin: .*$(basename "$bad")" "$WORK/bad.out"
  set +e; "$TANDEM" run -c "$WORK/bad.json" >"$WORK/bad.out" 2>&1; rc=$?; set -e
  expect_eq "run exits 2 for plugin $(basename "$bad")" 2 $rc
done
check "an ABI mismatch is named as such" grep -qi "abi" "$WORK/bad.out"
finish
