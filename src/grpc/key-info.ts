/**
 * Wrapping layer options to a vault key, as the reference's WrapKey and its `-infile -keypath
 * -outfile` mode do: `<key path>-info.json` ({public_key_path, kms_endpoint, attester_endpoint})
 * names the key's public half and where it is released from; the options are encrypted to it with
 * RSA-OAEP-SHA256 into the annotation packet {kid: basename(key path), wrapped_data, wrap_type,
 * kms_endpoint, attester_endpoint}, serialised as Go's encoding/json writes that struct.
 *
 * Both files are named by the caller: each read is bounded and must be a regular file, and a
 * message names the file and what is wrong, never its content.
 */
import { constants, createPublicKey, publicEncrypt, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidInputError } from '../common/errors';
import { quote } from '../common/clip';
import { WRAP_TYPE } from './envelope';

const MAX_FILE_BYTES = 64 * 1024;

export interface KeyInfo {
  publicKeyPath: string;
  kmsEndpoint: string;
  attesterEndpoint: string;
}

function fail(message: string): InvalidInputError {
  return new InvalidInputError('ERR_WRAP_KEY_INFO', message);
}

function readBounded(file: string, what: string): Buffer {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw fail(`${what} ${quote(file)} is not a regular file`);
    if (st.size > MAX_FILE_BYTES) throw fail(`${what} ${quote(file)} is larger than ${MAX_FILE_BYTES} bytes`);
    const buf = Buffer.alloc(st.size);
    let got = 0;
    while (got < buf.length) {
      const n = fs.readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } catch (e) {
    if (e instanceof InvalidInputError) throw e;
    throw fail(`cannot read ${what} ${quote(file)}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** `<key path>-info.json`, parsed and checked. */
export function readKeyInfo(keyPath: string): KeyInfo {
  const file = `${keyPath}-info.json`;
  const bytes = readBounded(file, 'key info file');
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw fail(`key info file ${quote(file)} is not JSON`);
  }
  const o = (typeof v === 'object' && v !== null && !Array.isArray(v) ? v : {}) as Record<string, unknown>;
  const field = (name: string): string => {
    const s = o[name];
    if (typeof s !== 'string' || s.trim() === '') throw fail(`key info file ${quote(file)}: ${name} is missing or not a string`);
    if (s.length > 1024) throw fail(`key info file ${quote(file)}: ${name} is longer than 1024 characters`);
    return s;
  };
  return { publicKeyPath: field('public_key_path'), kmsEndpoint: field('kms_endpoint'), attesterEndpoint: field('attester_endpoint') };
}

function rsaPublicKey(file: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(readBounded(file, 'public key file'));
  } catch (e) {
    if (e instanceof InvalidInputError) throw e;
    throw fail(`public key file ${quote(file)} holds no PEM public key`);
  }
  if (key.asymmetricKeyType !== 'rsa') throw fail(`public key file ${quote(file)} holds a ${key.asymmetricKeyType ?? 'non-RSA'} key; the key provider wraps to RSA keys`);
  return key;
}

/** Go's encoding/json string escaping: JSON.stringify plus <, >, & and U+2028/2029 as \u escapes. */
function goString(s: string): string {
  return JSON.stringify(s).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The annotation packet (JSON bytes) wrapping `optsData` to the key `keyPath` names. */
export function wrapWithKeyInfo(optsData: Uint8Array, keyPath: string): Buffer {
  const info = readKeyInfo(keyPath);
  return wrapToKey(optsData, { kid: path.posix.basename(keyPath), publicKey: rsaPublicKey(info.publicKeyPath), kmsEndpoint: info.kmsEndpoint, attesterEndpoint: info.attesterEndpoint });
}

/** The annotation packet wrapping `optsData` to an RSA public key, for release of `kid` from `kmsEndpoint`. */
export function wrapToKey(optsData: Uint8Array, to: { kid: string; publicKey: KeyObject; kmsEndpoint: string; attesterEndpoint: string }): Buffer {
  if (to.publicKey.asymmetricKeyType !== 'rsa') throw fail(`the key provider wraps to RSA keys, not ${to.publicKey.asymmetricKeyType ?? 'this key'}`);
  let wrapped: Buffer;
  try {
    wrapped = publicEncrypt({ key: to.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, optsData);
  } catch {
    throw fail(`the layer options (${optsData.length} bytes) do not fit one RSA-OAEP-SHA256 block of the key for ${quote(to.kid)}`);
  }
  // Field order and omissions as the reference's struct marshals (iv is empty, so left out).
  return Buffer.from(
    `{"kid":${goString(to.kid)},"wrapped_data":"${wrapped.toString('base64')}","wrap_type":"${WRAP_TYPE}",` +
      `"kms_endpoint":${goString(to.kmsEndpoint)},"attester_endpoint":${goString(to.attesterEndpoint)}}`,
  );
}
