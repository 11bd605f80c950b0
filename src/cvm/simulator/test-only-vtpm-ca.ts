/**
 * TEST ONLY: a local stand-in for Azure's vTPM CA, which issues the AK certificate Azure stores in NV
 * 0x01C101D0. Its key is generated per process (never committed, never trusted unless a verifier is told
 * to) and every name says "SIMULATED (test only)" so a simulated AK certificate cannot pass for Azure's.
 */
import { generateKeyPairSync, KeyObject } from 'node:crypto';
import { basicConstraints, buildCertificate, keyUsage, pemOf, subjectKeyIdentifier, authorityKeyIdentifier, randomSerial } from '../../asn1/x509';

const DAY_MS = 86_400_000;
const O = 'skr-sidecar SIMULATED (test only)';

export interface TestOnlyVtpmCa {
  certDer: Buffer;
  certPem: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}


export function createTestOnlyVtpmCa(now: Date = new Date()): TestOnlyVtpmCa {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const name = [['O', O], ['CN', 'SIMULATED Azure Virtual TPM Root CA (test only)']] as const;
  const certDer = buildCertificate({
    subject: name,
    issuer: name,
    serialNumber: randomSerial(),
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + 3650 * DAY_MS),
    subjectPublicKey: publicKey,
    issuerPrivateKey: privateKey,
    signatureAlgorithm: 'rsa-sha256',
    extensions: [basicConstraints(true, 0), keyUsage(['keyCertSign', 'cRLSign']), subjectKeyIdentifier(publicKey)],
  });
  return { certDer, certPem: pemOf(certDer), privateKey, publicKey };
}

/** The AK certificate for `akPublic` (RSA), as Azure issues one per VM. */
export function issueTestOnlyAkCertificate(ca: TestOnlyVtpmCa, akPublic: KeyObject, vmId: string, now: Date = new Date()): Buffer {
  return buildCertificate({
    subject: [['O', O], ['CN', `SIMULATED vTPM AK ${vmId} (test only)`]],
    issuer: [['O', O], ['CN', 'SIMULATED Azure Virtual TPM Root CA (test only)']],
    serialNumber: randomSerial(),
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + 365 * DAY_MS),
    subjectPublicKey: akPublic,
    issuerPrivateKey: ca.privateKey,
    signatureAlgorithm: 'rsa-sha256',
    extensions: [basicConstraints(false), keyUsage(['digitalSignature']), authorityKeyIdentifier(ca.publicKey)],
  });
}
