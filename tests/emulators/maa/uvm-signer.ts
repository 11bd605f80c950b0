/** A throwaway root → intermediate → ContainerPlat-like leaf RSA chain for issuing test UVM endorsements. */
import { createHash, generateKeyPairSync, KeyObject } from 'node:crypto';
import { basicConstraints, buildCertificate, DistinguishedName, Extension, extKeyUsage, keyUsage, subjectNameOf } from '../../../src/asn1/x509';
import { issueUvmEndorsement, UVM_SIGNING_EKU } from '../../../src/cose/uvm-endorsement';

interface Cert {
  der: Buffer;
  key: KeyObject;
}

function issue(subject: DistinguishedName, issuer: Cert | undefined, extensions: Extension[]): Cert {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const now = Date.now();
  const der = buildCertificate({
    subject,
    issuer: issuer ? subjectNameOf(issuer.der) : subject,
    serialNumber: BigInt(1 + Math.floor(Math.random() * 1e9)),
    notBefore: new Date(now - 86_400_000),
    notAfter: new Date(now + 365 * 86_400_000),
    subjectPublicKey: publicKey,
    issuerPrivateKey: issuer ? issuer.key : privateKey,
    signatureAlgorithm: 'rsa-pss-sha384',
    extensions,
  });
  return { der, key: privateKey };
}

export interface UvmSigner {
  rootSha256: string;
  /** Base64 COSE_Sign1 endorsing `measurement`. */
  endorse(measurement: Buffer, guestSvn?: number): string;
}

export function makeUvmSigner(name = 'MAA emulator test'): UvmSigner {
  const ca = (): Extension[] => [basicConstraints(true), keyUsage(['keyCertSign', 'cRLSign'])];
  const root = issue([['O', name], ['CN', `${name} UVM root`]], undefined, ca());
  const intermediate = issue([['O', name], ['CN', `${name} UVM CA`]], root, ca());
  const leaf = issue([['O', name], ['CN', 'ContainerPlat']], intermediate, [
    basicConstraints(false),
    keyUsage(['digitalSignature']),
    extKeyUsage([UVM_SIGNING_EKU]),
  ]);
  return {
    rootSha256: createHash('sha256').update(root.der).digest('hex'),
    endorse: (measurement, guestSvn = 2) =>
      issueUvmEndorsement({
        launchMeasurement: measurement.toString('hex'),
        guestSvn,
        signerKey: leaf.key,
        chainDer: [leaf.der, intermediate.der, root.der],
      }).toString('base64'),
  };
}
