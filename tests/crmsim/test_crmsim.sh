#!/usr/bin/env bash
# test_crmsim.sh: drives crmsim over HTTP with curl (no jq, no python) and
# checks records, revisions, both feeds, every fault mode, limits, garbage
# input and --state. Usage: test_crmsim.sh path/to/crmsim
set -u

CRMSIM=${1:?usage: test_crmsim.sh path/to/crmsim}
WORK=$(mktemp -d /tmp/crmsim-test.XXXXXX)
PIDS=()
PASSES=0
FAILS=0
JSON='Content-Type: application/json'

cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill -9 "$p" 2>/dev/null
  done
  if [ "$FAILS" -ne 0 ]; then
    for f in "$WORK"/*.err; do
      [ -s "$f" ] && { echo "# --- tail $f"; tail -n 20 "$f"; }
    done
    echo "# work dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

ok() { PASSES=$((PASSES + 1)); echo "ok - $1"; }
fail() { FAILS=$((FAILS + 1)); echo "FAIL - $1"; }
# check NAME WANT GOT: equality, printing both values on failure.
check() {
  if [ "$2" = "$3" ]; then ok "$1"; else fail "$1 (want '$2', got '$3')"; fi
}
# has NAME HAYSTACK NEEDLE / hasnt NAME HAYSTACK NEEDLE: substring checks.
has() {
  case "$2" in *"$3"*) ok "$1" ;; *) fail "$1 (no '$3' in '${2:0:300}')" ;; esac
}
hasnt() {
  case "$2" in *"$3"*) fail "$1 (unexpected '$3' in '${2:0:300}')" ;; *) ok "$1" ;; esac
}

# start NAME ARGS...: runs crmsim, waits for its listening line, sets BASE/PID.
start() {
  local name=$1 i line=""
  shift
  "$CRMSIM" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PID=$!
  PIDS+=("$PID")
  for i in $(seq 100); do
    line=$(head -n1 "$WORK/$name.out" 2>/dev/null)
    [ -n "$line" ] && break
    sleep 0.05
  done
  BASE="http://$(printf '%s' "$line" | sed -n 's/^{"listening":"\(.*\)"}$/\1/p')"
}

# stop PID: SIGTERM, then the exit status in STOP_RC.
stop() {
  kill -TERM "$1" 2>/dev/null
  wait "$1"
  STOP_RC=$?
}

# req METHOD PATH [curl args...]: sets CODE, BODY, HDRS (lower-case names).
req() {
  local m=$1 p=$2
  shift 2
  CODE=$(curl -s -X "$m" -o "$WORK/body" -D "$WORK/hdrs" -w '%{http_code}' \
    "$@" "$BASE$p")
  CURL_RC=$?
  BODY=$(cat "$WORK/body" 2>/dev/null)
  HDRS=$(tr -d '\r' <"$WORK/hdrs" 2>/dev/null | tr 'A-Z' 'a-z')
}
# jw METHOD PATH BODY [curl args...]: a JSON write.
jw() {
  local m=$1 p=$2 b=$3
  shift 3
  req "$m" "$p" -H "$JSON" --data-binary "$b" "$@"
}

# val KEY JSON: the first value of "KEY" (quotes stripped); vals: all of them.
val() { vals "$1" "$2" | head -n1; }
vals() {
  printf '%s' "$2" | grep -o "\"$1\":\(\"[^\"]*\"\|[^,}]*\)" |
    sed -e "s/^\"$1\"://" -e 's/^"//' -e 's/"$//'
}
count() { printf '%s' "$2" | grep -o "$1" | wc -l | tr -d ' '; }
# sorted_strictly: stdin lines strictly increasing (byte order).
sorted_strictly() {
  local prev="" l
  while IFS= read -r l; do
    if [ -n "$prev" ] && [[ ! "$prev" < "$l" ]]; then return 1; fi
    prev=$l
  done
  return 0
}
sorted() {
  local prev="" l
  while IFS= read -r l; do
    if [ -n "$prev" ] && [[ "$l" < "$prev" ]]; then return 1; fi
    prev=$l
  done
  return 0
}
faults() { req POST /_admin/faults -H "$JSON" --data-binary "$1"; }

# ------------------------------------------------------------------ startup
start main --listen 127.0.0.1:0 --seed 7
MAIN=$PID
has "prints its listening line" "$(cat "$WORK/main.out")" '{"listening":"127.0.0.1:'
case "$BASE" in http://127.0.0.1:0 | http://) fail "real port printed ($BASE)" ;; *) ok "real port printed" ;; esac
req GET /
check "GET / answers" 200 "$CODE"
has "GET / lists resources" "$BODY" '"resources":["customers","accounts","invoices"]'

# ------------------------------------------------------------------- create
jw POST /customers '{"name":"Ann","email":"ann@example.com","balance":12.5}'
check "POST creates (201)" 201 "$CODE"
check "POST assigns integer id 1" 1 "$(val id "$BODY")"
REV1=$(val _rev "$BODY")
has "ETag carries _rev" "$HDRS" "etag: \"$REV1\""
has "Location names the record" "$HDRS" "location: /customers/1"
TS1=$(val updated_at "$BODY")
if [[ "$TS1" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$ ]]; then
  ok "updated_at is RFC 3339 with milliseconds ($TS1)"
else
  fail "updated_at is RFC 3339 with milliseconds ($TS1)"
fi
has "_rev is N-hash" "$REV1" "1-"
check "new record is not deleted" false "$(val deleted "$BODY")"
has "reals print shortest" "$BODY" '"balance":12.5,'
jw POST /customers '{"name":"Bob","balance":0.1}'
check "second POST gets id 2" 2 "$(val id "$BODY")"
has "0.1 stays 0.1" "$BODY" '"balance":0.1,'
jw POST /customers '{"id":"c-9","name":"Cy"}'
check "POST honours a free body id" "201 c-9" "$CODE $(val id "$BODY")"
jw POST /customers '{"id":"c-9","name":"again"}'
check "POST with a taken id is 409" 409 "$CODE"
jw POST /customers '{"id":2}'
check "POST with a taken integer id is 409" 409 "$CODE"
jw POST /customers '{"id":50,"name":"Fifty"}'
check "POST honours integer body id" "201 50" "$CODE $(val id "$BODY")"
jw POST /customers '{"name":"next"}'
check "server ids continue after a client id" 51 "$(val id "$BODY")"

# --------------------------------------------------------------------- read
req GET /customers/1
check "GET by id" 200 "$CODE"
check "GET returns the record" Ann "$(val name "$BODY")"
has "GET sends ETag" "$HDRS" "etag: \"$REV1\""
req GET /customers/999
check "GET unknown id is 404" 404 "$CODE"
has "errors are JSON" "$BODY" '"error":"not_found"'
req GET /customers/c-9/
check "a trailing slash is tolerated" 200 "$CODE"

# ---------------------------------------------------------------------- put
jw PUT /customers/ext-7 '{"name":"Ext"}'
check "PUT creates with the client id (201)" "201 ext-7" "$CODE $(val id "$BODY")"
jw PUT /customers/ext-7 '{"name":"Ext2"}'
check "PUT replaces (200)" "200 Ext2" "$CODE $(val name "$BODY")"
has "PUT bumps the revision" "$(val _rev "$BODY")" "2-"
jw PUT /customers/77 '{"name":"Seven"}'
check "PUT with a numeric id stores an integer" 77 "$(val id "$BODY")"
jw PUT /customers/ext-7 '{"id":"other","name":"x"}'
check "PUT with a mismatched body id is 400" 400 "$CODE"
jw PUT /customers/a%2Fb '{"name":"slash"}'
check "encoded ids are decoded" "201 a/b" "$CODE $(val id "$BODY")"
req GET /customers/a%2Fb
check "encoded id reads back" 200 "$CODE"

# -------------------------------------------------------------------- patch
jw PATCH /customers/1 '{"email":"ann@new.example","vip":null}'
check "PATCH merges (200)" 200 "$CODE"
check "PATCH keeps other fields" Ann "$(val name "$BODY")"
check "PATCH sets the field" ann@new.example "$(val email "$BODY")"
has "PATCH stores null as null" "$BODY" '"vip":null'
REV2=$(val _rev "$BODY")
has "PATCH bumps the revision" "$REV2" "2-"
jw PATCH /customers/999 '{"x":1}'
check "PATCH unknown id is 404" 404 "$CODE"
jw PATCH /customers/1 '{"updated_at":"2000-01-01T00:00:00.000Z","_rev":null}'
if [[ "$(val updated_at "$BODY")" > "2026" ]]; then ok "updated_at is server-owned"; else fail "updated_at is server-owned ($BODY)"; fi
REV3=$(val _rev "$BODY")

# ------------------------------------------------------- revisions / ETags
jw PATCH /customers/1 '{"x":1}' -H "If-Match: \"$REV1\""
check "If-Match stale on PATCH is 412" 412 "$CODE"
jw PATCH /customers/1 '{"x":1}' -H "If-Match: \"$REV3\""
check "If-Match current on PATCH is 200" 200 "$CODE"
REV4=$(val _rev "$BODY")
jw PUT /customers/1 '{"name":"Ann"}' -H "If-Match: \"$REV3\""
check "If-Match stale on PUT is 412" 412 "$CODE"
jw PUT /customers/1 '{"name":"Ann"}' -H "If-Match: W/\"$REV4\", \"zzz\""
check "If-Match list with weak tag matches" 200 "$CODE"
REV5=$(val _rev "$BODY")
jw PUT /customers/1 "{\"name\":\"Ann\",\"_rev\":\"$REV4\"}"
check "stale _rev in a PUT body is 409" 409 "$CODE"
jw PUT /customers/1 "{\"name\":\"Ann B\",\"_rev\":\"$REV5\"}"
check "current _rev in a PUT body is 200" "200 Ann B" "$CODE $(val name "$BODY")"
REV6=$(val _rev "$BODY")
jw PUT /customers/nope '{"_rev":"1-abc"}'
check "_rev on a missing record is 409" 409 "$CODE"
jw PUT /customers/nope2 '{"a":1}' -H 'If-Match: *'
check "If-Match * on a missing record is 412" 412 "$CODE"
jw PATCH /customers/1 '{"y":1}' -H 'If-Match: *'
check "If-Match * on a live record is 200" 200 "$CODE"
REV7=$(val _rev "$BODY")
jw PATCH "/customers/1?rev=$REV6" '{"z":1}'
check "stale ?rev= on PATCH is 412" 412 "$CODE"

# ------------------------------------------------------------------- delete
req DELETE "/customers/2?rev=1-bogus" -H "$JSON"
check "stale ?rev= on DELETE is 412" 412 "$CODE"
req DELETE /customers/2 -H "$JSON" -H 'If-Match: "9-nope"'
check "stale If-Match on DELETE is 412" 412 "$CODE"
req GET /customers/2
REVB=$(val _rev "$BODY")
req DELETE "/customers/2?rev=$REVB" -H "$JSON"
check "DELETE answers 200 with the record" "200 true" "$CODE $(val deleted "$BODY")"
DEL_TS=$(val updated_at "$BODY")
req GET /customers/2
check "a deleted record is 404 by id" 404 "$CODE"
req DELETE /customers/2 -H "$JSON"
check "deleting twice is 404" 404 "$CODE"
jw PATCH /customers/2 '{"x":1}'
check "PATCH on a deleted record is 404" 404 "$CODE"
req GET /_admin/records/customers
has "admin dump keeps the deleted record" "$BODY" '"id":2,"name":"Bob"'
check "admin dump has every record" 8 "$(count '"_rev"' "$BODY")"
jw PUT /customers/ext-del '{"n":1}'
req DELETE /customers/ext-del -H "$JSON"
jw PUT /customers/ext-del '{"n":2}'
check "PUT revives a deleted record (201)" "201 false" "$CODE $(val deleted "$BODY")"
has "revived record continues its revisions" "$(val _rev "$BODY")" "3-"

# ----------------------------------------------------------- updated_at order
# Thirty POSTs on one connection land within a few milliseconds.
URLS=()
for i in $(seq 30); do URLS+=("$BASE/customers"); done
curl -s -H "$JSON" -d '{"name":"burst"}' "${URLS[@]}" >"$WORK/burst"
check "burst created 30 records" 30 "$(count '"name":"burst"' "$(cat "$WORK/burst")")"
if vals updated_at "$(cat "$WORK/burst")" | sorted_strictly; then
  ok "updated_at strictly increases even within a millisecond"
else
  fail "updated_at strictly increases even within a millisecond"
fi

# ------------------------------------------------------ updated_since feed
req GET "/customers?limit=1000"
ALL=$BODY
TOTAL=$(count '"_rev"' "$ALL")
check "feed without a cursor lists every record" 39 "$TOTAL"
if vals updated_at "$ALL" | sorted; then ok "feed is ordered by updated_at"; else fail "feed is ordered by updated_at"; fi
has "feed includes deleted records" "$ALL" '"id":2,"name":"Bob"'
req GET "/customers?updated_at_gte=$DEL_TS&limit=1"
check "cursor is inclusive (>=)" "$DEL_TS" "$(val updated_at "$BODY")"
ENC_TS=$(printf '%s' "$DEL_TS" | sed 's/:/%3A/g')
req GET "/customers?updated_at_gte=$ENC_TS&limit=1"
check "percent-encoded cursor works" "$DEL_TS" "$(val updated_at "$BODY")"
req GET "/customers?updated_at_gte=$(printf '%s' "$DEL_TS" | sed 's/Z$/%2B00:00/')&limit=1"
check "cursor with +00:00 offset works" "$DEL_TS" "$(val updated_at "$BODY")"
req GET "/customers?updated_at_gte=2099-01-01T00:00:00Z"
check "cursor past the end gives []" "200 []" "$CODE $BODY"
req GET "/customers?limit=2&offset=3"
check "offset pages" "$(vals _rev "$ALL" | sed -n 4,5p | tr '\n' ' ')" "$(vals _rev "$BODY" | tr '\n' ' ')"
req GET "/customers?_limit=2&_start=3&_sort=updated_at,id&_order=asc,asc"
check "json-server aliases page the same" "$(vals _rev "$ALL" | sed -n 4,5p | tr '\n' ' ')" "$(vals _rev "$BODY" | tr '\n' ' ')"
req GET "/customers?_sort=name"
check "unsupported _sort is 400" 400 "$CODE"
req GET "/customers?updated_at_gte=yesterday"
check "bad cursor is 400" 400 "$CODE"
req GET "/customers?limit=0"
check "limit=0 is 400" 400 "$CODE"
req GET "/customers?limit=5000"
check "limit above 1000 is capped" 200 "$CODE"
# Walk the feed like tandem: cursor = last updated_at, skip what was seen.
CURSOR=2000-01-01T00:00:00.000Z
SEEN=" "
PAGES=0
while [ $PAGES -lt 100 ]; do
  req GET "/customers?updated_at_gte=$CURSOR&limit=4"
  PAGES=$((PAGES + 1))
  n=0
  for r in $(vals _rev "$BODY"); do
    n=$((n + 1))
    case "$SEEN" in *" $r "*) ;; *) SEEN="$SEEN$r " ;; esac
  done
  [ "$n" -lt 4 ] && break
  CURSOR=$(vals updated_at "$BODY" | tail -n1)
done
check "walking the inclusive cursor sees every record" "$TOTAL" "$(($(printf '%s' "$SEEN" | wc -w)))"

# Coarse clock: equal updated_at values, ordered by id, paged with offset.
# Two hours ahead, floored to the hour: past every stamp so far, and shared.
req POST /_admin/clock -H "$JSON" --data-binary '{"offset_ms":7200000,"resolution_ms":3600000}'
check "clock resolution can be coarsened" 200 "$CODE"
jw PUT /customers/tie-b '{"n":1}'
jw PUT /customers/tie-a '{"n":1}'
jw PUT /customers/tie-c '{"n":1}'
TIE=$(val updated_at "$BODY")
req GET "/customers?updated_at_gte=$TIE&limit=2"
check "equal cursors order by id" "tie-a tie-b " "$(vals id "$BODY" | tr '\n' ' ')"
req GET "/customers?updated_at_gte=$TIE&limit=2&offset=2"
check "offset pages within equal cursors" "tie-c " "$(vals id "$BODY" | tr '\n' ' ')"
req POST /_admin/clock -H "$JSON" --data-binary '{"resolution_ms":1}'
jw PATCH /customers/tie-a '{"n":2}'
if [[ "$TIE" < "$(val updated_at "$BODY")" ]]; then ok "fine clock resumes strictly after"; else fail "fine clock resumes strictly after"; fi

# ------------------------------------------------------------ _changes feed
req GET "/_changes?since=0&limit=1000"
CH=$BODY
check "_changes lists each record once" 42 "$(count '"seq"' "$CH")"
if [[ "$(val seq "$CH")" =~ ^[0-9]+-g[0-9a-f]{6}$ ]]; then ok "seq is an opaque string"; else fail "seq is an opaque string ($(val seq "$CH"))"; fi
hasnt "no docs without include_docs" "$CH" '"doc"'
has "deleted changes are flagged" "$CH" '"id":"2","resource":"customers","deleted":true'
has "_changes carries the revision" "$CH" '"changes":[{"rev":'
check "_changes is ordered by sequence" "$(vals seq "$CH" | sed 's/-.*//' | sort -n | tr '\n' ' ')" "$(vals seq "$CH" | sed 's/-.*//' | tr '\n' ' ')"
check "caught-up last_seq is the last change" "$(vals seq "$CH" | tail -n1)" "$(val last_seq "$CH")"
req GET "/_changes?since=0&limit=5&include_docs=true"
check "include_docs adds docs" 5 "$(count '"doc":{' "$BODY")"
LAST=$(val last_seq "$BODY")
check "full page last_seq is its last seq" "$(vals seq "$BODY" | tail -n1)" "$LAST"
req GET "/_changes?since=$LAST&limit=1000"
check "since continues after last_seq" 37 "$(count '"seq"' "$BODY")"
SEQS=" "
S=0
for i in $(seq 50); do
  req GET "/customers/_changes?since=$S&limit=7"
  for s in $(vals seq "$BODY"); do SEQS="$SEQS$s "; done
  n=$(count '"seq"' "$BODY")
  S=$(val last_seq "$BODY")
  [ "$n" -lt 7 ] && break
done
check "paging _changes by last_seq sees every change" 42 "$(($(printf '%s' "$SEQS" | wc -w)))"
jw POST /accounts '{"name":"Acme"}'
check "another resource has its own ids" "201 1" "$CODE $(val id "$BODY")"
req GET "/customers/_changes?since=$S"
hasnt "per-resource _changes excludes others" "$BODY" '"resource":"accounts"'
req GET "/_changes?since=$S"
has "global _changes includes every resource" "$BODY" '"resource":"accounts"'
req GET "/_changes?since=now"
check "since=now is empty" '[]' "$(printf '%s' "$BODY" | sed -n 's/^{"results":\(\[\]\).*/\1/p')"
req GET "/_changes?since=banana"
check "bad since is 400" 400 "$CODE"
req GET "/_changes?feed=continuous"
check "unsupported feed mode is 400" 400 "$CODE"

# --------------------------------------------------------- limits / errors
head -c 1100000 /dev/zero | tr '\0' 'a' >"$WORK/big"
req POST /customers -H "$JSON" --data-binary @"$WORK/big"
check "body over 1 MiB is 413" 413 "$CODE"
req POST /customers -H "$JSON" -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/big"
check "chunked body over 1 MiB is 413" 413 "$CODE"
printf '{"name":"%s"}' "$(head -c 1000000 /dev/zero | tr '\0' 'b')" >"$WORK/almost"
req POST /customers -H "$JSON" --data-binary @"$WORK/almost"
check "body just under 1 MiB is accepted" 201 "$CODE"
req POST /customers -d '{"name":"form"}'
check "form content type is 415" 415 "$CODE"
req POST /customers -H 'Content-Type: text/plain' -d '{}'
check "text/plain is 415" 415 "$CODE"
req DELETE /customers/1
check "DELETE without Content-Type is 415" 415 "$CODE"
jw POST /customers '{"name":"charset"}' -H 'Content-Type: application/json; charset=utf-8'
check "application/json with charset is accepted" 201 "$CODE"
jw POST /customers '{"name":'
check "invalid JSON is 400" 400 "$CODE"
jw POST /customers '[{"name":"x"}]'
check "array body is 400" 400 "$CODE"
jw POST /customers '"str"'
check "string body is 400" 400 "$CODE"
req POST /customers -H "$JSON"
check "empty body is 400" 400 "$CODE"
jw POST /customers '{"id":true}'
check "boolean id is 400" 400 "$CODE"
jw POST /customers '{"a":1,"a":2}'
check "duplicate keys are 400" 400 "$CODE"
jw POST /customers '{"n":123456789012345678901234567890}'
check "integer overflow is 400" 400 "$CODE"
req DELETE /customers -H "$JSON"
check "DELETE on a collection is 405" 405 "$CODE"
has "405 names allowed methods" "$HDRS" "allow: get, post"
req GET /widgets
check "unknown resource is 404" 404 "$CODE"
req GET /customers/1/extra
check "deep path is 404" 404 "$CODE"

# ------------------------------------------------------------------ faults
faults '{"route":"GET /customers","error_rate":1}'
check "fault rule accepted" 200 "$CODE"
req GET /customers
check "error_rate 1 gives 500" 500 "$CODE"
req GET /customers/1
check "rules bind to their route only" 200 "$CODE"
faults '{"route":"GET /customers","rate_limit_rate":1}'
req GET /customers
check "rate_limit_rate 1 gives 429" 429 "$CODE"
has "429 carries Retry-After: 1" "$HDRS" "retry-after: 1"
faults '{"route":"GET /customers","drop_rate":1}'
req GET /customers
check "drop_rate 1 closes without a response" "52 000" "$CURL_RC $CODE"
faults '{"route":"GET /customers","latency_ms":300}'
T=$(curl -s -o /dev/null -w '%{time_total}' "$BASE/customers?limit=1")
if [ "$(printf '%s' "$T" | sed 's/[.,].*//')" -ge 1 ] || [[ "$T" > "0.29" ]]; then
  ok "latency_ms delays the reply ($T s)"
else
  fail "latency_ms delays the reply ($T s)"
fi
faults '{"route":"GET /customers","timeout_rate":1}'
SECONDS=0
req GET /customers --max-time 1
check "timeout_rate hangs until the client gives up" "28 000" "$CURL_RC $CODE"
sleep 0.3
req GET /_admin/stats
has "a given-up request is counted as timeout" "$BODY" '"timeout":1'
faults '{"route":"GET /customers","timeout_rate":1,"hang_ms":200}'
req GET /customers
check "a hang past hang_ms ends in 504" 504 "$CODE"
faults '{"route":"GET /customers","malformed_rate":1}'
BAD=0
for i in 1 2 3 4; do
  req GET "/customers?limit=3"
  case "$BODY" in *']') ;; *) BAD=$((BAD + 1)) ;; esac
done
check "malformed_rate 1 never sends a complete array" 4 "$BAD"
if command -v jq >/dev/null; then
  if printf '%s' "$BODY" | jq . >/dev/null 2>&1; then fail "malformed page fails jq"; else ok "malformed page fails jq"; fi
fi
req DELETE /_admin/faults
req GET "/customers?limit=3"
P1=$BODY
faults '{"route":"GET /customers","duplicate_rate":1,"seed":3}'
req GET "/customers?limit=3&offset=3"
DUP=0
for r in $(vals _rev "$BODY"); do case "$P1" in *"$r"*) DUP=1 ;; esac; done
check "duplicate_rate repeats records of the previous page" 1 "$DUP"
check "duplicated page stays within limit" 3 "$(count '"_rev"' "$BODY")"
faults '{"route":"GET /customers","backwards_rate":1,"seed":5}'
req GET "/customers?limit=6"
if vals updated_at "$BODY" | sorted; then fail "backwards_rate makes updated_at go backwards"; else ok "backwards_rate makes updated_at go backwards"; fi
BACK=$BODY
req DELETE /_admin/faults
req GET "/customers?limit=6"
if vals updated_at "$BODY" | sorted; then ok "backwards leaves stored updated_at unchanged"; else fail "backwards leaves stored updated_at unchanged"; fi
check "backwards changes exactly one record" 1 \
  "$(diff <(vals updated_at "$BACK") <(vals updated_at "$BODY") | grep -c '^<')"
faults '{"route":"GET /_changes","duplicate_rate":1,"malformed_rate":0}'
req GET "/_changes?since=10&limit=5"
check "duplicate on _changes repeats earlier sequences" 1 \
  "$(vals seq "$BODY" | sed 's/-.*//' | awk '$1 <= 10 {n=1} END {print n+0}')"
faults '{"route":"GET /_changes","malformed_rate":1}'
req GET "/_changes?since=0&limit=5"
case "$BODY" in *'}') fail "malformed _changes page" ;; *) ok "malformed _changes page" ;; esac
req DELETE /_admin/faults
# Determinism: the same seed gives the same fates; another seed differs.
pattern() {
  local i p=""
  faults "{\"route\":\"GET /customers/{id}\",\"seed\":$1,\"error_rate\":0.5}"
  for i in $(seq 24); do
    p="$p$(curl -s -o /dev/null -w '%{http_code}' "$BASE/customers/1") "
  done
  printf '%s' "$p"
}
PA=$(pattern 42)
PB=$(pattern 42)
PC=$(pattern 43)
check "same seed, same fault sequence" "$PA" "$PB"
if [ "$PA" != "$PC" ]; then ok "another seed, another sequence"; else fail "another seed, another sequence"; fi
has "error_rate 0.5 gives some 500s" "$PA" "500"
has "error_rate 0.5 gives some 200s" "$PA" "200"
faults '{"route":"*","rate_limit_rate":1}'
req GET /accounts
check "route * matches everything" 429 "$CODE"
req GET /_admin/stats
check "admin routes are never faulted" 200 "$CODE"
faults '{"route":"GET /customers","error_rat":1}'
check "unknown fault key is 400" 400 "$CODE"
faults '{"error_rate":2}'
check "rate above 1 is 400" 400 "$CODE"
req GET /_admin/faults
check "fault rules can be listed" 2 "$(count '"route"' "$BODY")"
req DELETE /_admin/faults
req GET /accounts
check "DELETE /_admin/faults clears" 200 "$CODE"

# -------------------------------------------------------------------- stats
req GET /_admin/stats
has "stats count by route and status" "$BODY" '"GET /customers":{'
has "stats count 429s" "$BODY" '"429":'
has "stats count injected faults" "$BODY" '"drop":1'

# ---------------------------------------------------------------- garbage
for p in '/%ZZ' '/customers/%00' '/customers/%' '/customers?limit=%zz' \
  '/_changes?since=%FF%FE' '/_admin/records/nope' '/customers/../../etc/passwd' \
  '//customers' '/customers?updated_at_gte=2026-13-45T99:99:99Z'; do
  curl -s -o /dev/null --path-as-is "$BASE$p"
done
for m in FOO TRACE OPTIONS CONNECT 'GET /x'; do
  curl -s -o /dev/null -m 2 -X "$m" "$BASE/customers"
done
curl -s -o /dev/null -m 2 -I "$BASE/customers"
head -c 4096 /dev/urandom >"$WORK/rand"
curl -s -o /dev/null -H "$JSON" --data-binary @"$WORK/rand" "$BASE/customers"
curl -s -o /dev/null -H "$JSON" -X PATCH --data-binary @"$WORK/rand" "$BASE/customers/1"
curl -s -o /dev/null -H "$JSON" --data-binary @"$WORK/rand" "$BASE/_admin/faults"
curl -s -o /dev/null -H "$JSON" --data-binary @"$WORK/rand" "$BASE/_admin/clock"
curl -s -o /dev/null -H "$JSON" --data-binary '{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}' "$BASE/customers"
curl -s -o /dev/null "$BASE/customers/$(head -c 300 /dev/zero | tr '\0' 'x')"
curl -s -o /dev/null "$BASE/customers?updated_at_gte=$(head -c 20000 /dev/zero | tr '\0' '9')"
curl -s -o /dev/null -H "If-Match: $(head -c 3000 /dev/zero | tr '\0' ',')" -H "$JSON" -X DELETE "$BASE/customers/1"
curl -s -o /dev/null -H "Content-Length: -5" -H "$JSON" -d '{}' "$BASE/customers"
PORT=${BASE##*:}
for junk in 'GARBAGE\r\n\r\n' 'GET\r\n\r\n' 'POST /customers HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n' \
  'GET / HTTP/9.9\r\n\r\n' '\x00\x01\x02\xff\r\n\r\n' 'POST /customers HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n'; do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT" && printf "$junk" >&3 && timeout 2 cat <&3 >/dev/null; exec 3>&-) 2>/dev/null
done
head -c 20000 /dev/urandom >"$WORK/rand2"
(exec 3<>"/dev/tcp/127.0.0.1/$PORT" && cat "$WORK/rand2" >&3 && timeout 2 cat <&3 >/dev/null) 2>/dev/null
req GET /
check "still serving after garbage" 200 "$CODE"
kill -0 "$MAIN" 2>/dev/null && ok "process alive after garbage" || fail "process alive after garbage"

# ------------------------------------------------------------- concurrency
req POST /_admin/reset
check "reset answers 200" 200 "$CODE"
req GET /_admin/records/customers
check "reset drops every record" "[]" "$BODY"
WRITERS=()
for w in 1 2 3 4 5 6; do
  (
    U=()
    for i in $(seq 25); do U+=("$BASE/customers"); done
    curl -s -H "$JSON" -d "{\"w\":$w}" "${U[@]}" >/dev/null
  ) &
  WRITERS+=($!)
done
wait "${WRITERS[@]}"
req GET "/customers?limit=1000"
check "parallel writers: all records stored" 150 "$(count '"_rev"' "$BODY")"
check "parallel writers: unique ids" 150 "$(vals id "$BODY" | sort -u | wc -l | tr -d ' ')"
if vals updated_at "$BODY" | sorted_strictly; then ok "parallel writers: updated_at strictly increasing"; else fail "parallel writers: updated_at strictly increasing"; fi
check "ids restart at 1 after reset" 1 "$(vals id "$BODY" | sort -n | head -n1)"

# --------------------------------------- Idempotency-Key, lost replies
jw POST /accounts '{"title":"once"}' -H 'Idempotency-Key: k-1'
ID1=$(val id "$BODY")
jw POST /accounts '{"title":"once"}' -H 'Idempotency-Key: k-1'
check "a repeated Idempotency-Key returns the first record" "201 $ID1" "$CODE $(val id "$BODY")"
jw POST /accounts '{"title":"twice"}' -H 'Idempotency-Key: k-2'
check "another key creates another record" 201 "$CODE"
[ "$(val id "$BODY")" != "$ID1" ] && ok "another key, another id" || fail "another key, another id"
faults '{"route":"POST /accounts","lost_reply_rate":1}'
jw POST /accounts '{"title":"lost"}' -H 'Idempotency-Key: k-3'
check "lost_reply: no answer" 000 "$CODE"
curl -s -X DELETE "$BASE/_admin/faults" >/dev/null
jw POST /accounts '{"title":"lost"}' -H 'Idempotency-Key: k-3'
req GET /_admin/records/accounts
check "lost_reply: the write was applied once, the retry finds it" 1 "$(count '"title":"lost"' "$BODY")"

# ------------------------------------------------- SIGTERM during a hang
faults '{"route":"GET /customers","timeout_rate":1}'
curl -s -o /dev/null -m 20 "$BASE/customers" &
HANG=$!
sleep 0.3
SECONDS=0
stop "$MAIN"
check "SIGTERM exits 0 even during a hang" 0 "$STOP_RC"
if [ "$SECONDS" -le 3 ]; then ok "SIGTERM is prompt (${SECONDS}s)"; else fail "SIGTERM is prompt (${SECONDS}s)"; fi
wait "$HANG" 2>/dev/null
check "quiet without --verbose" "" "$(cat "$WORK/main.err")"

# ------------------------------------------------------- --state, --verbose
start state --listen 127.0.0.1:0 --resources leads,deals --state "$WORK/state.db" --verbose
jw POST /leads '{"name":"Lea"}'
check "custom resources are served" 201 "$CODE"
jw POST /leads '{"name":"Leo"}'
req GET /customers
check "unlisted resources are 404" 404 "$CODE"
req GET "/_changes?since=0"
S1=$(val last_seq "$BODY")
stop "$PID"
check "SIGTERM exits 0" 0 "$STOP_RC"
check "--verbose logs one JSON line per request" 4 "$(grep -c '^{"ts":' "$WORK/state.err")"
has "request log names route and status" "$(head -n1 "$WORK/state.err")" '"route":"POST /leads","status":"201"'
start state2 --listen 127.0.0.1:0 --resources leads,deals --state "$WORK/state.db"
req GET /leads/2
check "--state keeps records across restarts" "200 Leo" "$CODE $(val name "$BODY")"
jw POST /leads '{"name":"Liv"}'
check "--state keeps the id counter" 3 "$(val id "$BODY")"
req GET "/_changes?since=$S1"
check "--state keeps the sequence" 1 "$(count '"seq"' "$BODY")"
stop "$PID"

# ---------------------------------------------------------------------- CLI
"$CRMSIM" --listen nonsense >/dev/null 2>&1
check "bad --listen exits 2" 2 "$?"
"$CRMSIM" --listen 127.0.0.1:0 --resources _x >/dev/null 2>&1
check "bad --resources exits 2" 2 "$?"
"$CRMSIM" --listen 127.0.0.1:0 --seed -1 >/dev/null 2>&1
check "bad --seed exits 2" 2 "$?"

echo "# $PASSES passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
