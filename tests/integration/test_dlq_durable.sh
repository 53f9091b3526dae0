#!/usr/bin/env bash
# A change the target rejects is dead-lettered and the rest of its
# transaction committed on B without it. That commit moves B's origin
# progress past the change, so the DLQ entry must be on disk before it:
# after a crash between the two, the change would be gone without a trace
# (G8). Here every time B shows a transaction's good row, tandem is
# frozen (SIGSTOP) and the state file must already hold the bad row's DLQ
# entry.
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-30}

pg_start A
pg_start B
psql_on A -c "create table t (id bigint primary key, v text); alter table t replica identity full"
psql_on B -c "create table t (id bigint primary key, v text check (v <> 'bad'))"
pg_pg_config "$WORK/cfg.json" a_to_b t:id,v
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"

late=0
for i in $(seq 1 "$ROUNDS"); do
  good=$((2 * i - 1)); bad=$((2 * i))
  psql_on A -c "begin; insert into t values ($good, 'good'), ($bad, 'bad'); commit" >/dev/null
  # From one session, every 2 ms: the moment B's commit is visible.
  PGOPTIONS="-c statement_timeout=30s" psql_on B -c "do \$\$ begin
      while not exists (select 1 from t where id = $good) loop perform pg_sleep(0.002); end loop;
    end \$\$" >/dev/null
  # Frozen at once: the state file shows what it held when B committed.
  kill -STOP "$TANDEM_PID"
  n=$(sq "select count(*) from dlq where key = '[\"$bad\"]'")
  kill -CONT "$TANDEM_PID"
  [ "$n" = 1 ] || late=$((late + 1))
done
expect_eq "every DLQ entry was saved before B committed the rest of its transaction" 0 "$late"
expect_eq "the bad rows are dead-lettered, nothing else" "$ROUNDS" \
  "$(sq "select count(*) from dlq where status = 'open'")"
expect_eq "B has every good row and no bad one" "$ROUNDS|0" \
  "$(psql_on B -c "select count(*) filter (where v = 'good') || '|' || count(*) filter (where v = 'bad') from t")"
finish
