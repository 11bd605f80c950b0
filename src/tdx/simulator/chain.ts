/**
 * TEST ONLY: the simulated Intel attestation hierarchy of the TDX simulator (root CA → PCK platform CA →
 * PCK certificate, ECDSA P-256 like Intel's), from the committed keys in ./test-only-keys.ts. The root
 * certificate is committed (ECDSA signatures are randomised) so it has one fingerprint in every process
 * and the MAA emulator / `skr report verify --trust-simulator` can trust it explicitly. Production code
 * never trusts it: src/tdx/roots.ts pins Intel's real root only.
 * Regenerate TEST_ONLY_INTEL_ROOT_PEM only if the root key or mintIntelRoot() change (pemOf(mintIntelRoot())).
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { der } from '../../asn1/der';
import { authorityKeyIdentifier, basicConstraints, buildCertificate, keyUsage, pemOf, rawExtension, subjectKeyIdentifier, subjectNameOf, type DistinguishedName, type Extension } from '../../asn1/x509';
import { SGX_EXTENSIONS_OID } from '../pck';
import { TEST_ONLY_INTEL_PCA_KEY_PEM, TEST_ONLY_INTEL_PCK_KEY_PEM, TEST_ONLY_INTEL_ROOT_KEY_PEM } from './test-only-keys';

const O = 'skr-sidecar SIMULATED (test only)';
const name = (cn: string): DistinguishedName => [
  ['CN', cn],
  ['O', O],
  ['L', 'Santa Clara'],
  ['ST', 'CA'],
  ['C', 'US'],
];
export const NOT_BEFORE = new Date('2024-01-01T00:00:00Z');
export const NOT_AFTER = new Date('2049-12-31T23:59:59Z');
export const simulatedIntelName = name;

/** The simulated platform as its PCK certificate describes it (what simulated TCB info is minted for). */
export const SIMULATED_PCK_PLATFORM = {
  fmspc: '00806f050000',
  pceId: '0000',
  sgxComponents: [7, 7, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0],
  pceSvn: 13,
} as const;

/** Intel's SGX extension of a PCK certificate: PPID, TCB (16 components, PCESVN, CPUSVN), PCE id, FMSPC, SGX type. */
function sgxExtension(): Extension {
  const p = SIMULATED_PCK_PLATFORM;
  const o = (n: string) => der.oid(`${SGX_EXTENSIONS_OID}.${n}`);
  const tcb = der.seq(
    ...p.sgxComponents.map((v, i) => der.seq(o(`2.${i + 1}`), der.int(v))),
    der.seq(o('2.17'), der.int(p.pceSvn)),
    der.seq(o('2.18'), der.octets(Buffer.from(p.sgxComponents))),
  );
  return rawExtension(SGX_EXTENSIONS_OID, false, der.seq(
    der.seq(o('1'), der.octets(Buffer.alloc(16, 0x5e))),
    der.seq(o('2'), tcb),
    der.seq(o('3'), der.octets(Buffer.from(p.pceId, 'hex'))),
    der.seq(o('4'), der.octets(Buffer.from(p.fmspc, 'hex'))),
  ));
}

export const simulatedIntelKeys = (): { root: KeyObject; pca: KeyObject; pck: KeyObject } => ({
  root: createPrivateKey(TEST_ONLY_INTEL_ROOT_KEY_PEM),
  pca: createPrivateKey(TEST_ONLY_INTEL_PCA_KEY_PEM),
  pck: createPrivateKey(TEST_ONLY_INTEL_PCK_KEY_PEM),
});

/** The self-signed simulated root (what TEST_ONLY_INTEL_ROOT_PEM holds). */
export function mintIntelRoot(rootKey: KeyObject): Buffer {
  const pub = createPublicKey(rootKey);
  const n = name('SIMULATED Intel SGX Root CA (test only)');
  return buildCertificate({
    subject: n,
    issuer: n,
    serialNumber: 0x5e1f00n,
    notBefore: NOT_BEFORE,
    notAfter: NOT_AFTER,
    subjectPublicKey: pub,
    issuerPrivateKey: rootKey,
    signatureAlgorithm: 'ecdsa-sha256',
    extensions: [basicConstraints(true, 1), keyUsage(['keyCertSign', 'cRLSign']), subjectKeyIdentifier(pub)],
  });
}

export const TEST_ONLY_INTEL_ROOT_PEM = `-----BEGIN CERTIFICATE-----
MIICVDCCAfqgAwIBAgIDXh8AMAoGCCqGSM49BAMCMIGOMTAwLgYDVQQDDCdTSU1V
TEFURUQgSW50ZWwgU0dYIFJvb3QgQ0EgKHRlc3Qgb25seSkxKjAoBgNVBAoMIXNr
ci1zaWRlY2FyIFNJTVVMQVRFRCAodGVzdCBvbmx5KTEUMBIGA1UEBwwLU2FudGEg
Q2xhcmExCzAJBgNVBAgMAkNBMQswCQYDVQQGEwJVUzAeFw0yNDAxMDEwMDAwMDBa
Fw00OTEyMzEyMzU5NTlaMIGOMTAwLgYDVQQDDCdTSU1VTEFURUQgSW50ZWwgU0dY
IFJvb3QgQ0EgKHRlc3Qgb25seSkxKjAoBgNVBAoMIXNrci1zaWRlY2FyIFNJTVVM
QVRFRCAodGVzdCBvbmx5KTEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgM
AkNBMQswCQYDVQQGEwJVUzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABKOXQzv2
wGIYun2O/n+XHxfsdT0BzxHzVkeOton3E49NrtUBtQFZObTsw1IOOBzJ4hBnoqaG
BvaUWDBs5MhtxjijRTBDMBIGA1UdEwEB/wQIMAYBAf8CAQEwDgYDVR0PAQH/BAQD
AgEGMB0GA1UdDgQWBBR64Ol+4RnNzuvxA3ZNywJQB/DKqzAKBggqhkjOPQQDAgNI
ADBFAiEAkvqmvFOHAZ8Qq5nJPaEl3b7nwFfX7LEPTy3fhKdlYK8CIHPqp9gP7zu0
eXBnP+RGvUAIbgmOLTNvOMwgYK0O7UHm
-----END CERTIFICATE-----
`;

let cached: string | undefined;

/** PCK ‖ PCK platform CA ‖ root as PEM (certification data type 5), minted once per process. */
export function simulatedPckChainPem(): string {
  if (cached) return cached;
  const k = simulatedIntelKeys();
  const rootDer = Buffer.from(TEST_ONLY_INTEL_ROOT_PEM.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  const pcaPub = createPublicKey(k.pca);
  const pckPub = createPublicKey(k.pck);
  const rootPub = createPublicKey(k.root);
  const pcaDer = buildCertificate({
    subject: name('SIMULATED Intel SGX PCK Platform CA (test only)'),
    issuer: subjectNameOf(rootDer),
    serialNumber: 0x5e1f01n,
    notBefore: NOT_BEFORE,
    notAfter: NOT_AFTER,
    subjectPublicKey: pcaPub,
    issuerPrivateKey: k.root,
    signatureAlgorithm: 'ecdsa-sha256',
    extensions: [basicConstraints(true, 0), keyUsage(['keyCertSign', 'cRLSign']), subjectKeyIdentifier(pcaPub), authorityKeyIdentifier(rootPub)],
  });
  const pckDer = buildCertificate({
    subject: name('SIMULATED Intel SGX PCK Certificate (test only)'),
    issuer: subjectNameOf(pcaDer),
    serialNumber: 0x5e1f02n,
    notBefore: NOT_BEFORE,
    notAfter: NOT_AFTER,
    subjectPublicKey: pckPub,
    issuerPrivateKey: k.pca,
    signatureAlgorithm: 'ecdsa-sha256',
    extensions: [keyUsage(['digitalSignature', 'nonRepudiation']), authorityKeyIdentifier(pcaPub), sgxExtension()],
  });
  cached = pemOf(pckDer) + pemOf(pcaDer) + TEST_ONLY_INTEL_ROOT_PEM;
  return cached;
}
