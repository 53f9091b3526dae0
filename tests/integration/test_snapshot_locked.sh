#!/usr/bin/env bash
# snapshot against a row another transaction only locks (SPEC G6): the
# copy's conditional write skips locked rows at first (a locker usually
# changes the row, and the stream then brings it), but a lock alone — a
# foreign key check, a transaction that rolls back — changes nothing. The
# copy must wait for such a row and write it, not record it as agreed
# while the two sides still differ.
source "$(dirname "$0")/lib.sh"
pg_pair_table "id bigint primary key, v text"
# 500k equal rows to copy first, then the one that differs (B wins).
psql_on A -c "insert into t select g, 'same' from generate_series(1, 500000) g"
psql_on B -c "insert into t select g, 'same' from generate_series(1, 500000) g"
psql_on A -c "insert into t values (500001, 'a')"
psql_on B -c "insert into t values (500001, 'b')"
pg_pg_config "$WORK/cfg.json" both t:id,v
sed -i 's/"strategy": "last_write_wins"/"strategy": "source_priority", "priority": "b"/' "$WORK/cfg.json"

"$TANDEM" snapshot -c "$WORK/cfg.json" >"$WORK/snapshot.out" 2>&1 &
SNAP=$!
# Once the slots exist (their creation waits for open transactions), a
# session on A locks the differing row while the copy is still reading.
slots() { [ "$(psql_on A -c "select count(*) from pg_replication_slots")" -ge 1 ] &&
          [ "$(psql_on B -c "select count(*) from pg_replication_slots")" -ge 1 ]; }
wait_for "the snapshot's slots" 30 slots
hold_row_lock A t 500001
sleep 3
check "the copy waits for the locked row" kill -0 $SNAP
release_row_lock
set +e; wait $SNAP; rc=$?; set -e
expect_eq "snapshot exits 0" 0 "$rc"
expect_eq "B's value won on A, though the row was locked" b "$(psql_on A -c "select v from t where id = 500001")"
expect_eq "identical" "$(table_md5 A t)" "$(table_md5 B t)"
finish
