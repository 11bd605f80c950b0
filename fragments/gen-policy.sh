#!/usr/bin/env bash
# Generate the confidential group's security policy and the key release configuration that pins it:
#   1. copy the ARM template to --out with an empty ccePolicy (so acipolicygen does not prompt),
#   2. az confcom acipolicygen -a COPY -p PARAMETERS [--tar MAP] [--include-fragments --fragments-json F]
#      [--debug-mode] (injects ccePolicy into the copy and prints its sha256),
#   3. refuse a policy whose layer entries are not sha256 hashes (a docker-archive tar; see lib.sh),
#   4. skr policy digest of the injected policy: the HOST_DATA value, cross-checked with that sha256,
#   5. write PARAMETERS with ccePolicy filled in, and an importkeyconfig.json whose
#      x-ms-sevsnpvm-hostdata claim equals the digest (kid/endpoints from PARAMETERS unless given).
# --tar MAP: {"image:tag": "file.tar"} for every image of the template, each made with
#   podman save --format oci-archive -o file.tar image:tag   (no Docker API needed then).
# OUT/aci-arm-template.json holds the policy literally: deploy it, and give it to
# `az confcom acipolicygen -a OUT/aci-arm-template.json --print-existing-policy` (or --diff); the
# committed template's [parameters('ccePolicy')] is not base64 to confcom.
# Deploy with: az deployment group create -g RG --template-file OUT/aci-arm-template.json \
#                --parameters @OUT/aci-arm-template.parameters.json
USAGE="gen-policy.sh [--template arm/aci-arm-template.json] [--parameters arm/aci-arm-template.parameters.json] [--tar TARMAP.json] [--fragments-json FILE] [--debug-mode] [--importkey-config fragments/importkeyconfig.json] [--kid NAME] [--kty RSA-HSM|EC-HSM|oct-HSM] [--maa-endpoint HOST] [--akv-endpoint HOST] [--out fragments/out]"
. "$(dirname "$0")/lib.sh"

template="$REPO_DIR/arm/aci-arm-template.json"
parameters="$REPO_DIR/arm/aci-arm-template.parameters.json"
importkey="$FRAGMENTS_DIR/importkeyconfig.json"
fragments= tarmap= debug= kid= kty= maa= akv= out="$FRAGMENTS_DIR/out"
while [ $# -gt 0 ]; do
  case "$1" in
    --template) template=${2:-}; shift 2 ;;
    --parameters) parameters=${2:-}; shift 2 ;;
    --fragments-json) fragments=${2:-}; shift 2 ;;
    --tar) tarmap=${2:-}; [ -n "$tarmap" ] || usage_error "--tar needs a mapping file"; shift 2 ;;
    --debug-mode) debug=1; shift ;;
    --importkey-config) importkey=${2:-}; shift 2 ;;
    --kid) kid=${2:-}; shift 2 ;;
    --kty) kty=${2:-}; shift 2 ;;
    --maa-endpoint) maa=${2:-}; shift 2 ;;
    --akv-endpoint) akv=${2:-}; shift 2 ;;
    --out) out=${2:-}; shift 2 ;;
    -h|--help) echo "usage: $USAGE"; exit 0 ;;
    *) usage_error "unknown argument \"$1\"" ;;
  esac
done
case "$kty" in
  ''|RSA-HSM|EC-HSM|oct-HSM) ;;
  *) usage_error "--kty \"$kty\" is not RSA-HSM, EC-HSM or oct-HSM" ;;
esac
need_file --template "$template" "the ARM template of the container group"
need_file --parameters "$parameters" "its parameter file, filled in"
need_file --importkey-config "$importkey" "the importkeyconfig.json to complete"
[ -z "$fragments" ] || need_file --fragments-json "$fragments" "import statements from gen-import.sh"
need_node

# acipolicygen pulls the images the parameters name: placeholders must be gone first.
json_edit "$parameters" /dev/null '
  const p = j.parameters || {};
  const left = Object.keys(p).filter((k) => k !== "ccePolicy" && /<[^>]*>/.test(JSON.stringify(p[k].value ?? "")));
  if (left.length) throw new Error(`fill in the placeholders first: ${left.join(", ")}`);
'
need_confcom

mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -z "$tarmap" ] || tar_map "$tarmap" "$out/tarmap.json"
gen_template="$out/$(basename "$template")"
gen_parameters="$out/$(basename "$template" .json).parameters.json"
json_edit "$template" "$gen_template" '
  const groups = (j.resources || []).filter((r) => r.type === "Microsoft.ContainerInstance/containerGroups");
  if (groups.length !== 1) throw new Error(`expected one Microsoft.ContainerInstance/containerGroups resource, found ${groups.length}`);
  groups[0].properties.confidentialComputeProperties = { ccePolicy: "" };
'

args=(confcom acipolicygen -a "$gen_template" -p "$(abspath "$parameters")")
[ -z "$tarmap" ] || args+=(--tar "$out/tarmap.json")
[ -z "$fragments" ] || args+=(--include-fragments --fragments-json "$(abspath "$fragments")")
[ -z "$debug" ] || args+=(--debug-mode)
echo "az ${args[*]}" >&2
printed=$(az "${args[@]}" </dev/null) || die "az confcom acipolicygen failed (see above)"
# acipolicygen prints the policy's sha256 on its own line (older versions print nothing useful).
az_digest=$(printf '%s\n' "$printed" | grep -E '^[0-9a-f]{64}$' | tail -n 1 || true)
[ -z "$az_digest" ] || echo "acipolicygen sha256: $az_digest" >&2

policy_file="$out/ccepolicy.b64"
json_edit "$gen_template" /dev/null '
  const g = j.resources.find((r) => r.type === "Microsoft.ContainerInstance/containerGroups");
  const p = g.properties.confidentialComputeProperties && g.properties.confidentialComputeProperties.ccePolicy;
  if (typeof p !== "string" || p === "" || p.startsWith("[")) throw new Error("acipolicygen did not inject a ccePolicy");
  require("fs").writeFileSync(args[0], p);
' "$policy_file"
if ! check_policy_layers "$policy_file" base64; then
  rm -f "$policy_file" "$gen_template" # nothing deployable is left of a refused policy
  die "refusing this policy (see above); not writing a release config"
fi

hostdata=$(skr policy digest "$policy_file") || die "skr policy digest failed on $policy_file"
[[ "$hostdata" =~ ^[0-9a-f]{64}$ ]] || die "skr policy digest printed \"$hostdata\", not a sha256"
if [ -n "$az_digest" ] && [ "$az_digest" != "$hostdata" ]; then
  die "digest mismatch: acipolicygen printed $az_digest but the injected policy hashes to $hostdata; not writing a release config"
fi
[ -n "$az_digest" ] || echo "$(basename "$0"): acipolicygen printed no sha256 (old confcom?); using skr policy digest only" >&2

json_edit "$parameters" "$gen_parameters" '
  j.parameters = j.parameters || {};
  j.parameters.ccePolicy = { value: require("fs").readFileSync(args[0], "utf8") };
' "$policy_file"

json_edit "$importkey" "$out/importkeyconfig.json" '
  const [hostdata, paramsFile, kid, kty, maa, akv] = args;
  const p = JSON.parse(require("fs").readFileSync(paramsFile, "utf8")).parameters || {};
  const host = (s) => String(s).replace(/^https:\/\//, "").replace(/\/+$/, "");
  const from = (flag, name) => flag || (p[name] && p[name].value !== undefined ? String(p[name].value) : undefined);
  j.key = j.key || {};
  j.key.authority = j.key.authority || {};
  j.key.akv = j.key.akv || {};
  const k = from(kid, "keyName"); if (k) j.key.kid = k;
  if (kty) j.key.kty = kty;
  const m = from(maa, "maaEndpoint"); if (m) j.key.authority.endpoint = host(m);
  const a = from(akv, "vaultEndpoint"); if (a) j.key.akv.endpoint = host(a);
  // As Key Vault enforces it: symmetric keys live in Managed HSM only.
  if (j.key.kty === "oct-HSM" && /\.vault\./i.test(String(j.key.akv.endpoint || ""))) {
    throw new Error("oct-HSM keys live in Managed HSM only (<name>.managedhsm.azure.net); a Key Vault takes RSA-HSM or EC-HSM");
  }
  const claim = { claim: "x-ms-sevsnpvm-hostdata", equals: hostdata };
  if (!Array.isArray(j.claims) || j.claims.length === 0) j.claims = [[]];
  for (const group of j.claims) {
    if (!Array.isArray(group)) throw new Error("claims must be an array of arrays of {claim, equals}");
    const i = group.findIndex((c) => c && c.claim === "x-ms-sevsnpvm-hostdata");
    if (i >= 0) group[i] = claim; else group.unshift(claim);
  }
' "$hostdata" "$parameters" "$kid" "$kty" "$maa" "$akv"

echo "$hostdata" > "$out/hostdata.txt"
echo "policy:            $policy_file ($([ -n "$fragments" ] && echo "with fragments from $fragments" || echo "no fragments")$([ -n "$debug" ] && echo ", DEBUG MODE"))"
echo "template (policy): $gen_template (holds the policy: deploy it; az confcom acipolicygen -a it --print-existing-policy / --diff)"
echo "parameters:        $gen_parameters"
echo "importkey config:  $out/importkeyconfig.json"
echo "x-ms-sevsnpvm-hostdata: $hostdata"
