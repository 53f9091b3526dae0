#!/usr/bin/env bash
# The state file cannot grow (a disk that fills up, here a file-size limit
# on the daemon): its commits fail while changes stream in. Nothing the
# failed commits held may count as journaled, so none of it is
# acknowledged to the source; once the disk has room again the source
# resends it and B ends equal to A, every row applied once (G1).
source "$(dirname "$0")/lib.sh"
TXNS=${TXNS:-40}
ROWS=${ROWS:-500}
LIMIT_KB=${LIMIT_KB:-2048}

pg_start A
pg_start B
psql_on A -c "create table t (id bigint primary key, v text);
              alter table t replica identity full"
psql_on B -c "create table t (id bigint primary key, v text, applied int not null default 0)"
count_writes B t
HTTP_PORT=$(free_port)
pg_pg_config "$WORK/cfg.json" a_to_b t:id,v
# The slot retains what tandem cannot acknowledge: warn past 256 KB.
sed -i 's/"slot": "tandem_a",/"slot": "tandem_a", "slot_retained_warn_bytes": 262144,/' "$WORK/cfg.json"
check "config sets the retention limit" grep -q slot_retained_warn_bytes "$WORK/cfg.json"
"$TANDEM" setup -c "$WORK/cfg.json" >"$WORK/setup.log" 2>&1

start_tandem_limitable "$WORK/cfg.json" "$WORK/tandem.log" "$LIMIT_KB"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

# Rows of 1 KB: the state's WAL passes the limit a few transactions in.
for i in $(seq 0 $((TXNS - 1))); do
  psql_on A -c "insert into t select g, repeat(md5(g::text), 32)
                from generate_series($((i * ROWS + 1)), $(((i + 1) * ROWS))) g" >/dev/null
done
wait_for "a state commit failing" 60 grep -q '"msg":"cannot commit the state' "$WORK/tandem.log"
check "the reader went back to the last commit" \
  grep -q 'the state commit failed: reading again from the last saved transaction' "$WORK/tandem.log"
check "tandem keeps running while the disk is full" kill -0 "$TANDEM_PID"
check "B does not have everything yet" \
  test "$(psql_on B -c "select count(*) from t")" -lt $((TXNS * ROWS))
# Nothing past the failed commits is acknowledged: the slot holds the WAL.
retaining() { curl -s "http://127.0.0.1:$HTTP_PORT/healthz" | grep -q slot_retention; }
check "healthz reports the slot's retention" wait_for "slot_retention" 60 retaining
check "the retention warning names the slot and the limit" \
  grep -q '"msg":"replication slot retains WAL past the limit.*"slot":"tandem_a".*"limit_bytes":"262144"' "$WORK/tandem.log"
retained=$(curl -fsS "http://127.0.0.1:$HTTP_PORT/metrics" | sed -n 's/^tandem_pg_slot_retained_bytes{endpoint="A"} //p')
check "retained bytes exported (${retained:-none})" awk -v n="${retained:-0}" 'BEGIN { exit !(n > 262144) }'

# Room again (the soft limit lifted; the hard one never was set).
prlimit --pid "$TANDEM_PID" --fsize=unlimited
b_complete() { [ "$(psql_on B -c "select count(*) from t")" = $((TXNS * ROWS)) ]; }
wait_for "every row on B" 180 b_complete
expect_eq "B equals A" "$(table_md5 A t 'id, v')" "$(table_md5 B t 'id, v')"
expect_eq "no row applied twice" 0 "$(psql_on B -c "select count(*) from t where applied <> 1")"
released() { ! retaining; }
check "the retention clears once tandem caught up" wait_for "slot_retention cleared" 60 released
expect_eq "each source transaction journaled once" 0 \
  "$(sq "select count(*) from (select source_xid from journal_txn where commit_seq is not null
                               group by source_xid having count(*) > 1)")"
kill -TERM "$TANDEM_PID"
set +e; wait "$TANDEM_PID"; rc=$?; set -e
expect_eq "clean stop" 0 $rc
finish
