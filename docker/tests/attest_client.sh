#!/bin/sh
# Attestation test client, a drop-in for the reference image's /tests/skr/attest_client.sh.
#   AttestClientRuntimeData   base64 runtime data (fallback: $1)
#   AttestClientMAAEndpoint   MAA host (fallback: $2). Unset: POST /attest/raw -> raw.out and
#                             /attest/combined -> combined.out. Set: POST /attest/maa -> maatoken.out.
# Loops every 5 s until SIGTERM; see client-lib.sh for SKR_SIDECAR_URL, SKR_OUT_DIR,
# SKR_CLIENT_ITERATIONS and SKR_CLIENT_INTERVAL.
CLIENT=attest_client
. "$(dirname "$0")/client-lib.sh"

if [ -z "${AttestClientRuntimeData:-}" ] && [ $# -ge 1 ]; then AttestClientRuntimeData=$1; fi
if [ -z "${AttestClientMAAEndpoint:-}" ] && [ $# -ge 2 ]; then AttestClientMAAEndpoint=$2; fi
AttestClientRuntimeData=${AttestClientRuntimeData:-}
AttestClientMAAEndpoint=${AttestClientMAAEndpoint:-}
json_safe AttestClientRuntimeData "$AttestClientRuntimeData"
json_safe AttestClientMAAEndpoint "$AttestClientMAAEndpoint"

echo "AttestClientRuntimeData = $AttestClientRuntimeData"
echo "AttestClientMAAEndpoint = $AttestClientMAAEndpoint"
echo "sidecar = $SIDECAR"

round() {
  if [ -z "$AttestClientMAAEndpoint" ]; then
    _r=0
    post /attest/raw "{\"runtime_data\": \"$AttestClientRuntimeData\"}" raw.out || _r=1
    post /attest/combined "{\"runtime_data\": \"$AttestClientRuntimeData\"}" combined.out || _r=1
    return $_r
  fi
  post /attest/maa "{\"maa_endpoint\": \"$AttestClientMAAEndpoint\", \"runtime_data\": \"$AttestClientRuntimeData\"}" maatoken.out
}

loop round
