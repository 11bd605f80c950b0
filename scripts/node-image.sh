# Sourced by scripts/image-test.sh and scripts/test-image-node.sh: which Node.js the container image
# ships, read from docker/Dockerfile's `ARG NODE_IMAGE=node:X.Y.Z-<suite>-slim` line.
# node_image_from_dockerfile FILE sets NODE_IMAGE, NODE_TAG, NODE_VERSION (X.Y.Z) and DEBIAN_SUITE,
# or prints why not on stderr and returns 1.
node_image_from_dockerfile() {
  NODE_IMAGE=$(sed -n 's/^ARG NODE_IMAGE=//p' "$1" | head -n 1)
  if [ -z "$NODE_IMAGE" ]; then
    printf '%s has no "ARG NODE_IMAGE=" line\n' "$1" >&2
    return 1
  fi
  # node:24.21.0-bookworm-slim -> 24.21.0 and bookworm
  NODE_TAG=${NODE_IMAGE##*:}
  NODE_VERSION=${NODE_TAG%%-*}
  DEBIAN_SUITE=$(printf '%s' "$NODE_TAG" | cut -d- -f2)
  case "$NODE_VERSION" in
    *[!0-9.]* | '' | *.*.*.*) ;;
    *.*.*) return 0 ;;
  esac
  printf 'NODE_IMAGE %s does not name an exact Node.js version (want node:X.Y.Z-<suite>-slim)\n' "$NODE_IMAGE" >&2
  return 1
}
