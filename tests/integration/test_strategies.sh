#!/usr/bin/env bash
# Conflict strategies on a PostgreSQL pair: source_priority decides whole
# records for its side; manual writes nothing until an operator resolves.
source "$(dirname "$0")/lib.sh"
pg_start A
pg_start B
for db in A B; do
  psql_on $db -c "create table p (id bigint primary key, v text); alter table p replica identity full;
                  create table m (id bigint primary key, v text); alter table m replica identity full;"
done
pg_pg_config "$WORK/cfg.json" both p:id,v m:id,v
sed -i '0,/"strategy": "last_write_wins"/s//"strategy": "source_priority", "priority": "a"/' "$WORK/cfg.json"
sed -i '0,/"strategy": "last_write_wins"/s//"strategy": "manual"/' "$WORK/cfg.json"
check "config has both strategies" bash -c "grep -q source_priority '$WORK/cfg.json' && grep -q manual '$WORK/cfg.json'"
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
psql_on A -c "insert into p values (1, 'base'), (2, 'base'); insert into m values (1, 'base')"
wait_for "base rows on B" 20 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from p') = 2 ] && [ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from m') = 1 ]"
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true

# Both sides change the same rows while tandem is stopped; B writes last.
psql_on A -c "update p set v = 'from A' where id = 1; update m set v = 'from A'"
psql_on B -c "update p set v = 'from B' where id = 1; update p set v = 'B only' where id = 2; update m set v = 'from B'"
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
wait_for "priority side wins on B" 20 bash -c "[ \"\$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select v from p where id = 1')\" = 'from A' ]"
expect_eq "source_priority: side a wins although b wrote last" "from A|from A" "$(psql_on A -c 'select v from p where id = 1')|$(psql_on B -c 'select v from p where id = 1')"
wait_for "one-sided change on B reaches A" 20 bash -c "[ \"\$(psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c 'select v from p where id = 2')\" = 'B only' ]"
expect_eq "source_priority: a change on one side only still flows" "B only" "$(psql_on A -c 'select v from p where id = 2')"
sleep 2
expect_eq "manual: each side keeps its own value" "from A|from B" "$(psql_on A -c 'select v from m')|$(psql_on B -c 'select v from m')"
"$TANDEM" conflicts list --open -c "$WORK/cfg.json" >"$WORK/open.out"
check "manual conflict listed as open" grep -q "manual.open" "$WORK/open.out"
expect_eq "manual conflict parks the key" 1 "$(sq "select count(*) from parked where mapping = 'm' and reason = 'conflict'")"
cid=$(grep "manual" "$WORK/open.out" | head -1 | cut -f1)
"$TANDEM" conflicts resolve "$cid" --take b -c "$WORK/cfg.json" >/dev/null
wait_for "operator's decision on both sides" 20 bash -c "[ \"\$(psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c 'select v from m')\" = 'from B' ]"
expect_eq "manual: the operator's choice lands on both sides" "from B|from B" "$(psql_on A -c 'select v from m')|$(psql_on B -c 'select v from m')"
expect_eq "key unparked" 0 "$(sq "select count(*) from parked where mapping = 'm'")"
check "resolved conflict is decided" bash -c "'$TANDEM' conflicts show $cid -c '$WORK/cfg.json' | grep -q 'operator took b'"
set +e; "$TANDEM" conflicts resolve "$cid" --take a -c "$WORK/cfg.json" >/dev/null 2>&1; rc=$?; set -e
expect_eq "resolving a decided conflict again exits 1" 1 $rc
set +e; "$TANDEM" conflicts resolve "$cid" -c "$WORK/cfg.json" >/dev/null 2>&1; rc=$?; set -e
expect_eq "resolve without --take exits 2" 2 $rc
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
finish
