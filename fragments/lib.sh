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

# confcom's --tar mapping, {"image:tag": "file.tar", ...}, checked and copied to OUT with absolute
# paths (confcom resolves relative ones against its working directory, which is not always ours).
# Make the tars with `podman save --format oci-archive`: see check_policy_layers below.
tar_map() { # MAP OUT
  need_file --tar "$1" 'the image-to-tar mapping for confcom, {"image:tag": "file.tar"}'
  json_edit "$1" "$2" '
    const path = require("path"), fs = require("fs");
    if (!j || typeof j !== "object" || Array.isArray(j) || Object.keys(j).length === 0) {
      throw new Error("--tar wants a JSON object mapping each image to its tar file, e.g. {\"myregistry.azurecr.io/skr-sidecar:0.1.0\": \"skr.oci.tar\"}");
    }
    const out = {};
    for (const [image, file] of Object.entries(j)) {
      const name = JSON.stringify(image.slice(0, 200));
      if (typeof file !== "string" || file === "") throw new Error(`image ${name}: the tar path is not a string`);
      const abs = path.resolve(file);
      let st;
      try { st = fs.statSync(abs); } catch { throw new Error(`image ${name}: no such tar file ${JSON.stringify(abs.slice(0, 300))}`); }
      if (!st.isFile()) throw new Error(`image ${name}: ${JSON.stringify(abs.slice(0, 300))} is not a file`);
      out[image] = abs;
    }
    return out;
  '
}

# Refuse a policy (or fragment) whose containers' `layers` are not all sha256 hashes. confcom takes
# every stdout line of dmverity-vhd as a layer hash; given a docker-archive (docker save, podman save
# without --format oci-archive, or a Docker API), dmverity-vhd first logs that the tar is "not able
# to parse in OCI format" to stdout, and that line becomes a layer: the policy's digest is fine, but
# the containers are refused at deployment. check_policy_layers FILE base64|rego
check_policy_layers() {
  node -e '
    const fs = require("fs");
    const [file, encoding] = process.argv.slice(1);
    const fail = (m) => { console.error(m); process.exit(1); };
    const raw = fs.readFileSync(file, "utf8");
    const rego = encoding === "base64" ? Buffer.from(raw, "base64").toString("utf8") : raw;
    const m = /^containers := /m.exec(rego);
    if (!m) fail(`${file}: the policy has no "containers :=" rule`);
    // The value is JSON: find where it ends (brackets outside strings), then parse it.
    let depth = 0, inString = false, end = -1;
    for (let i = m.index + m[0].length; i < rego.length && end < 0; i++) {
      const c = rego[i];
      if (inString) { if (c === "\\") i++; else if (c === "\"") inString = false; }
      else if (c === "\"") inString = true;
      else if (c === "[" || c === "{") depth++;
      else if ((c === "]" || c === "}") && --depth === 0) end = i + 1;
    }
    let containers;
    try { containers = JSON.parse(rego.slice(m.index + m[0].length, end)); } catch { containers = undefined; }
    if (!Array.isArray(containers)) fail(`${file}: the policy'"'"'s "containers" is not a JSON array`);
    let layers = 0;
    for (const c of containers) {
      const name = JSON.stringify(String(c && (c.name || c.id)).slice(0, 200));
      if (!c || !Array.isArray(c.layers)) fail(`${file}: container ${name} has no "layers" list`);
      const bad = c.layers.find((l) => typeof l !== "string" || !/^[0-9a-f]{64}$/.test(l));
      if (bad !== undefined) {
        fail(`${file}: container ${name} has a layer entry that is not a sha256 hash: ${JSON.stringify(String(bad).slice(0, 80))}. ` +
          "confcom read the image as a docker-archive (docker save, podman save without --format oci-archive, or a Docker API), " +
          "and dmverity-vhd'"'"'s log line \"not able to parse in OCI format\" became a layer: ACI would refuse these containers. " +
          "Save each image with: podman save --format oci-archive -o IMAGE.tar IMAGE, and pass --tar");
      }
      layers += c.layers.length;
    }
    if (layers === 0) fail(`${file}: the policy lists no container layers`);
  ' "$1" "$2"
}

abspath() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$(pwd)" "$1" ;;
  esac
}

# The skr CLI: $SKR_BIN (split on spaces), else `skr` on PATH, else this checkout's build.
# `type -P` looks at PATH only: `command -v skr` would find this function itself.
skr() {
  if [ -n "${SKR_BIN:-}" ]; then
    # shellcheck disable=SC2086
    $SKR_BIN "$@"
  elif type -P skr >/dev/null 2>&1; then
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
