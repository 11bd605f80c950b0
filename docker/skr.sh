#!/bin/sh
# Entrypoint of the skr-sidecar image (/skr.sh), a drop-in for the reference image's: it takes the
# same environment variables and positional fallbacks and starts `skr serve`.
#
#   SkrSideCarArgs  base64 JSON sidecar arguments (fallback: $1)   -> read by skr serve from the env
#   Port            listening port on 127.0.0.1 (fallback: $2)    -> --port
#                   (default 8080; 50000 with ServerType=grpc, as the reference)
#   LogLevel        trace|debug|info|warning|error|fatal|panic    -> --log-level
#   LogFile         log file path                                 -> --log-file
#   ServerType      http (default) or grpc: the ocicrypt key provider -> --server-type
#                   (one server type per process, as the reference)
#
# Outside the image:
#   SKR_BIN         the skr command, split on spaces (default /app/dist/cli/main.js), e.g.
#                   SKR_BIN="node dist/cli/main.js"
#   SKR_SERVE_ARGS  extra `skr serve` flags, split on spaces, e.g. "--simulate"
# Positional arguments after the first two are passed to `skr serve` too.
#
# Unlike the reference, this script execs the sidecar (so SIGTERM reaches node and the sidecar shuts
# down gracefully) and writes no `result` file: the container's exit status is the sidecar's.
set -eu

if [ -z "${SkrSideCarArgs:-}" ] && [ $# -ge 1 ]; then SkrSideCarArgs=$1; fi
if [ -z "${Port:-}" ] && [ $# -ge 2 ]; then Port=$2; fi
if [ $# -ge 2 ]; then shift 2; elif [ $# -eq 1 ]; then shift 1; fi

server_type=$(printf '%s' "${ServerType:-http}" | tr '[:upper:]' '[:lower:]')
case "$server_type" in
  http|grpc) ;;
  *)
    echo "skr.sh: ServerType=\"${ServerType}\" is not supported: use http (the HTTP API) or grpc (the ocicrypt key provider)" >&2
    exit 2 ;;
esac

SKR_BIN=${SKR_BIN:-/app/dist/cli/main.js}
skr_cmd=${SKR_BIN%% *}
if ! command -v "$skr_cmd" >/dev/null 2>&1; then
  echo "skr.sh: cannot run \"$skr_cmd\": set SKR_BIN to the skr command (for a checkout: SKR_BIN=\"node dist/cli/main.js\")" >&2
  exit 127
fi

# skr serve reads SkrSideCarArgs from its environment (base64 JSON, as the reference takes it).
if [ -n "${SkrSideCarArgs:-}" ]; then export SkrSideCarArgs; else unset SkrSideCarArgs; fi

if [ -n "${LogFile:-}" ]; then set -- --log-file "$LogFile" "$@"; fi
if [ -n "${LogLevel:-}" ]; then set -- --log-level "$LogLevel" "$@"; fi
if [ -n "${Port:-}" ]; then set -- --port "$Port" "$@"; fi
set -- --server-type "$server_type" "$@"

echo "skr.sh: SkrSideCarArgs = ${SkrSideCarArgs:-(none)}" >&2
echo "skr.sh: exec $SKR_BIN serve ${SKR_SERVE_ARGS:-}${SKR_SERVE_ARGS:+ }$*" >&2

# SKR_BIN and SKR_SERVE_ARGS are split on spaces on purpose; no globbing.
set -f
# shellcheck disable=SC2086
exec $SKR_BIN serve ${SKR_SERVE_ARGS:-} "$@"
