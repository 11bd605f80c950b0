/**
 * !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
 * TEST-ONLY PRIVATE KEYS. PUBLIC ON PURPOSE. THEY PROTECT NOTHING.
 *
 * Signing keys of the SIMULATED Intel TDX attestation hierarchy (root CA, PCK platform CA, PCK). Committed
 * so simulated TD quotes chain to one stable root in every process. A verifier must NEVER trust a chain
 * rooted in them outside tests and local development: real deployments pin Intel's SGX Root CA
 * (src/tdx/roots.ts). Their certificates say "skr-sidecar SIMULATED (test only)".
 *
 *   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256      (each)
 * !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
 */

/** TEST ONLY: P-256 key of the simulated Intel root. */
export const TEST_ONLY_INTEL_ROOT_KEY_PEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgx1ZOJj4dWnMlcbh5
DGSjOgMmnK5sbmhEaw5xNUvkE4yhRANCAASjl0M79sBiGLp9jv5/lx8X7HU9Ac8R
81ZHjraJ9xOPTa7VAbUBWTm07MNSDjgcyeIQZ6Kmhgb2lFgwbOTIbcY4
-----END PRIVATE KEY-----
`;

/** TEST ONLY: P-256 key of the simulated Intel pca. */
export const TEST_ONLY_INTEL_PCA_KEY_PEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgl7B8l0msIoqPlRxQ
GmkCLfd9Oz2VFGYGbXLJvNoCuEKhRANCAAQy2SkjteIiT09I22cfjsGio70VKqZH
66sXMIKaoPkP6oY2ZY+9PDOmiyavw9mT6d/YfbyXVMOpsGiElIgEZdpW
-----END PRIVATE KEY-----
`;

/** TEST ONLY: P-256 key of the simulated Intel pck. */
export const TEST_ONLY_INTEL_PCK_KEY_PEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgvu9UfHR4gv2ebMHj
2O2jqK7aKO6s+NwBg+r/7qoogAShRANCAAT4R836cucZ5qDPaDz+9FYBXVBEQ+Ri
6CtP1qvxz9zO2KKPiTvEVbvFvsdVgbog4IgtBdduyj7ctn4qTHRXxbp1
-----END PRIVATE KEY-----
`;
