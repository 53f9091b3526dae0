#!/usr/bin/env bash
# PostgreSQL both ways (issue 4): concurrent writers on both sides converge
# without echo; concurrent edits of the same keys are decided and recorded.
source "$(dirname "$0")/lib.sh"
pg_pair_table "id bigint primary key, v text, n int"
pg_pg_config "$WORK/cfg.json" both t:id,v,n
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

# Disjoint keys: A writes odd ids, B even ids, at the same time.
writer() { # DB PARITY
  for i in $(seq 1 100); do
    psql_retry "$1" -c "insert into t select g, '$1'||g, 0 from generate_series($((i*100)), $((i*100+99))) g where g % 2 = $2" >/dev/null
    psql_retry "$1" -c "update t set n = n + 1 where id between $((i*100)) and $((i*100+99)) and id % 2 = $2 and id % 5 = 0" >/dev/null
  done
}
writer A 1 & W1=$!
writer B 0 & W2=$!
wait $W1 $W2
converged() { [ "$(table_md5 A t)" = "$(table_md5 B t)" ]; }
wait_for "both sides converge" 120 converged
expect_eq "identical tables" "$(table_md5 A t)" "$(table_md5 B t)"
expect_eq "all rows on A" 10000 "$(psql_on A -c 'select count(*) from t')"
# Echo: B's journal holds only B's own writes: 100 insert + 100 update txns.
sleep 2
expect_eq "journal did not grow from echoes (A)" 200 "$(sq "select count(*) from journal_txn where endpoint = 'A'")"
expect_eq "journal did not grow from echoes (B)" 200 "$(sq "select count(*) from journal_txn where endpoint = 'B'")"
echo_counted() { curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | grep -q "^tandem_echo_suppressed_total{endpoint=\"$1\"} [1-9]"; }
check "echo suppression counted on A" wait_for "echo metric A" 10 echo_counted A
check "echo suppression counted on B" wait_for "echo metric B" 10 echo_counted B

# The same keys edited on both sides at once: no lost update, one outcome.
psql_on A -c "insert into t select g, 'base', 0 from generate_series(-200, -1) g"
wait_for "base rows on B" 30 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from t where id < 0') = 200 ]"
for r in 1 2 3 4 5; do
  psql_retry A -c "update t set v = 'A$r', n = n + 1 where id < 0" >/dev/null & U1=$!
  psql_retry B -c "update t set v = 'B$r', n = n + 10 where id < 0" >/dev/null & U2=$!
  wait $U1 $U2   # not a bare wait: tandem runs in the background too
done
wait_for "both sides converge after concurrent edits" 120 converged
expect_eq "identical after concurrent edits" "$(table_md5 A t)" "$(table_md5 B t)"
# Both sides edited while tandem is stopped, in both orders: whatever order
# the two streams are read in, the later write wins on both sides.
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
before=$(sq "select coalesce(max(id), 0) from conflicts")
psql_on B -c "update t set v = 'B-early' where id between -200 and -191"
psql_on A -c "update t set v = 'A-late' where id between -200 and -191"
psql_on A -c "update t set v = 'A-early' where id between -190 and -181"
psql_on B -c "update t set v = 'B-late' where id between -190 and -181"
psql_on A -c "update t set v = 'A-only' where id = -180"
start_tandem "$WORK/cfg.json" "$WORK/tandem2.log"
wait_for "converge after offline edits" 60 converged
expect_eq "later write on A wins on both" "A-late" "$(psql_on B -c 'select distinct v from t where id between -200 and -191')"
expect_eq "later write on B wins on both" "B-late" "$(psql_on A -c 'select distinct v from t where id between -190 and -181')"
expect_eq "one-sided edit applied" "A-only" "$(psql_on B -c 'select v from t where id = -180')"
expect_eq "identical after offline edits" "$(table_md5 A t)" "$(table_md5 B t)"
# Every key edited on both sides is a decided, recorded conflict.
expect_eq "each doubly edited key recorded as a conflict" 20 "$(sq "select count(distinct key) from conflicts where id > $before and mapping = 't' and strategy = 'last_write_wins'")"
conflicts=$(sq "select count(*) from conflicts where mapping = 't'")
"$TANDEM" conflicts list -c "$WORK/cfg.json" >"$WORK/conflicts.out"
expect_eq "conflicts list prints every recorded conflict" "$conflicts" "$(wc -l <"$WORK/conflicts.out")"
check "conflicts list names strategy and outcome" grep -q "last_write_wins.decided" "$WORK/conflicts.out"
cid=$(head -1 "$WORK/conflicts.out" | cut -f1)
check "conflicts show has base and both sides" bash -c "'$TANDEM' conflicts show $cid -c '$WORK/cfg.json' | grep -q '\"rule\"'"
expect_eq "each conflict names per-field decisions" "$conflicts" "$(sq "select count(*) from conflicts where mapping = 't' and decisions like '%\"rule\":\"last_write_wins\"%'")"
check "conflicts endpoint lists them" bash -c "curl -fsS http://127.0.0.1:$HTTP_PORT/conflicts | grep -q last_write_wins"
# A bulk insert that meets a key the other side already has: the batched
# insert fails, the group is redone with conditional writes, the conflict
# is decided and recorded, every other row lands.
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
psql_on B -c "insert into t values (5000000, 'B-existing', 0)"
psql_on A -c "insert into t select g, 'A-bulk', 1 from generate_series(5000000, 5000099) g"
start_tandem "$WORK/cfg.json" "$WORK/tandem3.log"
wait_for "converge after the bulk insert" 60 converged
expect_eq "bulk rows all on B" 100 "$(psql_on B -c "select count(*) from t where v = 'A-bulk'")"
expect_eq "identical after the bulk insert" "$(table_md5 A t)" "$(table_md5 B t)"
n_conf=$(sq "select count(*) from conflicts where key = '[\"5000000\"]'")
check "existing key decided as a conflict ($n_conf)" test "$n_conf" -gt 0
kill -TERM $TANDEM_PID
set +e; wait $TANDEM_PID; rc=$?; set -e
expect_eq "clean stop" 0 $rc
finish
