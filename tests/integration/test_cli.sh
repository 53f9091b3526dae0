#!/usr/bin/env bash
# The command line without any server: usage, exit codes, config errors
# (each names its JSON path, exit 2, no network), state errors.
source "$(dirname "$0")/lib.sh"

out=$("$TANDEM" version); expect_eq "version prints" "tandem" "${out%% *}"
"$TANDEM" --help >"$WORK/help.txt"; check "--help exits 0" test $? -eq 0
for c in run check setup status teardown version; do
  check "--help lists $c" grep -q "^  $c " "$WORK/help.txt"
done
set +e
"$TANDEM" frobnicate >/dev/null 2>&1; expect_eq "unknown command exits 2" 2 $?
"$TANDEM" check >/dev/null 2>&1; expect_eq "check without -c exits 2" 2 $?
"$TANDEM" check -c >/dev/null 2>&1; expect_eq "-c without value exits 2" 2 $?
"$TANDEM" status --bogus -c x >/dev/null 2>&1; expect_eq "unknown option exits 2" 2 $?
"$TANDEM" run --help >/dev/null 2>&1; expect_eq "run --help exits 0" 0 $?
set -e

# A good config with endpoints on a port nobody listens on.
good() {
  cat <<JSON
{ "name": "cli-test",
  "state": { "path": "$WORK/state.db" },
  "http": { "listen": "" },
  "endpoints": {
    "app": { "kind": "postgres", "conninfo": "host=127.0.0.1 port=1 dbname=x user=u",
             "password": "\${CLI_TEST_PW}",
             "publication": "p", "slot": "s", "origin": "o" },
    "peer": { "kind": "postgres", "conninfo": "host=127.0.0.1 port=1 dbname=y user=u",
              "publication": "p2", "slot": "s2", "origin": "o2" } },
  "mappings": [ { "name": "m",
    "a": { "endpoint": "app", "table": "public.t", "key": ["id"] },
    "b": { "endpoint": "peer", "table": "public.t", "key": ["id"] },
    "fields": { "id": "id", "v": "v" }, "direction": "both",
    "conflict": { "strategy": "last_write_wins" } } ] }
JSON
}
export CLI_TEST_PW=sekrit-password-123
good >"$WORK/good.json"

# expect_config_error NAME JQ-LIKE-SED EXPECTED-SUBSTRING
bad_case() {
  local name=$1 expr=$2 want=$3 rc
  good | sed "$expr" >"$WORK/bad_$name.json"
  set +e
  "$TANDEM" check -c "$WORK/bad_$name.json" >"$WORK/bad_$name.out" 2>&1; rc=$?
  set -e
  expect_eq "bad config $name exits 2" 2 $rc
  check "bad config $name names [$want]" grep -qF -- "$want" "$WORK/bad_$name.out"
  check "bad config $name hides the secret" bash -c "! grep -q sekrit '$WORK/bad_$name.out'"
}

bad_case malformed 's/"mappings"/"mappings" ::/' "line"
bad_case strategy 's/last_write_wins/lww/' '$.mappings[0].conflict.strategy: unknown value "lww"'
bad_case unknown_key 's/"conninfo": "host=127.0.0.1 port=1 dbname=x/"conninfoo": "host=127.0.0.1 port=1 dbname=x/' '$.endpoints.app.conninfoo: unknown key'
bad_case wrong_type 's/"direction": "both"/"direction": 5/' '$.mappings[0].direction'
bad_case missing_endpoint 's/"endpoint": "peer"/"endpoint": "nope"/' '$.mappings[0].b.endpoint'
bad_case empty_key 's/"key": \["id"\] },$/"key": [] },/' '$.mappings[0].a.key'
bad_case missing_env 's/CLI_TEST_PW/CLI_TEST_NOT_SET/' 'CLI_TEST_NOT_SET'
bad_case missing_file "s#\${CLI_TEST_PW}#\${file:$WORK/no-such-file}#" 'no-such-file'
good | sed 's/"page_size": 1/"page_size": 0/; s/"name": "m",/"name": "m", "dependency_wait_s": -5,/' >"$WORK/bad_range.json"
set +e; "$TANDEM" check -c "$WORK/bad_range.json" >"$WORK/bad_range.out" 2>&1; rc=$?; set -e
expect_eq "out-of-range number exits 2" 2 $rc
check "out-of-range names the path" grep -qF '$.mappings[0].dependency_wait_s' "$WORK/bad_range.out"
# Two mappings with one name.
good | sed 's/"mappings": \[ { "name": "m",/"mappings": [ { "name": "m", "direction": "a_to_b", "a": { "endpoint": "app", "table": "public.u", "key": ["id"] }, "b": { "endpoint": "peer", "table": "public.u", "key": ["id"] }, "fields": { "id": "id" } }, { "name": "m",/' >"$WORK/bad_dup.json"
set +e; "$TANDEM" check -c "$WORK/bad_dup.json" >"$WORK/bad_dup.out" 2>&1; rc=$?; set -e
expect_eq "duplicate mapping names exit 2" 2 $rc
check "duplicate mapping named" grep -q 'duplicate' "$WORK/bad_dup.out"

# A good config whose endpoints cannot be reached: check exits 1, naming them.
set +e; "$TANDEM" check -c "$WORK/good.json" >"$WORK/good.out" 2>&1; rc=$?; set -e
expect_eq "check on unreachable endpoints exits 1" 1 $rc
check "check names the unreachable endpoint" grep -q "FAIL app" "$WORK/good.out"
check "check output hides the password" bash -c "! grep -q sekrit '$WORK/good.out'"

# State problems.
good | sed "s#$WORK/state.db#$WORK/missing-dir/state.db#" >"$WORK/nodir.json"
set +e; "$TANDEM" run -c "$WORK/nodir.json" >"$WORK/nodir.out" 2>&1; rc=$?; set -e
expect_eq "state in a missing directory: run exits 1" 1 $rc
check "missing directory named" grep -q "missing-dir" "$WORK/nodir.out"
echo "this is not sqlite, just text long enough to be a header of a db file......................................................" >"$WORK/state.db"
set +e; "$TANDEM" run -c "$WORK/good.json" >"$WORK/notdb.out" 2>&1; rc=$?; set -e
expect_eq "state that is not SQLite: run exits 1" 1 $rc
check "not-SQLite state named" grep -q "state.db" "$WORK/notdb.out"
rm -f "$WORK/state.db"

# run keeps retrying unreachable endpoints, refuses a second instance, and
# stops cleanly on SIGTERM.
start_tandem "$WORK/good.json" "$WORK/run1.log"
pid1=$TANDEM_PID
wait_for "first daemon logs its start" 10 grep -q '"msg":"started"' "$WORK/run1.log"
sleep 1
check "first daemon still running with endpoints down" kill -0 $pid1
check "retry attempts are logged" grep -q 'retrying' "$WORK/run1.log"
check "logs are JSON lines" bash -c "head -1 '$WORK/run1.log' | grep -q '^{\"ts\":\"'"
check "password never logged" bash -c "! grep -q sekrit '$WORK/run1.log'"
set +e; timeout 10 "$TANDEM" run -c "$WORK/good.json" >"$WORK/run2.out" 2>&1; rc=$?; set -e
expect_eq "second run on the same state exits 1" 1 $rc
check "second run names the state file" grep -q "state.db" "$WORK/run2.out"
kill -TERM $pid1
set +e; wait $pid1; rc=$?; set -e
expect_eq "SIGTERM exits 0" 0 $rc
check "stop logged" grep -q '"msg":"stopped"' "$WORK/run1.log"
check "no leaked handles" bash -c "! grep -q 'open handles' '$WORK/run1.log'"
# kill -9 never blocks a restart.
start_tandem "$WORK/good.json" "$WORK/run3.log"
wait_for "daemon started" 10 grep -q '"msg":"started"' "$WORK/run3.log"
kill -9 $TANDEM_PID; wait $TANDEM_PID 2>/dev/null || true
start_tandem "$WORK/good.json" "$WORK/run4.log"
wait_for "restart after kill -9" 10 grep -q '"msg":"started"' "$WORK/run4.log"
check "restart after kill -9 runs" kill -0 $TANDEM_PID
kill -TERM $TANDEM_PID; wait $TANDEM_PID || true

finish
