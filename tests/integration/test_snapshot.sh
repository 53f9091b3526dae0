#!/usr/bin/env bash
# tandem snapshot (issue 7): 100k rows on A, 10k on B (some keys on both,
# equal or not, some on B only), a writer on A all through the copy. The
# slot's exported snapshot splits the writer's transactions exactly: each
# is in the copy or in the stream, never both, never neither.
source "$(dirname "$0")/lib.sh"
pg_start A
pg_start B
for db in A B; do
  psql_on $db -c "create table t (id bigint primary key, v text, n int)"
done
psql_on A -c "insert into t select g, 'a' || g, 0 from generate_series(1, 100000) g"
# 95001..97500 equal on both, 97501..100000 different (B wins: source
# priority), 100001..105000 only on B.
psql_on B -c "insert into t select g, 'a' || g, 0 from generate_series(95001, 97500) g"
psql_on B -c "insert into t select g, 'b' || g, 5 from generate_series(97501, 105000) g"
# Values COPY must escape, and nulls, travel both ways.
psql_on A -c "update t set v = null where id between 50001 and 50010"
ESCAPED="E'b\\\\\t\n' || id"     # backslash, tab, newline
psql_on B -c "update t set v = $ESCAPED, n = null where id > 104990"
pg_pg_config "$WORK/cfg.json" both t:id,v,n
sed -i 's/"strategy": "last_write_wins"/"strategy": "source_priority", "priority": "b"/' "$WORK/cfg.json"

expect_eq "unknown mapping is a usage error" 2 \
  "$("$TANDEM" snapshot -c "$WORK/cfg.json" -m nope >/dev/null 2>&1; echo $?)"

# One transaction per round: 10 new rows and n = n + 1 on ids 1..500 and
# on 97501..97510, keys B wins in the copy: A's rows change after the
# slot's snapshot, so the copy must leave them to A's stream.
writer() {
  local i=0
  while [ ! -f "$WORK/stop" ]; do
    i=$((i + 1))
    psql_retry A -c "insert into t select g, 'w', $i from generate_series($((200000 + i * 10)), $((200009 + i * 10))) g;
                     update t set n = n + 1 where id between 1 and 500 or id between 97501 and 97510" >/dev/null
    echo $i >"$WORK/rounds.tmp" && mv "$WORK/rounds.tmp" "$WORK/rounds"   # never read half-written
  done
}
rounds() { cat "$WORK/rounds" 2>/dev/null || echo 0; }
writer & WRITER=$!
wait_for "writer under way" 30 bash -c "[ \$(cat '$WORK/rounds' 2>/dev/null || echo 0) -ge 3 ]"
before=$(rounds)
rc=0
"$TANDEM" snapshot -c "$WORK/cfg.json" -m t >"$WORK/snapshot.out" 2>"$WORK/snapshot.log" || rc=$?
after=$(rounds)
wait_for "writer past the snapshot" 30 bash -c "[ \$(cat '$WORK/rounds') -ge $((after + 3)) ]"
touch "$WORK/stop"
wait $WRITER
K=$(rounds)
cat "$WORK/snapshot.out"
expect_eq "snapshot exits 0" 0 "$rc"
check "writer ran before and after the copy" test "$before" -ge 3 -a "$K" -gt "$after"
check "progress logged as JSON (stderr is no terminal)" grep -q '"msg":"copy read everything"' "$WORK/snapshot.log"
expect_eq "slots created on both sides" "1 1" \
  "$(psql_on A -c "select count(*) from pg_replication_slots where slot_name = 'tandem_a'") $(psql_on B -c "select count(*) from pg_replication_slots where slot_name = 'tandem_b'")"
expect_eq "A's position is its slot's consistent point" \
  "$(psql_on A -c "select confirmed_flush_lsn from pg_replication_slots where slot_name = 'tandem_a'")" \
  "$(sq "select position from positions where endpoint = 'A'")"
read_a=$(sed -n 's/^ok   snapshot t: a \([0-9]*\) rows.*/\1/p' "$WORK/snapshot.out")
in_copy=$(( (read_a - 100000) / 10 ))    # writer rounds the copy saw
check "the copy saw some rounds, the stream gets the rest" test "$in_copy" -ge 1 -a "$in_copy" -lt "$K"
expect_eq "on both sides: equal kept" 2500 "$(sed -n 's/.*on both sides \([0-9]*\) equal.*/\1/p' "$WORK/snapshot.out")"
expect_eq "B-only keys and B's winners reached A, rows A changed meanwhile left" "7490" \
  "$(psql_on A -c "select count(*) from t where v like 'b%'")"
check "rows changed during the copy reported" grep -q "^     10 rows changed during the copy" "$WORK/snapshot.out"
expect_eq "escaped values and nulls copied" 10 \
  "$(psql_on A -c "select count(*) from t where v = $ESCAPED and n is null")"
expect_eq "differing keys decided and recorded" 2500 \
  "$(sq "select count(*) from conflicts where mapping = 't' and rule like 'snapshot:%'")"

HTTP_PORT=$(free_port)
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
converged() { [ "$(table_md5 A t)" = "$(table_md5 B t)" ]; }
wait_for "both sides converge" 60 converged
expect_eq "identical tables" "$(table_md5 A t)" "$(table_md5 B t)"
expect_eq "rows" $((105000 + K * 10)) "$(psql_on B -c 'select count(*) from t')"
for db in A B; do
  expect_eq "n = n + 1 applied exactly $K times on $db" "$K" \
    "$(psql_on $db -c 'select distinct n from t where id <= 500 or id between 97501 and 97510')"
done
# Exactly once: every writer round after the slot's point is journaled
# once, none from before; the copy's own writes were not captured back.
expect_eq "journaled rounds from A = rounds after the copy" $((K - in_copy)) \
  "$(sq "select count(*) from journal_txn where endpoint = 'A' and commit_seq is not null")"
expect_eq "journaled inserts from A" $(( (K - in_copy) * 10 )) \
  "$(sq "select count(*) from journal_change c join journal_txn j using (txn) where j.endpoint = 'A' and c.op = 'I'")"
expect_eq "nothing journaled from B (the copy's writes are tandem's own)" 0 \
  "$(sq "select count(*) from journal_txn where endpoint = 'B'")"
expect_eq "a shadow per key" "$(psql_on A -c 'select count(*) from t')" \
  "$(sq "select count(*) from shadow where mapping = 't' and tombstone = 0")"
expect_eq "no conflicts from the stream" 2500 "$(sq "select count(*) from conflicts where mapping = 't'")"

# A slot in place means the pipeline streams: snapshot refuses.
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
rc=0
"$TANDEM" snapshot -c "$WORK/cfg.json" -m t >"$WORK/again.out" 2>&1 || rc=$?
expect_eq "snapshot of a mapping whose slot exists exits 0" 0 "$rc"
check "it requests a backfill through the stream instead" grep -q "backfill requested" "$WORK/again.out"
expect_eq "the backfill request is saved for the daemon" 1 "$(sq "select count(*) from meta where k = 'backfill:t:a' and v <> 'done'")"
expect_eq "the slot is left alone" 1 "$(psql_on A -c "select count(*) from pg_replication_slots where slot_name = 'tandem_a'")"
finish
