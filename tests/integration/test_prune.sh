#!/usr/bin/env bash
# The daemon prunes the journal (SPEC §5): transactions every writer has
# applied go once older than state.retention_s; what a writer has not
# applied (its target down) stays however old it gets, and is applied when
# the target is back.
source "$(dirname "$0")/lib.sh"

pg_start A
pg_start B
psql_on A -c "create table t (id bigint primary key, v text)"
psql_on B -c "create table t (id bigint primary key, v text)"
pg_pg_config "$WORK/cfg.json" a_to_b t:id,v
sed -i "s|\"state\": { \"path\": \"\\([^\"]*\\)\" }|\"state\": { \"path\": \"\\1\", \"retention_s\": 2 }|" \
  "$WORK/cfg.json"
grep -q '"retention_s": 2' "$WORK/cfg.json"
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

journal_txns() { sq "select count(*) from journal_txn"; }
journal_empty() { [ "$(journal_txns)" = 0 ]; }
b_count_is() { [ "$(psql_on B -c "select count(*) from t")" = "$1" ]; }

for i in $(seq 1 20); do psql_on A -c "insert into t values ($i, 'v$i')" >/dev/null; done
wait_for "20 rows on B" 30 b_count_is 20
wait_for "the applied transactions pruned" 30 journal_empty
check "the change sequence keeps counting after the prune" \
  test "$(sq "select cast(v as integer) from meta where k = 'journal_pruned_seq'")" -ge 20

# B down: its transactions stay past the retention window.
pg_stop B
for i in $(seq 21 30); do psql_on A -c "insert into t values ($i, 'v$i')" >/dev/null; done
wait_for "the new transactions journaled" 30 bash -c "[ \"\$(sqlite3 -readonly -cmd '.timeout 5000' '$WORK/state.db' 'select count(*) from journal_txn')\" -ge 10 ]"
sleep 5
expect_eq "nothing unapplied pruned (B down for longer than retention_s)" 10 "$(journal_txns)"
pg_restart_cluster B
wait_for "30 rows on B" 60 b_count_is 30
expect_eq "B equals A" "$(table_md5 A t)" "$(table_md5 B t)"
wait_for "those pruned once applied" 30 journal_empty
finish
