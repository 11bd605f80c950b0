/**
 * The key templates of the Azure CVM protocol (CVM-PROTOCOL §2, §4.3) and the PolicyPCR digest the
 * ephemeral key is bound to, computed in software exactly as a trial session would.
 */
import { createHash } from 'node:crypto';
import { TPM_ALG, TPM_CC, TPMA_OBJECT } from './constants';
import { pcrSelectionBytes, PcrSelection, RsaPublicArea } from './structures';

/** PCR 0–7 of the SHA-256 bank: what the ephemeral key's policy and the quote cover. */
export const PCRS_0_7: PcrSelection = { hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7] };

/** decrypt | fixedTPM | fixedParent | sensitiveDataOrigin | noDA = 0x00020432 (no userWithAuth: policy only). */
export const EPHEMERAL_KEY_ATTRIBUTES =
  TPMA_OBJECT.decrypt | TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.noDA;

/** The AK Azure provisions at 0x81000003: restricted RSASSA-SHA256 signing key, empty password. */
export const AK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.userWithAuth |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.sign |
  TPMA_OBJECT.noDA;

/**
 * SHA256(0^32 || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || SHA256(PCR values in selection order)):
 * the policy digest after one PolicyPCR in a fresh session.
 */
export function policyPcrDigest(selection: PcrSelection, values: readonly Buffer[]): Buffer {
  const pcrDigest = createHash('sha256');
  for (const v of values) pcrDigest.update(v);
  const cc = Buffer.alloc(4);
  cc.writeUInt32BE(TPM_CC.PolicyPCR);
  return createHash('sha256')
    .update(Buffer.alloc(32))
    .update(cc)
    .update(pcrSelectionBytes([selection]))
    .update(pcrDigest.digest())
    .digest();
}

/**
 * The ephemeral "TpmEphemeralEncryptionKey" template of Microsoft's C++ client: RSA-2048, scheme NULL
 * (the caller picks RSAES or OAEP per decrypt), unique = 256 zero bytes, bound to `authPolicy`.
 */
export function ephemeralKeyTemplate(authPolicy: Buffer): RsaPublicArea {
  return {
    type: TPM_ALG.RSA,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: EPHEMERAL_KEY_ATTRIBUTES,
    authPolicy,
    symmetric: { algorithm: TPM_ALG.NULL },
    scheme: { scheme: TPM_ALG.NULL },
    keyBits: 2048,
    exponent: 0,
    unique: Buffer.alloc(256),
  };
}

/** An attestation key like Azure's vTPM AK (used by the simulated CVM provisioning). */
export function akTemplate(): RsaPublicArea {
  return {
    type: TPM_ALG.RSA,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: AK_ATTRIBUTES,
    authPolicy: Buffer.alloc(0),
    symmetric: { algorithm: TPM_ALG.NULL },
    scheme: { scheme: TPM_ALG.RSASSA, hashAlg: TPM_ALG.SHA256 },
    keyBits: 2048,
    exponent: 0,
    unique: Buffer.alloc(0),
  };
}
