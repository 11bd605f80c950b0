# Shared by attest_client.sh and skr_client.sh (sourced, not run). POSIX sh + curl.
#
#   SKR_SIDECAR_URL        sidecar address (default http://localhost:8080, as the reference hardcodes)
#   SKR_OUT_DIR            where the *.out files go (default /, as in the reference image)
#   SKR_CLIENT_ITERATIONS  stop after N rounds, exit 0 only if every request answered 200
#                          (default 0: loop until SIGTERM, like the reference)
#   SKR_CLIENT_INTERVAL    seconds between rounds (default 5, as the reference)
#   SKR_CLIENT_TIMEOUT     seconds per request (default 120: a key release may retry upstream)

SIDECAR=${SKR_SIDECAR_URL:-http://localhost:8080}
SIDECAR=${SIDECAR%/}
OUT_DIR=${SKR_OUT_DIR:-/}
OUT_DIR=${OUT_DIR%/}
ITERATIONS=${SKR_CLIENT_ITERATIONS:-0}
INTERVAL=${SKR_CLIENT_INTERVAL:-5}
TIMEOUT=${SKR_CLIENT_TIMEOUT:-120}
CHILD=
TMP_FILES=

client_fail() {
  echo "$CLIENT: $*" >&2
  exit 2
}

for _v in "ITERATIONS=$ITERATIONS" "INTERVAL=$INTERVAL" "TIMEOUT=$TIMEOUT"; do
  case "${_v#*=}" in
    ''|*[!0-9]*) client_fail "SKR_CLIENT_${_v%%=*} must be a whole number of $( [ "${_v%%=*}" = ITERATIONS ] && echo rounds || echo seconds ), got \"${_v#*=}\"" ;;
  esac
done
command -v curl >/dev/null 2>&1 || client_fail "curl is required (apt-get install curl)"

# Values go into a JSON string as-is (as the reference does), so refuse what would break the JSON.
json_safe() {
  case "$2" in
    *'"'*|*'\'*) client_fail "$1 must not contain quotes or backslashes" ;;
  esac
}

cleanup() {
  if [ -n "$CHILD" ]; then kill "$CHILD" 2>/dev/null || true; fi
  # shellcheck disable=SC2086
  [ -z "$TMP_FILES" ] || rm -f $TMP_FILES
}

# SIGTERM/SIGINT stop the loop at once (children run in the background so the trap is not deferred).
on_signal() {
  echo "$CLIENT: stopping" >&2
  cleanup
  exit 0
}
trap on_signal TERM INT
trap cleanup EXIT

run_bg() {
  "$@" &
  CHILD=$!
  wait "$CHILD"
  _rc=$?
  CHILD=
  return $_rc
}

# post PATH BODY OUTFILE: POST JSON to the sidecar; the answer body (or error) lands in OUTFILE,
# replaced atomically when its directory is writable. Returns 0 only on HTTP 200.
post() {
  _dest="$OUT_DIR/$3"
  _tmp=$(mktemp "$OUT_DIR/.$3.XXXXXX" 2>/dev/null || mktemp)
  _code=$(mktemp)
  TMP_FILES="$_tmp $_code"
  run_bg curl -sS -o "$_tmp" -w '%{http_code}' --max-time "$TIMEOUT" -X POST \
    -H 'Content-Type: application/json' -d "$2" "$SIDECAR$1" >"$_code"
  _rc=$?
  _status=$(cat "$_code" 2>/dev/null)
  [ -n "$_status" ] || _status=000
  if [ $_rc -ne 0 ] && [ ! -s "$_tmp" ]; then
    printf '{"error": "curl exit %s: no answer from %s"}\n' "$_rc" "$SIDECAR$1" >"$_tmp"
  fi
  mv -f "$_tmp" "$_dest" 2>/dev/null || { cat "$_tmp" >"$_dest" && rm -f "$_tmp"; }
  rm -f "$_code"
  TMP_FILES=
  _size=$(wc -c <"$_dest" | tr -d ' ')
  if [ "$_status" = 200 ]; then
    echo "$CLIENT: POST $1 -> HTTP 200, $_size bytes in $_dest"
    return 0
  fi
  echo "$CLIENT: POST $1 -> HTTP $_status: $(head -c 1000 "$_dest")" >&2
  return 1
}

# loop ROUND_FUNCTION: the reference's endless loop, or SKR_CLIENT_ITERATIONS rounds.
loop() {
  _i=0
  _ok=0
  while :; do
    _i=$((_i + 1))
    "$1" || _ok=1
    if [ "$ITERATIONS" -gt 0 ] && [ "$_i" -ge "$ITERATIONS" ]; then break; fi
    run_bg sleep "$INTERVAL" || true
  done
  exit $_ok
}
