# Shared by the fragments/ scripts (sourced). Prerequisite checks that say what to install or pass.
set -euo pipefail

FRAGMENTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$FRAGMENTS_DIR/.." && pwd)

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

usage_error() {
  echo "$(basename "$0"): $1" >&2
  echo "usage: $USAGE" >&2
  exit 2
}

need_node() {
  command -v node >/dev/null 2>&1 || die "node is required (Node.js >= 20.19: https://nodejs.org)"
}

# The Azure CLI and its confcom extension (which also needs Docker, or image tarballs, to read layers).
need_confcom() {
  command -v az >/dev/null 2>&1 ||
    die "the Azure CLI (az) is not on PATH: install it (https://learn.microsoft.com/cli/azure/install-azure-cli), then: az extension add --name confcom"
  az extension show --name confcom --output none >/dev/null 2>&1 ||
    die "the Azure CLI confcom extension is not installed: az extension add --name confcom (upgrade: az extension update --name confcom)"
}

need_file() { # FLAG PATH WHAT
  [ -n "$2" ] || usage_error "$1 is required ($3)"
  [ -f "$2" ] && [ -r "$2" ] || die "$1 $2: no such readable file ($3)"
}

abspath() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$(pwd)" "$1" ;;
  esac
}

# The skr CLI: $SKR_BIN (split on spaces), else `skr` on PATH, else this checkout's build.
skr() {
  if [ -n "${SKR_BIN:-}" ]; then
    # shellcheck disable=SC2086
    $SKR_BIN "$@"
  elif command -v skr >/dev/null 2>&1; then
    command skr "$@"
  elif [ -f "$REPO_DIR/dist/cli/main.js" ]; then
    node "$REPO_DIR/dist/cli/main.js" "$@"
  else
    die "the skr CLI is missing: run npm ci in $REPO_DIR (it builds dist/), install skr-sidecar, or set SKR_BIN"
  fi
}

# JSON edits go through node (already required by skr). json_edit IN OUT JS [ARGS...]: the JS body
# sees `j` (IN parsed) and `args`, may mutate j or return a replacement, and throws to fail.
json_edit() {
  local in=$1 out=$2 js=$3
  shift 3
  SKR_JSON_EDIT=$js node -e '
    const fs = require("fs");
    const [inFile, outFile, ...args] = process.argv.slice(1);
    try {
      const j = JSON.parse(fs.readFileSync(inFile, "utf8"));
      const r = new Function("j", "args", process.env.SKR_JSON_EDIT)(j, args);
      fs.writeFileSync(outFile, JSON.stringify(r === undefined ? j : r, null, 2) + "\n");
    } catch (e) {
      console.error(`${inFile}: ${e.message}`);
      process.exit(1);
    }
  ' "$in" "$out" "$@" || die "could not process $in"
}
