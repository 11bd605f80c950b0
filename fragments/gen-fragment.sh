#!/usr/bin/env bash
# Generate (and optionally upload) a signed policy fragment for the skr-sidecar container:
#   az confcom acifragmentgen -i fragment_config.json --svn N --namespace NS --key K --chain C
#                             --feed REGISTRY/IMAGE [--tar MAP] [--upload-fragment --image-target IMAGE]
# The feed (the image without its tag or digest) is signed into the fragment and becomes the import
# statement's feed: confcom derives it from --image-target only, so it is passed even without --upload.
# --tar MAP: {"image:tag": "file.tar"}, each made with podman save --format oci-archive (no Docker API).
# The fragment is COSE-signed with --key/--chain (PEM private key + PEM chain, leaf first); relying
# parties trust it by the chain's did:x509 issuer, which gen-import.sh records in fragments.json.
# Outputs in --out: fragment_config.json (with --image filled in), NS.rego, NS.rego.cose.
USAGE="gen-fragment.sh --image REGISTRY/IMAGE:TAG --key KEY.pem --chain CHAIN.pem [--namespace skr_sidecar] [--svn 1] [--tar TARMAP.json] [--upload] [--debug-mode] [--config fragment_config.json] [--out fragments/out]"
. "$(dirname "$0")/lib.sh"

image= key= chain= namespace=skr_sidecar svn=1 tarmap= upload= debug= config="$FRAGMENTS_DIR/fragment_config.json" out="$FRAGMENTS_DIR/out"
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=${2:-}; shift 2 ;;
    --key) key=${2:-}; shift 2 ;;
    --chain) chain=${2:-}; shift 2 ;;
    --namespace) namespace=${2:-}; shift 2 ;;
    --svn) svn=${2:-}; shift 2 ;;
    --tar) tarmap=${2:-}; [ -n "$tarmap" ] || usage_error "--tar needs a mapping file"; shift 2 ;;
    --upload) upload=1; shift ;;
    --debug-mode) debug=1; shift ;;
    --config) config=${2:-}; shift 2 ;;
    --out) out=${2:-}; shift 2 ;;
    -h|--help) echo "usage: $USAGE"; exit 0 ;;
    *) usage_error "unknown argument \"$1\"" ;;
  esac
done

[ -n "$image" ] || usage_error "--image is required: the sidecar image the fragment describes (and is attached to with --upload)"
case "$image" in *'<'*|*'>'*) usage_error "--image \"$image\" is still a placeholder" ;; esac
case "$namespace" in
  [a-z]*) case "$namespace" in *[!a-z0-9_]*) usage_error "--namespace \"$namespace\": use lowercase letters, digits and _ (a Rego package name)" ;; esac ;;
  *) usage_error "--namespace \"$namespace\": use lowercase letters, digits and _ (a Rego package name)" ;;
esac
case "$svn" in ''|*[!0-9]*) usage_error "--svn \"$svn\" is not a whole number" ;; esac
need_file --key "$key" "the PEM private key that signs the fragment"
need_file --chain "$chain" "the PEM certificate chain of that key, leaf first"
need_file --config "$config" "the fragment config"
need_node
need_confcom

key=$(abspath "$key")
chain=$(abspath "$chain")
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -z "$tarmap" ] || tar_map "$tarmap" "$out/tarmap.json"
json_edit "$config" "$out/fragment_config.json" '
  if (!Array.isArray(j.containers) || j.containers.length === 0) throw new Error("no containers[]");
  for (const c of j.containers) c.properties.image = args[0];
' "$image"

# The feed: the image without "@digest" or ":tag" (a tag lives in the last path component; a
# registry may carry a :port).
feed=${image%%@*}
case "${feed##*/}" in *:*) feed=${feed%:*} ;; esac
args=(confcom acifragmentgen -i fragment_config.json --svn "$svn" --namespace "$namespace" --key "$key" --chain "$chain" --feed "$feed")
[ -z "$tarmap" ] || args+=(--tar "$out/tarmap.json")
[ -z "$debug" ] || args+=(--debug-mode)
[ -z "$upload" ] || args+=(--upload-fragment --image-target "$image")
(cd "$out" && az "${args[@]}") || die "az confcom acifragmentgen failed (see above)"

[ -s "$out/$namespace.rego" ] || die "acifragmentgen wrote no $out/$namespace.rego"
[ -s "$out/$namespace.rego.cose" ] || die "acifragmentgen wrote no signed $out/$namespace.rego.cose"
if ! check_policy_layers "$out/$namespace.rego" rego; then
  rm -f "$out/$namespace.rego.cose" # the signed copy could be imported by mistake; the .rego stays to look at
  die "refusing this fragment (see above)$([ -z "$upload" ] || echo "; it was attached to $image already: do not import it, regenerate with --svn $((svn + 1))")"
fi
echo "fragment: $out/$namespace.rego (signed: $out/$namespace.rego.cose)"
if [ -n "$upload" ]; then
  echo "attached to $image; next: gen-import.sh --image $image --minimum-svn $svn"
else
  echo "not uploaded (add --upload to attach it to $image)"
fi
