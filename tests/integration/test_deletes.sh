#!/usr/bin/env bash
# The deletes policy toward a PostgreSQL peer (SPEC §4): "ignore" keeps the
# peer's rows, {"soft": "field"} sets the flag instead of deleting, for row
# deletes and for a truncate alike; "propagate" deletes.
source "$(dirname "$0")/lib.sh"
pg_start A
pg_start B
for db in A B; do
  for t in keep flag gone; do
    psql_on $db -c "create table $t (id bigint primary key, v text, archived boolean not null default false);
                    alter table $t replica identity full"
  done
done
pg_pg_config "$WORK/cfg.json" a_to_b keep:id,v flag:id,v gone:id,v
python3 - "$WORK/cfg.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
for m in c["mappings"]:
    m["deletes"] = {"keep": "ignore", "flag": {"soft": "archived"}, "gone": "propagate"}[m["name"]]
json.dump(c, open(p, "w"), indent=1)
PY
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
for t in keep flag gone; do psql_on A -c "insert into $t select g, 'v' || g from generate_series(1, 10) g"; done
all_there() { for t in keep flag gone; do [ "$(psql_on B -c "select count(*) from $t")" = 10 ] || return 1; done; }
wait_for "rows on B" 30 all_there
for t in keep flag gone; do psql_on A -c "delete from $t where id <= 3"; done
psql_on A -c "insert into gone values (100, 'barrier')"
wait_for "the propagate mapping caught up" 30 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from gone where id = 100') = 1 ]"
wait_for "flags set" 30 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from flag where archived') = 3 ]"
expect_eq "propagate: deleted" 0 "$(psql_on B -c 'select count(*) from gone where id <= 3')"
expect_eq "ignore: the peer keeps its rows" 10 "$(psql_on B -c 'select count(*) from keep')"
expect_eq "soft: rows stay, flagged" "10|1,2,3" "$(psql_on B -c "select count(*) || '|' || string_agg(id::text, ',' order by id) filter (where archived) from flag")"
for t in keep flag; do psql_on A -c "truncate $t"; done
psql_on A -c "insert into gone values (101, 'barrier 2')"
wait_for "the propagate mapping caught up again" 30 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from gone where id = 101') = 1 ]"
wait_for "truncate flags every row" 30 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from flag where archived') = 10 ]"
expect_eq "soft: a truncate flags every row" 10 "$(psql_on B -c 'select count(*) from flag where archived')"
expect_eq "ignore: a truncate keeps every row" 10 "$(psql_on B -c 'select count(*) from keep')"
expect_eq "nothing dead-lettered" 0 "$(sq "select count(*) from dlq")"
kill -TERM $TANDEM_PID
set +e; wait $TANDEM_PID; rc=$?; set -e
expect_eq "clean stop" 0 $rc
finish
