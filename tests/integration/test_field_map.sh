#!/usr/bin/env bash
# Field map (issue 4): columns renamed by the mapping, keys named
# differently on each side, unmapped columns left alone (defaults on
# insert), both directions; apply_as_replica runs without firing triggers.
source "$(dirname "$0")/lib.sh"
pg_start A
pg_start B
psql_on A -c "create table people (id bigint primary key, name text, note text default 'a-only');
              alter table people replica identity full"
psql_on B -c "create table contacts (contact_id bigint primary key, full_name text,
                                     origin text default 'b-default');
              create table audit (n int);
              create function audit_it() returns trigger language plpgsql as \$\$
              begin insert into audit values (1); return new; end \$\$;
              create trigger audit_it after insert on contacts for each row execute function audit_it();
              alter table contacts replica identity full"
cat >"$WORK/cfg.json" <<JSON
{ "name": "fieldmap",
  "state": { "path": "$WORK/state.db" },
  "http": { "listen": "" },
  "endpoints": {
    "A": { "kind": "postgres", "conninfo": "$(conninfo_of A)",
           "publication": "pa", "slot": "sa", "origin": "oa" },
    "B": { "kind": "postgres", "conninfo": "$(conninfo_of B)",
           "publication": "pb", "slot": "sb", "origin": "ob", "apply_as_replica": \${AS_REPLICA} } },
  "mappings": [ { "name": "people",
    "a": { "endpoint": "A", "table": "people", "key": ["id"] },
    "b": { "endpoint": "B", "table": "public.contacts", "key": ["contact_id"] },
    "fields": { "id": "contact_id", "name": "full_name" },
    "direction": "both" } ] }
JSON
sed -i 's/\${AS_REPLICA}/false/' "$WORK/cfg.json"
start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
psql_on A -c "insert into people (id, name) values (1, 'Ada'), (2, 'Alan')"
wait_for "rows on B" 20 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from contacts') = 2 ]"
expect_eq "renamed columns carry the values" "1|Ada|b-default" "$(psql_on B -c 'select contact_id, full_name, origin from contacts where contact_id = 1')"
expect_eq "peer triggers fire for applied rows" 2 "$(psql_on B -c 'select count(*) from audit')"
# The unmapped column is named once per relation description, not per row.
expect_eq "one warning for the unmapped column" 1 \
  "$(grep -c '"msg":"column not in the mapping.s fields: ignored".*"table":"people","column":"note"' "$WORK/tandem.log")"
psql_on B -c "update contacts set full_name = 'Alan M. Turing', origin = 'edited on b' where contact_id = 2"
psql_on B -c "insert into contacts (contact_id, full_name) values (3, 'Grace')"
wait_for "B's rows on A" 20 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c 'select count(*) from people') = 3 ]"
wait_for "B's update on A" 20 bash -c "[ \"\$(psql -X -At -h 127.0.0.1 -p $A_PORT -U postgres -d postgres -c 'select name from people where id = 2')\" = 'Alan M. Turing' ]"
expect_eq "unmapped column on A keeps its default" "3|Grace|a-only" "$(psql_on A -c 'select id, name, note from people where id = 3')"
expect_eq "unmapped column on B not overwritten" "edited on b" "$(psql_on B -c 'select origin from contacts where contact_id = 2')"
psql_on A -c "delete from people where id = 1"
wait_for "delete reaches B" 20 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from contacts where contact_id = 1') = 0 ]"
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true

# apply_as_replica: session_replication_role = replica skips ordinary triggers.
sed -i 's/"apply_as_replica": false/"apply_as_replica": true/' "$WORK/cfg.json"
start_tandem "$WORK/cfg.json" "$WORK/tandem2.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem2.log"
psql_on A -c "insert into people (id, name) values (10, 'replica-mode')"
wait_for "row on B" 20 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from contacts where contact_id = 10') = 1 ]"
expect_eq "apply_as_replica does not fire ordinary triggers" 3 "$(psql_on B -c 'select count(*) from audit')"
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true

# A fresh state file with the old origins: their progress counts another
# journal and must not make tandem skip the new one's changes.
rm -f "$WORK"/state.db*
start_tandem "$WORK/cfg.json" "$WORK/tandem3.log"
wait_for "tandem ready" 30 grep -q '"msg":"ready' "$WORK/tandem3.log"
psql_on A -c "insert into people (id, name) values (20, 'after a new state')"
wait_for "row on B with a new state" 20 bash -c "[ \$(psql -X -At -h 127.0.0.1 -p $B_PORT -U postgres -d postgres -c 'select count(*) from contacts where contact_id = 20') = 1 ]"
expect_eq "a new state applies its own journal despite old origin progress" 1 "$(psql_on B -c 'select count(*) from contacts where contact_id = 20')"
check "foreign origin progress reported" grep -q 'origin progress is ahead' "$WORK/tandem3.log"
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true
finish
