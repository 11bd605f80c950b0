#!/usr/bin/env bash
# Write the import statement for an image-attached fragment (--image) or a signed fragment file
# (--fragment NS.rego.cose from gen-fragment.sh) into fragments.json:
#   az confcom acifragmentgen --generate-import --image IMAGE|--fragment-path FILE --fragments-json F --minimum-svn N
# (appends to F when it exists). gen-policy.sh --fragments-json F then includes it in the group policy.
USAGE="gen-import.sh --image REGISTRY/IMAGE:TAG|--fragment NS.rego.cose [--minimum-svn 1] [--fragments-json fragments/out/fragments.json]"
. "$(dirname "$0")/lib.sh"

image= fragment= minsvn=1 fragments="$FRAGMENTS_DIR/out/fragments.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=${2:-}; shift 2 ;;
    --fragment) fragment=${2:-}; shift 2 ;;
    --minimum-svn) minsvn=${2:-}; shift 2 ;;
    --fragments-json) fragments=${2:-}; shift 2 ;;
    -h|--help) echo "usage: $USAGE"; exit 0 ;;
    *) usage_error "unknown argument \"$1\"" ;;
  esac
done
[ -n "$image" ] || [ -n "$fragment" ] || usage_error "--image or --fragment is required: the image the signed fragment is attached to, or the signed fragment file"
[ -z "$image" ] || [ -z "$fragment" ] || usage_error "give --image or --fragment, not both"
[ -z "$fragment" ] || need_file --fragment "$fragment" "the signed fragment, NS.rego.cose from gen-fragment.sh"
case "$image" in *'<'*|*'>'*) usage_error "--image \"$image\" is still a placeholder" ;; esac
case "$minsvn" in ''|*[!0-9]*) usage_error "--minimum-svn \"$minsvn\" is not a whole number" ;; esac
[ -n "$fragments" ] || usage_error "--fragments-json needs a path"
need_node
need_confcom

mkdir -p "$(dirname "$fragments")"
if [ -n "$fragment" ]; then
  az confcom acifragmentgen --generate-import --fragment-path "$(abspath "$fragment")" --fragments-json "$fragments" --minimum-svn "$minsvn" ||
    die "az confcom acifragmentgen --generate-import failed on $fragment (see above)"
else
  az confcom acifragmentgen --generate-import --image "$image" --fragments-json "$fragments" --minimum-svn "$minsvn" ||
    die "az confcom acifragmentgen --generate-import failed (see above); was the fragment uploaded (gen-fragment.sh --upload)?"
fi
json_edit "$fragments" /dev/null '
  if (!Array.isArray(j.fragments) || j.fragments.length === 0) throw new Error("no fragments[] import statement was written");
  for (const f of j.fragments) for (const k of ["feed", "issuer", "minimum_svn"]) if (!f[k]) throw new Error(`import statement lacks ${k}${k === "feed" ? " (the fragment was signed without a feed: regenerate it with gen-fragment.sh)" : ""}`);
'
echo "import statements: $fragments"
