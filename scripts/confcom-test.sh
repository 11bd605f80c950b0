#!/usr/bin/env bash
# npm run confcom:test: the ACI policy pipeline with the real Azure CLI confcom extension, not a fake.
#   1. installs the confcom kit (../shared/tools/confcom: Debian's azure-cli + confcom 1.2.7 and its
#      helpers, offline) into a cache; a rerun takes seconds,
#   2. takes the image `npm run image:test` builds (running image:test when it is not there yet),
#      saves it with `podman save --format oci-archive`,
#   3. runs fragments/gen-policy.sh with the real az and --tar (SKR_BIN unset: the scripts find skr
#      themselves), and checks: the policy is in the template, acipolicygen's sha256 equals
#      `skr policy digest`, every container's layer entries are 64-hex hashes, the import config's
#      x-ms-sevsnpvm-hostdata equals the digest; az --print-existing-policy and --diff work on the
#      template gen-policy.sh wrote,
#   4. saves the image as a docker-archive and checks that gen-policy.sh refuses the policy confcom
#      makes from it (dmverity-vhd's log line as a layer) and writes no release config,
#   5. signs a fragment for the image with gen-fragment.sh (no --upload; a throwaway P-384 key and
#      chain from openssl) and imports it with gen-import.sh --fragment: the import statement's feed
#      is the image's name. acifragmentgen asks the registry for fragments already attached to the
#      image through `oras discover`; the kit has no oras and there is no registry, so an `oras`
#      stand-in answers that one question as a registry does for an image with none attached.
#
# Exit status: 0 all checks passed; 1 a check failed; 3 this machine cannot run containers at all
# (one line on stderr says why; .ci/run reports it and carries on), as image:test.
#
# Environment:
#   SKR_CONFCOM_KIT     the kit's folder (default: ../shared/tools/confcom beside the repository)
#   SKR_CONFCOM_PREFIX  where the kit installs (default: the kit's, ${XDG_CACHE_HOME:-$HOME/.cache}/azure-confcom-1.2.7)
#   SKR_IMAGE_ENGINE, SKR_IMAGE_TEST_DIR, SKR_IMAGE_TAG: as for image:test (scripts/image-test.sh)
set -euo pipefail
# One block, read before it runs (as image-test.sh).
{
REPO=$(cd "$(dirname "$0")/.." && pwd)
KIT=${SKR_CONFCOM_KIT:-$REPO/../shared/tools/confcom}
PREFIX=${SKR_CONFCOM_PREFIX:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/azure-confcom-1.2.7}
WORK=${SKR_IMAGE_TEST_DIR:-/var/tmp/skr-image-test}
TAG=${SKR_IMAGE_TAG:-localhost/skr-sidecar:image-test}
TMP=
FAILED=0

log() { printf 'confcom:test: %s\n' "$*" >&2; }
cannot_run() {
  printf 'confcom:test: SKIPPED, this machine cannot run containers: %s\n' "$*" >&2
  exit 3
}
die() {
  log "FAILED: $*"
  exit 1
}
pass() { log "ok   $*"; }
fail() {
  log "FAIL $*"
  FAILED=1
}
cleanup() { [ -z "$TMP" ] || rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 1' INT TERM
now_ms() { date +%s%3N; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f s", ms / 1000 }'; }
# node_eval JS ARGS...: a small check in Node (the JS sees `args`, prints its answer).
node_eval() {
  local js=$1
  shift
  node -e "const fs = require('fs'); const args = process.argv.slice(1); $js" "$@"
}

[ -f "$REPO/dist/cli/main.js" ] || die "dist/ is missing: run npm ci first"

# ---- engine and image (the storage image:test builds into) --------------------------------------
ENGINE=${SKR_IMAGE_ENGINE:-}
if [ -z "$ENGINE" ]; then
  if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then ENGINE=podman
  else cannot_run "neither podman nor a docker engine is available (CI installs podman with apt)"
  fi
fi
[ "$ENGINE" != podman ] || [ "$(id -u)" = 0 ] ||
  cannot_run "podman needs root here (image:test's rootful storage); run as root"
ENGINE_ARGS=()
engine() { "$ENGINE" "${ENGINE_ARGS[@]}" "$@"; }
find_image() {
  if [ "$ENGINE" = docker ]; then
    docker image inspect "$TAG" >/dev/null 2>&1
    return
  fi
  local d
  for d in overlay vfs; do
    [ -d "$WORK/storage-$d" ] || continue
    ENGINE_ARGS=(--root "$WORK/storage-$d" --runroot "$WORK/run-$d" --storage-driver "$d")
    [ ! -f "$WORK/containers.conf" ] || export CONTAINERS_CONF="$WORK/containers.conf"
    engine image exists "$TAG" 2>/dev/null && return 0
  done
  return 1
}
if find_image; then
  IMAGE_DESC="$TAG (built by image:test)"
else
  log "$TAG is not built yet: running npm run image:test to build (and test) it"
  rc=0
  SKR_IMAGE_ENGINE=$ENGINE SKR_IMAGE_TEST_DIR=$WORK SKR_IMAGE_TAG=$TAG bash "$REPO/scripts/image-test.sh" </dev/null >&2 || rc=$?
  [ "$rc" != 3 ] || cannot_run "image:test could not run one (its SKIPPED line above says why)"
  [ "$rc" = 0 ] || die "image:test failed (exit $rc), so there is no image to write a policy for"
  find_image || die "image:test passed but $TAG is not in its storage ($WORK)"
  IMAGE_DESC="$TAG (built now by image:test)"
fi
log "image: $IMAGE_DESC, engine $ENGINE"

# ---- the kit -------------------------------------------------------------------------------------
[ -x "$KIT/install.sh" ] || die "the confcom kit is missing: no $KIT/install.sh (set SKR_CONFCOM_KIT)"
mkdir -p "$WORK"
TMP=$(mktemp -d "$WORK/confcom.XXXXXX")
t0=$(now_ms)
if ! "$KIT/install.sh" "$PREFIX" </dev/null >"$TMP/kit.out" 2>"$TMP/kit.log"; then
  tail -n 30 "$TMP/kit.log" >&2
  die "the confcom kit did not install (last lines of its log above)"
fi
KIT_MS=$(( $(now_ms) - t0 ))
# shellcheck disable=SC1091
. "$PREFIX/env.sh"
AZ_DESC=$(sed -n 's/.*az confcom \([0-9.]*\) answers (az \([^)]*\)).*/confcom \1, Debian azure-cli \2/p' "$TMP/kit.log")
log "kit: $AZ_DESC, installed in $(secs "$KIT_MS") ($PREFIX)"

# ---- the image as tars ---------------------------------------------------------------------------
t0=$(now_ms)
OCI_TAR=$TMP/skr.oci.tar DOCKER_TAR=$TMP/skr.docker.tar
if [ "$ENGINE" = podman ]; then
  engine save --format oci-archive -o "$OCI_TAR" "$TAG" >"$TMP/save.log" 2>&1 || { tail -n 5 "$TMP/save.log" >&2; die "podman save --format oci-archive $TAG failed"; }
  engine save --format docker-archive -o "$DOCKER_TAR" "$TAG" >>"$TMP/save.log" 2>&1 || { tail -n 5 "$TMP/save.log" >&2; die "podman save --format docker-archive $TAG failed"; }
else
  command -v skopeo >/dev/null 2>&1 || die "with docker, the OCI archive is made with skopeo: apt-get install skopeo"
  skopeo copy "docker-daemon:$TAG" "oci-archive:$OCI_TAR:$TAG" >"$TMP/save.log" 2>&1 || { tail -n 5 "$TMP/save.log" >&2; die "skopeo copy docker-daemon:$TAG oci-archive:... failed"; }
  skopeo copy "docker-daemon:$TAG" "docker-archive:$DOCKER_TAR:$TAG" >>"$TMP/save.log" 2>&1 || { tail -n 5 "$TMP/save.log" >&2; die "skopeo copy docker-daemon:$TAG docker-archive:... failed"; }
fi
SAVE_MS=$(( $(now_ms) - t0 ))
OCI_MB=$(awk -v b="$(stat -c %s "$OCI_TAR")" 'BEGIN { printf "%.0f MB", b / 1000000 }')
log "saved: OCI archive $OCI_MB, and a docker-archive, in $(secs "$SAVE_MS")"

# The committed parameter file with its placeholders filled in, the image under test in every container.
PARAMS=$TMP/params.json
node_eval '
  const p = JSON.parse(fs.readFileSync(args[0], "utf8"));
  Object.assign(p.parameters, {
    image: { value: args[2] },
    identityResourceId: { value: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/skr" },
    maaEndpoint: { value: "sharedneu.neu.attest.azure.net" },
    vaultEndpoint: { value: "myvault.vault.azure.net" },
    keyName: { value: "release-me" },
  });
  fs.writeFileSync(args[1], JSON.stringify(p, null, 2));
' "$REPO/arm/aci-arm-template.parameters.json" "$PARAMS" "$TAG"
node_eval 'fs.writeFileSync(args[0], JSON.stringify({ [args[1]]: args[2] }))' "$TMP/tarmap.json" "$TAG" "$OCI_TAR"
node_eval 'fs.writeFileSync(args[0], JSON.stringify({ [args[1]]: args[2] }))' "$TMP/tarmap-docker.json" "$TAG" "$DOCKER_TAR"

# ---- gen-policy.sh with the real az --------------------------------------------------------------
OUT=$TMP/out
t0=$(now_ms)
rc=0
(cd "$TMP" && env -u SKR_BIN bash "$REPO/fragments/gen-policy.sh" --parameters "$PARAMS" --tar tarmap.json --out "$OUT" </dev/null) \
  >"$TMP/gen-policy.out" 2>"$TMP/gen-policy.log" || rc=$?
GEN_MS=$(( $(now_ms) - t0 ))
if [ "$rc" != 0 ]; then
  grep -v 'Pulling and hashing' "$TMP/gen-policy.log" | tail -n 20 >&2
  die "fragments/gen-policy.sh --tar exited $rc (its last lines above)"
fi
pass "fragments/gen-policy.sh --tar with the real az confcom acipolicygen ($(secs "$GEN_MS")), SKR_BIN unset"

TEMPLATE=$OUT/aci-arm-template.json
if node_eval '
  const policyOf = (f) => JSON.parse(fs.readFileSync(f, "utf8")).resources
    .find((r) => r.type === "Microsoft.ContainerInstance/containerGroups").properties.confidentialComputeProperties.ccePolicy;
  const b64 = fs.readFileSync(args[1], "utf8");
  const params = JSON.parse(fs.readFileSync(args[2], "utf8")).parameters.ccePolicy.value;
  if (!/^[A-Za-z0-9+/]+=*$/.test(b64) || policyOf(args[0]) !== b64 || params !== b64) process.exit(1);
' "$TEMPLATE" "$OUT/ccepolicy.b64" "$OUT/aci-arm-template.parameters.json"; then
  pass "the policy is in the template ($(wc -c <"$OUT/ccepolicy.b64") base64 bytes), the same in ccepolicy.b64 and the parameters"
else
  fail "the template, ccepolicy.b64 and the parameters' ccePolicy do not hold the same base64 policy"
fi

AZ_SHA=$(sed -n 's/^acipolicygen sha256: \([0-9a-f]\{64\}\)$/\1/p' "$TMP/gen-policy.log")
DIGEST=$(node "$REPO/dist/cli/main.js" policy digest "$OUT/ccepolicy.b64")
if [ -n "$AZ_SHA" ] && [ "$AZ_SHA" = "$DIGEST" ] && [ "$(cat "$OUT/hostdata.txt")" = "$DIGEST" ]; then
  pass "acipolicygen's sha256 = skr policy digest = hostdata.txt: $DIGEST"
else
  fail "digests differ: acipolicygen printed \"$AZ_SHA\", skr policy digest \"$DIGEST\", hostdata.txt \"$(head -c 100 "$OUT/hostdata.txt")\""
fi

# The layers, read here on their own (not through lib.sh): confcom writes `containers := [JSON]` on one line.
if layers=$(node_eval '
  const rego = Buffer.from(fs.readFileSync(args[0], "utf8"), "base64").toString("utf8");
  const line = rego.split("\n").find((l) => l.startsWith("containers := "));
  const containers = JSON.parse(line.slice("containers := ".length));
  let n = 0;
  for (const c of containers) {
    if (!Array.isArray(c.layers) || c.layers.length === 0) { console.log(`container ${c.name}: no layers`); process.exit(1); }
    for (const l of c.layers) if (!/^[0-9a-f]{64}$/.test(l)) { console.log(`container ${c.name}: layer ${JSON.stringify(String(l).slice(0, 80))}`); process.exit(1); }
    n += c.layers.length;
  }
  console.log(`${containers.length} containers (${containers.map((c) => c.name).join(", ")}), ${n} layers`);
' "$OUT/ccepolicy.b64" 2>&1); then
  pass "every layer entry is a 64-hex hash: $layers"
else
  fail "layer entries: $layers"
fi

if node_eval '
  const j = JSON.parse(fs.readFileSync(args[0], "utf8"));
  const groups = j.claims;
  const ok = Array.isArray(groups) && groups.length > 0 && groups.every((g) => g.some((c) => c.claim === "x-ms-sevsnpvm-hostdata" && c.equals === args[1]));
  process.exit(ok ? 0 : 1);
' "$OUT/importkeyconfig.json" "$DIGEST"; then
  pass "importkeyconfig.json pins x-ms-sevsnpvm-hostdata = the digest"
else
  fail "importkeyconfig.json's x-ms-sevsnpvm-hostdata is not $DIGEST: $(head -c 400 "$OUT/importkeyconfig.json")"
fi

# The template gen-policy.sh wrote holds the policy literally, so confcom can read it back and diff it.
if az confcom acipolicygen -a "$TEMPLATE" --print-existing-policy </dev/null >"$TMP/existing.out" 2>"$TMP/existing.log" &&
   node_eval '
     const printed = fs.readFileSync(args[0], "utf8");
     const rego = Buffer.from(fs.readFileSync(args[1], "utf8"), "base64").toString("utf8");
     process.exit(printed.includes(rego) ? 0 : 1);
   ' "$TMP/existing.out" "$OUT/ccepolicy.b64"; then
  pass "az confcom acipolicygen -a OUT/aci-arm-template.json --print-existing-policy prints the policy"
else
  fail "--print-existing-policy on $TEMPLATE: $(tail -n 3 "$TMP/existing.log" "$TMP/existing.out" | head -c 600)"
fi
if (cd "$TMP" && az confcom acipolicygen -a "$TEMPLATE" -p "$PARAMS" --tar tarmap.json --diff </dev/null) >"$TMP/diff.out" 2>"$TMP/diff.log" &&
   grep -qx 'Existing policy and Template match' "$TMP/diff.out"; then
  pass "az confcom acipolicygen --diff on that template: \"Existing policy and Template match\""
else
  fail "--diff on $TEMPLATE: $(grep -v 'Pulling and hashing' "$TMP/diff.log" | tail -n 3 | head -c 400) $(head -c 400 "$TMP/diff.out")"
fi

# ---- a docker-archive: confcom's policy is refused ----------------------------------------------
OUT_DOCKER=$TMP/out-docker
rc=0
(cd "$TMP" && env -u SKR_BIN bash "$REPO/fragments/gen-policy.sh" --parameters "$PARAMS" --tar tarmap-docker.json --out "$OUT_DOCKER" </dev/null) \
  >"$TMP/gen-docker.out" 2>"$TMP/gen-docker.log" || rc=$?
if [ "$rc" = 1 ] && grep -q 'has a layer entry that is not a sha256 hash: "not able to parse in OCI format' "$TMP/gen-docker.log" &&
   grep -q 'podman save --format oci-archive' "$TMP/gen-docker.log" && [ ! -e "$OUT_DOCKER/importkeyconfig.json" ]; then
  pass "a docker-archive: gen-policy.sh refuses confcom's policy (exit 1, \"not able to parse in OCI format\" named) and writes no importkeyconfig.json"
else
  fail "a docker-archive: gen-policy.sh exited $rc: $(grep -v 'Pulling and hashing' "$TMP/gen-docker.log" | tail -n 3 | head -c 600)"
fi

# ---- a fragment, signed and imported -----------------------------------------------------------
FRAG=$TMP/fragment
mkdir -p "$FRAG/bin"
cat >"$FRAG/bin/oras" <<'EOF'
#!/bin/sh
# Stand-in for the registry, through oras's CLI: no fragment is attached to any image. Nothing else.
if [ "$1" = discover ]; then echo '{"manifests": []}'; exit 0; fi
echo "oras stand-in (confcom:test): only discover is answered, not: $*" >&2
exit 1
EOF
chmod 0755 "$FRAG/bin/oras"
if ! (
  cd "$FRAG" &&
    openssl ecparam -name secp384r1 -genkey -noout -out ca.key &&
    openssl req -x509 -new -key ca.key -sha384 -days 30 -subj "/CN=skr confcom-test root" \
      -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign" -out ca.pem &&
    openssl ecparam -name secp384r1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out signer.key &&
    openssl req -new -key signer.key -subj "/CN=skr confcom-test fragment signer" -out signer.csr &&
    printf 'basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n' >signer.ext &&
    openssl x509 -req -in signer.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha384 -days 30 -extfile signer.ext -out signer.pem &&
    cat signer.pem ca.pem >chain.pem
) >"$FRAG/openssl.log" 2>&1; then
  tail -n 5 "$FRAG/openssl.log" >&2
  die "openssl could not make the fragment's signing key and chain (apt-get install openssl)"
fi
t0=$(now_ms)
rc=0
(cd "$TMP" && PATH="$FRAG/bin:$PATH" env -u SKR_BIN bash "$REPO/fragments/gen-fragment.sh" --image "$TAG" \
  --key "$FRAG/signer.key" --chain "$FRAG/chain.pem" --tar tarmap.json --out "$FRAG/out" </dev/null) \
  >"$FRAG/gen-fragment.out" 2>"$FRAG/gen-fragment.log" || rc=$?
FRAG_MS=$(( $(now_ms) - t0 ))
if [ "$rc" = 0 ] && [ -s "$FRAG/out/skr_sidecar.rego.cose" ]; then
  pass "fragments/gen-fragment.sh --tar (no --upload) with the real acifragmentgen: signed skr_sidecar.rego.cose, layers all sha256 ($(secs "$FRAG_MS"))"
  rc=0
  (cd "$TMP" && bash "$REPO/fragments/gen-import.sh" --fragment "$FRAG/out/skr_sidecar.rego.cose" --fragments-json "$FRAG/fragments.json" </dev/null) \
    >"$FRAG/gen-import.out" 2>"$FRAG/gen-import.log" || rc=$?
  want_feed=${TAG%:*}
  if [ "$rc" = 0 ] && imported=$(node_eval '
      const [f] = JSON.parse(fs.readFileSync(args[0], "utf8")).fragments;
      if (f.feed !== args[1] || !/^did:x509:0:sha256:[A-Za-z0-9_-]{43}::subject:CN:/.test(f.issuer)) process.exit(1);
      console.log(`feed ${f.feed}, issuer ${f.issuer}, minimum_svn ${f.minimum_svn}`);
    ' "$FRAG/fragments.json" "$want_feed"); then
    pass "fragments/gen-import.sh --fragment with the real az: $imported"
  else
    fail "gen-import.sh --fragment exited $rc: $(tail -n 3 "$FRAG/gen-import.log" | head -c 400) $(head -c 600 "$FRAG/fragments.json" 2>/dev/null)"
  fi
else
  fail "gen-fragment.sh exited $rc: $(grep -v 'Pulling and hashing' "$FRAG/gen-fragment.log" | tail -n 5 | head -c 600)"
fi

# ---- summary -------------------------------------------------------------------------------------
row() { printf '| %s | %s |\n' "$1" "$2"; }
printf '\n'
row "confcom:test" "$TAG"
row "---" "---"
row "tool" "${AZ_DESC:-az confcom}"
row "kit install" "$(secs "$KIT_MS")"
row "OCI archive" "$OCI_MB, saved in $(secs "$SAVE_MS")"
row "gen-policy.sh" "$(secs "$GEN_MS")"
row "HOST_DATA" "${DIGEST:-none}"
row "result" "$([ "$FAILED" = 0 ] && echo PASS || echo FAIL)"
exit "$FAILED"
}
