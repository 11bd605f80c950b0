/**
 * MAA's encrypted answer to an AzureGuest request (CVM-PROTOCOL §5): `{"token": base64url(JSON)}` with
 *   EncryptedInnerKey  RSAES-PKCS1-v1_5(32-byte AES key) to the TPM ephemeral key (EncKeyPub)
 *   EncryptionParams   {Iv, BlockMode "ChainingModeGCM", BlockPadding "PKCS7", Cipher "AES", KeySizeInBits 256}
 *   AuthenticationData GCM tag
 *   Jwt                AES-256-GCM ciphertext of the JWT, AAD = ASCII "Transport Key"
 * Only the TPM can unwrap the AES key; opening the rest happens here in software.
 */
import { constants, createCipheriv, createDecipheriv, KeyObject, publicEncrypt, randomBytes } from 'node:crypto';
import { decodeBase64Strict, wipe } from '../common/bytes';
import { SkrError } from '../common/errors';

export const TRANSPORT_KEY_AAD = Buffer.from('Transport Key', 'ascii');
/** A JWT is a few KB; MAA's envelope around it cannot be much more. */
export const MAX_ENVELOPE_CHARS = 256 * 1024;

export type EnvelopeStep = 'maa-envelope' | 'maa-envelope-format' | 'maa-envelope-key' | 'maa-envelope-decrypt' | 'maa-envelope-authenticate';

/**
 * The one answer to every envelope that does not open (format, RSA padding, key length, GCM tag, payload).
 * The vTPM key that opens MAA's envelope also decrypts Key Vault's wraps: telling a bad PKCS#1 padding
 * from a wrong key length or a tag mismatch would be a Bleichenbacher oracle for whoever answers as MAA.
 */
export const ENVELOPE_REFUSED = "MAA's answer could not be opened with the vTPM key (malformed, altered, or sealed to another key)";

/** MAA's answer could not be opened. Never carries key material or the ciphertext. → 502 */
export class MaaEnvelopeError extends SkrError {
  readonly step: EnvelopeStep;
  constructor(step: EnvelopeStep, message: string, cause?: unknown) {
    super('ERR_MAA_ENVELOPE', `${step}: ${message}`, { cause });
    this.step = step;
  }
}

export interface Envelope {
  encryptedInnerKey: Buffer;
  iv: Buffer;
  tag: Buffer;
  ciphertext: Buffer;
}

function field(o: Record<string, unknown>, name: string, max: number): Buffer {
  const v = o[name];
  if (typeof v !== 'string' || v.length === 0) throw new MaaEnvelopeError('maa-envelope-format', `"${name}" is missing or not a string`);
  if (v.length > max) throw new MaaEnvelopeError('maa-envelope-format', `"${name}" is longer than ${max} characters`);
  const b = decodeBase64Strict(v);
  if (!b) throw new MaaEnvelopeError('maa-envelope-format', `"${name}" is not base64`);
  return b;
}

/** Parse the `token` field of MAA's answer. */
export function parseEnvelope(token: string): Envelope {
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_ENVELOPE_CHARS) {
    throw new MaaEnvelopeError('maa-envelope-format', `token must be 1..${MAX_ENVELOPE_CHARS} characters`);
  }
  const raw = decodeBase64Strict(token);
  if (!raw) throw new MaaEnvelopeError('maa-envelope-format', 'token is not base64url');
  let j: unknown;
  try {
    j = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
  } catch (e) {
    throw new MaaEnvelopeError('maa-envelope-format', 'token does not decode to JSON (is this an AzureGuest answer?)', e);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new MaaEnvelopeError('maa-envelope-format', 'token is not a JSON object');
  const o = j as Record<string, unknown>;
  const p = o.EncryptionParams;
  if (typeof p !== 'object' || p === null) throw new MaaEnvelopeError('maa-envelope-format', '"EncryptionParams" is missing');
  const params = p as Record<string, unknown>;
  if (params.BlockMode !== 'ChainingModeGCM' || params.Cipher !== 'AES' || params.KeySizeInBits !== 256) {
    throw new MaaEnvelopeError('maa-envelope-format', 'EncryptionParams must be AES, 256 bits, ChainingModeGCM');
  }
  const iv = field(params, 'Iv', 64);
  if (iv.length < 12 || iv.length > 32) throw new MaaEnvelopeError('maa-envelope-format', `IV of ${iv.length} bytes`);
  const tag = field(o, 'AuthenticationData', 64);
  if (tag.length !== 16) throw new MaaEnvelopeError('maa-envelope-format', `GCM tag of ${tag.length} bytes, expected 16`);
  const encryptedInnerKey = field(o, 'EncryptedInnerKey', 1024);
  if (encryptedInnerKey.length !== 256) throw new MaaEnvelopeError('maa-envelope-format', `EncryptedInnerKey is ${encryptedInnerKey.length} bytes, expected 256 (RSA-2048)`);
  const ciphertext = field(o, 'Jwt', MAX_ENVELOPE_CHARS);
  return { encryptedInnerKey, iv, tag, ciphertext };
}

/** What the TPM made of EncryptedInnerKey: the key, or (decryption refused) why, for the debug log only. */
export type InnerKeyResult = { key: Buffer } | { failed: string };

/**
 * Open MAA's answer as one opaque step: `decryptInnerKey` runs the RSA part in the TPM. Whatever fails
 * (the format, the RSA padding, the key's length, the GCM tag, the payload) ends in the same
 * MaaEnvelopeError (step `maa-envelope`, ENVELOPE_REFUSED); a key that did not decrypt to 32 bytes is
 * replaced by a random one, so every failure also takes the same path (the GCM open) to that error.
 * The detail goes to `debug` only. Errors `decryptInnerKey` throws itself (TPM state, transport) pass.
 */
export async function openSealedEnvelope(token: string, decryptInnerKey: (encryptedInnerKey: Buffer) => Promise<InnerKeyResult>, debug?: (detail: string) => void): Promise<string> {
  const refused = (detail: string, cause?: unknown): MaaEnvelopeError => {
    debug?.(detail);
    return new MaaEnvelopeError('maa-envelope', ENVELOPE_REFUSED, cause);
  };
  let env: Envelope;
  try {
    env = parseEnvelope(token);
  } catch (e) {
    if (e instanceof MaaEnvelopeError) throw refused(e.message);
    throw e;
  }
  const r = await decryptInnerKey(env.encryptedInnerKey);
  let key: Buffer;
  let failed: string | undefined;
  if ('failed' in r) {
    failed = r.failed;
    key = randomBytes(32);
  } else if (r.key.length !== 32) {
    failed = `the TPM returned a ${r.key.length}-byte key, expected 32`;
    wipe(r.key);
    key = randomBytes(32);
  } else key = r.key;
  try {
    const jwt = openEnvelopeWithKey(env, key);
    if (failed !== undefined) throw new MaaEnvelopeError('maa-envelope-decrypt', failed);
    return jwt;
  } catch (e) {
    if (e instanceof MaaEnvelopeError) throw refused(failed ?? e.message);
    throw e;
  }
}

/** AES-256-GCM open with AAD "Transport Key"; wipes the key. Returns the compact JWS. */
export function openEnvelopeWithKey(env: Envelope, aesKey: Buffer): string {
  try {
    if (aesKey.length !== 32) throw new MaaEnvelopeError('maa-envelope-decrypt', `the TPM returned a ${aesKey.length}-byte key, expected 32`);
    const d = createDecipheriv('aes-256-gcm', aesKey, env.iv, { authTagLength: 16 });
    d.setAAD(TRANSPORT_KEY_AAD);
    d.setAuthTag(env.tag);
    let plain: Buffer;
    try {
      plain = Buffer.concat([d.update(env.ciphertext), d.final()]);
    } catch (e) {
      throw new MaaEnvelopeError('maa-envelope-authenticate', 'the JWT does not authenticate under the unwrapped key (AES-GCM tag mismatch)', e);
    }
    const jwt = plain.toString('utf8');
    if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(jwt)) throw new MaaEnvelopeError('maa-envelope-format', 'the decrypted payload is not a compact JWS');
    return jwt;
  } finally {
    wipe(aesKey);
  }
}

/** The emulator's side: seal `jwt` to the TPM key exactly as MAA does. */
export function sealEnvelope(jwt: string, encKey: KeyObject): string {
  const aesKey = randomBytes(32);
  const iv = randomBytes(12);
  try {
    const c = createCipheriv('aes-256-gcm', aesKey, iv, { authTagLength: 16 });
    c.setAAD(TRANSPORT_KEY_AAD);
    const ciphertext = Buffer.concat([c.update(jwt, 'utf8'), c.final()]);
    const env = {
      EncryptedInnerKey: publicEncrypt({ key: encKey, padding: constants.RSA_PKCS1_PADDING }, aesKey).toString('base64'),
      EncryptionParams: { Iv: iv.toString('base64'), BlockMode: 'ChainingModeGCM', BlockPadding: 'PKCS7', Cipher: 'AES', KeySizeInBits: 256 },
      AuthenticationData: c.getAuthTag().toString('base64'),
      Jwt: ciphertext.toString('base64'),
    };
    return Buffer.from(JSON.stringify(env), 'utf8').toString('base64url');
  } finally {
    wipe(aesKey);
  }
}
