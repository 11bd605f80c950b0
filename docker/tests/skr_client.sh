#!/bin/sh
# Key release test client, a drop-in for the reference image's /tests/skr/skr_client.sh.
#   SkrClientMAAEndpoint   MAA host (fallback: $1)
#   SkrClientAKVEndpoint   Key Vault / Managed HSM host (fallback: $2)
#   SkrClientKID           key name, or name/version (fallback: $3)
# POSTs /key/release every 5 s until SIGTERM and writes the answer to keyrelease.out. Unlike the
# reference it does not print the released key to the log (only its size); read the file instead.
# See client-lib.sh for SKR_SIDECAR_URL, SKR_OUT_DIR, SKR_CLIENT_ITERATIONS and SKR_CLIENT_INTERVAL.
CLIENT=skr_client
. "$(dirname "$0")/client-lib.sh"

if [ -z "${SkrClientMAAEndpoint:-}" ] && [ $# -ge 1 ]; then SkrClientMAAEndpoint=$1; fi
if [ -z "${SkrClientAKVEndpoint:-}" ] && [ $# -ge 2 ]; then SkrClientAKVEndpoint=$2; fi
if [ -z "${SkrClientKID:-}" ] && [ $# -ge 3 ]; then SkrClientKID=$3; fi
SkrClientMAAEndpoint=${SkrClientMAAEndpoint:-}
SkrClientAKVEndpoint=${SkrClientAKVEndpoint:-}
SkrClientKID=${SkrClientKID:-}
json_safe SkrClientMAAEndpoint "$SkrClientMAAEndpoint"
json_safe SkrClientAKVEndpoint "$SkrClientAKVEndpoint"
json_safe SkrClientKID "$SkrClientKID"

echo "SkrClientMAAEndpoint = $SkrClientMAAEndpoint"
echo "SkrClientAKVEndpoint = $SkrClientAKVEndpoint"
echo "SkrClientKID = $SkrClientKID"
echo "sidecar = $SIDECAR"

round() {
  post /key/release "{\"maa_endpoint\": \"$SkrClientMAAEndpoint\", \"akv_endpoint\": \"$SkrClientAKVEndpoint\", \"kid\": \"$SkrClientKID\"}" keyrelease.out
}

loop round
