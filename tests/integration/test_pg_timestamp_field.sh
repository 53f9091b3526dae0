#!/usr/bin/env bash
# last_write_wins by a timestamp_field between two PostgreSQL sides (SPEC
# §4): when both sides keep an updated-at column, the versions compared are
# its values, not the two servers' commit times. Here the commit order and
# the column disagree on purpose; the column decides, the same on both
# sides, and the conflict log says so.
source "$(dirname "$0")/lib.sh"
pg_pair_table "id bigint primary key, v text, ts timestamptz"
pg_pg_config "$WORK/cfg.json" both t:id,v,ts
sed -i 's/"strategy": "last_write_wins"/"strategy": "last_write_wins", "timestamp_field": "ts"/' "$WORK/cfg.json"
check "config names the timestamp field" grep -q '"timestamp_field": "ts"' "$WORK/cfg.json"

start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
psql_on A -c "insert into t select g, 'base', '2025-01-01 00:00:00+00' from generate_series(1, 4) g"
converged() { [ "$(table_md5 A t)" = "$(table_md5 B t)" ]; }
wait_for "rows on B" 30 converged

kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
# Rows 1-2: B writes first with the newer ts, A commits later with an older one.
psql_on B -c "update t set v = 'B-newer-ts', ts = '2030-01-01 00:00:00+00' where id in (1, 2)"
psql_on A -c "update t set v = 'A-older-ts', ts = '2026-01-01 00:00:00+00' where id in (1, 2)"
# Rows 3-4: A writes first with the newer ts, B commits later with an older one.
psql_on A -c "update t set v = 'A-newer-ts', ts = '2031-01-01 00:00:00+00' where id in (3, 4)"
psql_on B -c "update t set v = 'B-older-ts', ts = '2027-01-01 00:00:00+00' where id in (3, 4)"
start_tandem "$WORK/cfg.json" "$WORK/tandem2.log"
wait_for "converge" 60 converged
sleep 1
expect_eq "identical tables" "$(table_md5 A t)" "$(table_md5 B t)"
expect_eq "the newer ts wins over the later commit (rows 1-2)" "B-newer-ts" "$(psql_on A -c 'select distinct v from t where id in (1, 2)')"
expect_eq "the newer ts wins over the later commit (rows 3-4)" "A-newer-ts" "$(psql_on B -c 'select distinct v from t where id in (3, 4)')"
check "conflicts recorded with the field's versions" \
  bash -c "sqlite3 -readonly '$WORK/state.db' \"select rule from conflicts where key = '[\\\"1\\\"]'\" | grep -q '1893456000000000'"
finish
