/** A throwaway three-level RSA signer chain shaped like the real UVM endorsement chain, for tests. */
import { generateKeyPairSync, KeyObject } from 'node:crypto';
import { basicConstraints, buildCertificate, extKeyUsage, keyUsage, subjectNameOf, DistinguishedName, Extension } from '../../src/asn1/x509';
import { UVM_SIGNING_EKU } from '../../src/cose/uvm-endorsement';

export interface TestCert {
  der: Buffer;
  key: KeyObject;
}

const YEAR = 365 * 86_400_000;

function rsa(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('rsa', { modulusLength: 2048 });
}

export function issue(
  subject: DistinguishedName,
  issuer: TestCert | undefined,
  extensions: Extension[],
  validity: { notBefore?: Date; notAfter?: Date } = {},
): TestCert {
  const { privateKey, publicKey } = rsa();
  const der = buildCertificate({
    subject,
    issuer: issuer ? subjectNameOf(issuer.der) : subject,
    serialNumber: BigInt(Math.floor(Math.random() * 1e9) + 1),
    notBefore: validity.notBefore ?? new Date(Date.UTC(2022, 0, 1)),
    notAfter: validity.notAfter ?? new Date(Date.UTC(2022, 0, 1) + 30 * YEAR),
    subjectPublicKey: publicKey,
    issuerPrivateKey: issuer ? issuer.key : privateKey,
    signatureAlgorithm: 'rsa-pss-sha384',
    extensions,
  });
  return { der, key: privateKey };
}

export const caExts = (): Extension[] => [basicConstraints(true), keyUsage(['keyCertSign', 'cRLSign'])];
export const leafExts = (ekus: string[] = ['1.3.6.1.4.1.311.76.59.1.1', UVM_SIGNING_EKU]): Extension[] => [
  basicConstraints(false),
  keyUsage(['digitalSignature']),
  extKeyUsage(ekus),
];

/** root → intermediate → leaf (ContainerPlat-like EKUs). */
export function makeChain(): { root: TestCert; intermediate: TestCert; leaf: TestCert } {
  const root = issue([['C', 'US'], ['O', 'Test'], ['CN', 'Test Supply Chain Root']], undefined, caExts());
  const intermediate = issue([['C', 'US'], ['O', 'Test'], ['CN', 'Test SCD Products CA']], root, caExts());
  const leaf = issue([['C', 'US'], ['O', 'Test'], ['CN', 'ContainerPlat']], intermediate, leafExts(), {
    notBefore: new Date(Date.UTC(2023, 0, 5)),
    notAfter: new Date(Date.UTC(2024, 0, 3)),
  });
  return { root, intermediate, leaf };
}
