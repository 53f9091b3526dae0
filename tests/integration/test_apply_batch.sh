#!/usr/bin/env bash
# PostgreSQL apply in bulk (issue 4): a large source transaction applied
# while it is still arriving (early apply), one cut short by a reconnect of
# the source, one redone row by row because a key already exists on the
# target, and batched clean updates, one of which finds its row changed
# underneath. B counts the writes it receives per row: nothing is applied
# twice through any of it.
source "$(dirname "$0")/lib.sh"
BIG=${BIG:-100000}
CUT=${CUT:-300000}

pg_start A
pg_start B
psql_on A -c "create table t (id bigint primary key, v text, n int not null default 0);
              alter table t replica identity full"
psql_on B -c "create table t (id bigint primary key, v text, n int, arrived timestamptz,
                              applied int not null default 0);
  create function stamp() returns trigger language plpgsql as \$\$
  begin
    new.arrived := clock_timestamp();
    new.applied := case when tg_op = 'INSERT' then 1 else old.applied + 1 end;
    return new;
  end \$\$;
  create trigger stamp before insert or update on t for each row execute function stamp();"
pg_pg_config "$WORK/cfg.json" a_to_b t:id,v,n
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

# The state's WAL while all of this runs: checkpoints keep it bounded
# under load, though the daemon's own connection leaves them to a worker.
( max=0
  while kill -0 "$TANDEM_PID" 2>/dev/null; do
    s=$(stat -c %s "$WORK/state.db-wal" 2>/dev/null || echo 0)
    if [ "$s" -gt "$max" ]; then max=$s; echo "$max" >"$WORK/wal_max"; fi
    sleep 0.05
  done ) &

b_count_is() { [ "$(psql_on B -c "select count(*) from t")" = "$1" ]; }
same_rows() { [ "$(table_md5 A t 'id, v, n')" = "$(table_md5 B t 'id, v, n')" ]; }
open_journaled() {
  [ "$(sq "select count(*) from journal_change where txn in
           (select txn from journal_txn where commit_seq is null)")" -ge "$1" ]
}

# 1. Early apply: B gets rows of the big transaction before tandem has
# journaled its commit (B commits them only after that commit is durable).
psql_on A -c "insert into t (id, v) select g, 'big' || g from generate_series(1, $BIG) g"
wait_for "the big transaction on B" 180 b_count_is "$BIG"
first_us=$(psql_on B -c "select (extract(epoch from min(arrived)) * 1000000)::bigint from t")
commit_us=$(sq "select committed_at_us from journal_txn order by nchanges desc limit 1")
check "B wrote the first rows before the journal had the source commit ($first_us < $commit_us)" \
  test "$first_us" -lt "$commit_us"
expect_eq "every row of the big transaction written once" 0 \
  "$(psql_on B -c "select count(*) from t where applied <> 1")"

# 2. The source connection drops while a transaction is applied early: the
# server resends it as a new one; the early part is rolled back on B and
# the transaction applied once from the start.
psql_on A -c "insert into t (id, v) select g, 'cut' || g from generate_series(200001, 200000 + $CUT) g" &
WRITER=$!
wait_for "part of the transaction journaled" 120 open_journaled 30000
psql_on A -c "select pg_terminate_backend(pid) from pg_stat_activity where backend_type = 'walsender'" >/dev/null
wait $WRITER
wait_for "the resent transaction on B" 180 b_count_is $((BIG + CUT))
check "the sink dropped the transaction cut short" \
  grep -q 'the source cut short a transaction applied early' "$WORK/tandem.log"
no_open_txn() { [ "$(sq "select count(*) from journal_txn where commit_seq is null")" = 0 ]; }
wait_for "the journal rid of the transaction cut short (no restart needed)" 15 no_open_txn
expect_eq "B equals A after the reconnect" "$(table_md5 A t 'id, v, n')" "$(table_md5 B t 'id, v, n')"
expect_eq "no row of the resent transaction written twice" 0 \
  "$(psql_on B -c "select count(*) from t where applied <> 1")"

# 3. A key of a large transaction already exists on B: the multi-row insert
# fails, and the transaction (applied early) is redone row by row: the
# conflict is decided (last write wins: A's later commit) and recorded.
psql_on B -c "insert into t (id, v, n) values (600010, 'local', 7)"
psql_on A -c "insert into t (id, v) select g, 'k' || g from generate_series(600001, 630000) g"
wait_for "the transaction with the existing key on B" 180 b_count_is $((BIG + CUT + 30000))
wait_for "B equals A" 60 same_rows
check "the multi-row insert was redone row by row" \
  grep -q 'a multi-row insert failed; redoing with conditional writes' "$WORK/tandem.log"
expect_eq "A's row replaced B's" "k600010" "$(psql_on B -c "select v from t where id = 600010")"
check "the conflict on the existing key is recorded" \
  test "$(sq "select count(*) from conflicts where key like '%600010%'")" -ge 1

# 4. One-row update transactions travel as set-based updates; a row changed
# on B underneath fails its batch, which is redone row by row.
psql_on B -c "update t set v = 'changed on B' where id = 7"
psql_on A -c "do \$\$ begin for i in 1..3000 loop update t set n = n + 1 where id = i; commit; end loop; end \$\$"
updated() { [ "$(psql_on B -c "select count(*) from t where id <= 3000 and n = 1")" = 3000 ]; }
wait_for "the updates on B" 120 updated
wait_for "B equals A" 60 same_rows
check "a batch that found its row changed was redone row by row" \
  grep -q 'an update found its row changed or gone; redoing with conditional writes' "$WORK/tandem.log"
check "the conflict on the changed row is recorded" \
  test "$(sq "select count(*) from conflicts where key like '%\"7\"%'")" -ge 1
expect_eq "every other updated row written exactly twice (insert, update)" 0 \
  "$(psql_on B -c "select count(*) from t where id <= 3000 and id <> 7 and applied <> 2")"
check "tandem logged no error but the terminated replication connection" bash -c \
  "! grep '\"level\":\"error\"' '$WORK/tandem.log' | grep -vq 'replication stream ended by the server'"
check "the state's WAL stayed under 64 MiB ($(cat "$WORK/wal_max") bytes at most)" \
  test "$(cat "$WORK/wal_max")" -lt $((64 * 1024 * 1024))
finish
