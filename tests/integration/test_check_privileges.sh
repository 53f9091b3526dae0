#!/usr/bin/env bash
# check and run with least-privilege roles (SPEC §5): the source's role
# reads (SELECT, REPLICATION), the target's role writes (INSERT, UPDATE,
# DELETE and the replication origin functions). check names each missing
# privilege and exits 3; a source-only role needs no write rights and no
# origin of its own.
source "$(dirname "$0")/lib.sh"
pg_pair_table "id bigint primary key, v text"
pg_pg_config "$WORK/admin.json" a_to_b t
"$TANDEM" setup -c "$WORK/admin.json" >/dev/null
# What the roles cannot create themselves exists now; A's origin is dropped
# again: a source-only endpoint must do without it.
psql_on A -c "select pg_replication_origin_drop('tandem_a')"
psql_on A -c "create role reader login replication; grant select on t to reader"
psql_on B -c "create role writer login; grant select, insert on t to writer;
  grant execute on function pg_replication_origin_session_setup(text),
    pg_replication_origin_xact_setup(pg_lsn, timestamptz),
    pg_replication_origin_progress(text, boolean) to writer"
sed -e "s/port=$A_PORT dbname=postgres user=postgres/port=$A_PORT dbname=postgres user=reader/" \
    -e "s/port=$B_PORT dbname=postgres user=postgres/port=$B_PORT dbname=postgres user=writer/" \
    "$WORK/admin.json" >"$WORK/cfg.json"
check "config uses the two roles" grep -q "user=reader" "$WORK/cfg.json"

set +e; "$TANDEM" check -c "$WORK/cfg.json" >"$WORK/check1.out" 2>&1; rc=$?; set -e
expect_eq "check exits 3 while the target lacks UPDATE and DELETE" 3 "$rc"
check "check names exactly the missing privileges" \
  grep -q "FAIL B: table public.t: no UPDATE, DELETE privilege (tandem writes here): GRANT UPDATE, DELETE" "$WORK/check1.out"
expect_eq "the source-only table needs no write privilege" 0 "$(grep -c 'FAIL A: table' "$WORK/check1.out")"
expect_eq "the source-only endpoint needs no origin functions" 0 "$(grep -c 'A: replication origin functions' "$WORK/check1.out")"

expect_eq "check names the origin functions the target's role lacks" 1 \
  "$(grep -c 'FAIL B: replication origin functions: missing: GRANT EXECUTE' "$WORK/check1.out")"
psql_on B -c "grant update, delete on t to writer;
  grant execute on function pg_replication_origin_oid(text),
    pg_replication_origin_advance(text, pg_lsn) to writer"
set +e; "$TANDEM" check -c "$WORK/cfg.json" >"$WORK/check2.out" 2>&1; rc=$?; set -e
expect_eq "check passes once every privilege is granted" 0 "$rc"
check "no FAIL line left" bash -c "! grep -q '^FAIL' '$WORK/check2.out'"

start_tandem "$WORK/cfg.json" "$WORK/tandem.log"
wait_for "tandem ready with least-privilege roles" 30 grep -q '"msg":"ready' "$WORK/tandem.log"
check "A's missing origin is reported, not fatal" grep -q '"msg":"no replication origin on this source-only endpoint' "$WORK/tandem.log"
psql_on A -c "insert into t values (1, 'one')"
psql_on A -c "update t set v = 'uno' where id = 1"
arrived() { [ "$(psql_on B -c 'select v from t where id = 1')" = uno ]; }
check "changes applied by the writer role" wait_for "row on B" 30 arrived
finish
