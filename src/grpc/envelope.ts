/**
 * The JSON the key provider protocol carries inside its one `bytes` field, as containers/ocicrypt's
 * Go client marshals it (keywrap/keyprovider): `op`, `keywrapparams {ec, optsdata}`,
 * `keyunwrapparams {dc, annotation}`; Go's nil as `null`, `[][]byte` and `[]byte` as standard
 * base64 strings, config maps under `Parameters`. And the annotation packet the reference sidecar
 * writes (`{kid, wrapped_data, iv, wrap_type, kms_endpoint, attester_endpoint}`).
 *
 * Everything here is caller input: each field is checked for type and size, a message names the
 * field (never more than a clipped piece of its value), and Confidential Containers' KBS packets
 * are recognised and refused with what this provider does instead.
 */
import { quote } from '../common/clip';
import { InvalidInputError } from '../common/errors';
import { jsonDepthExceeds } from '../server/limits';

/** `attestation-agent` parameter value that selects this provider (the reference's, case-insensitive). */
export const ATTESTATION_AGENT = 'skr';
/** The annotation's wrap_type the reference writes (whatever the RSA key's size). */
export const WRAP_TYPE = 'rsa_3072';
/** Longest RSA ciphertext accepted: an 8192-bit modulus. */
export const MAX_WRAPPED_BYTES = 1024;
/** Layer options (ocicrypt's JSON with the symmetric key) are small; more is not a layer's. */
export const MAX_OPTSDATA_BYTES = 4096;
const MAX_JSON_DEPTH = 16;

function bad(message: string): InvalidInputError {
  return new InvalidInputError('ERR_KEY_PROVIDER_INPUT', message);
}

function badPacket(message: string): InvalidInputError {
  return new InvalidInputError('ERR_ANNOTATION', message);
}

const STD_B64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Standard base64 with padding, as Go's encoding/json writes and reads []byte; undefined otherwise. */
export function decodeStdBase64(s: string): Buffer | undefined {
  if (s.length % 4 !== 0 || !STD_B64.test(s)) return undefined;
  const buf = Buffer.from(s, 'base64');
  return buf.toString('base64') === s ? buf : undefined;
}

const B64_CHARS = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/');

/** Standard base64 of secret bytes straight into a Buffer (no immutable string copy to outlive a wipe). */
export function base64Bytes(src: Uint8Array): Buffer {
  const out = Buffer.alloc(Math.ceil(src.length / 3) * 4);
  let o = 0;
  for (let i = 0; i < src.length; i += 3) {
    const n = (src[i] << 16) | ((src[i + 1] ?? 0) << 8) | (src[i + 2] ?? 0);
    out[o++] = B64_CHARS[(n >> 18) & 63];
    out[o++] = B64_CHARS[(n >> 12) & 63];
    out[o++] = i + 1 < src.length ? B64_CHARS[(n >> 6) & 63] : 0x3d;
    out[o++] = i + 2 < src.length ? B64_CHARS[n & 63] : 0x3d;
  }
  return out;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function isObject(v: unknown): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseJson(bytes: Buffer, what: string, err: (m: string) => InvalidInputError): Json {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw err(`${what} is not UTF-8 text`);
  }
  if (jsonDepthExceeds(text, MAX_JSON_DEPTH)) throw err(`${what} nests deeper than ${MAX_JSON_DEPTH} levels`);
  try {
    return JSON.parse(text) as Json;
  } catch {
    throw err(`${what} is not JSON`);
  }
}

/** A `Parameters` map of an ocicrypt EncryptConfig/DecryptConfig: name → list of base64 values. */
function attestationAgentParam(config: Json | undefined, path: string, hint: string): Buffer {
  const field = `${path}.Parameters["attestation-agent"]`;
  if (!isObject(config)) throw bad(`${path} is ${config === undefined ? 'missing' : config === null ? 'null' : 'not an object'}: ${hint}`);
  const params = config.Parameters;
  if (!isObject(params)) throw bad(`${path}.Parameters is ${params === undefined || params === null ? 'missing' : 'not an object'}: ${hint}`);
  const values = params['attestation-agent'];
  if (!Array.isArray(values) || values.length === 0) throw bad(`${field} is missing or empty: ${hint}`);
  const first = values[0];
  if (typeof first !== 'string') throw bad(`${field}[0] is not a base64 string`);
  const bytes = decodeStdBase64(first);
  if (!bytes) throw bad(`${field}[0] is not standard base64`);
  return bytes;
}

/** The envelope's top level, with `op` checked against the method that received it. */
function envelope(input: Buffer, op: 'keywrap' | 'keyunwrap'): Record<string, Json> {
  const v = parseJson(input, 'the key provider input', bad);
  if (!isObject(v)) throw bad('the key provider input is not a JSON object');
  if (v.op !== op) throw bad(`op is ${typeof v.op === 'string' ? quote(v.op, 40) : String(v.op)}; this method takes op "${op}"`);
  return v;
}

/** What UnWrapKey needs from its input: the decoded annotation packet's bytes. */
export function parseUnwrapInput(input: Buffer): Buffer {
  const params = envelope(input, 'keyunwrap').keyunwrapparams;
  if (!isObject(params)) throw bad('keyunwrapparams is missing or not an object');
  const agent = attestationAgentParam(params.dc, 'keyunwrapparams.dc', `set the decryption config's attestation-agent parameter to "${ATTESTATION_AGENT}"`);
  const name = agent.toString('utf8');
  if (name.toLowerCase() !== ATTESTATION_AGENT) {
    throw bad(`attestation agent ${quote(name, 40)} is not this provider's: this key provider answers attestation-agent "${ATTESTATION_AGENT}"`);
  }
  const annotation = params.annotation;
  if (typeof annotation !== 'string' || annotation === '') throw bad('keyunwrapparams.annotation is missing or not a base64 string');
  const packet = decodeStdBase64(annotation);
  if (!packet) throw bad('keyunwrapparams.annotation is not standard base64');
  return packet;
}

export interface AnnotationPacket {
  kid: string;
  wrappedData: Buffer;
  /** Bare host (or https URL) of the Key Vault / Managed HSM. */
  kmsEndpoint: string;
  /** Bare host (or https URL) of the MAA provider. */
  attesterEndpoint: string;
}

const COCO_WRAP_TYPES = new Set(['a256gcm', 'a256ctr']);

function cocoRefusal(why: string): InvalidInputError {
  return badPacket(
    `the annotation packet is a Confidential Containers KBS packet (${why}); this key provider releases keys from Azure Key Vault / Managed HSM: ` +
      `wrap the layer options with "skr wrap" (packet {kid, wrapped_data, wrap_type: "${WRAP_TYPE}", kms_endpoint, attester_endpoint})`,
  );
}

function packetString(p: Record<string, Json>, field: string, required: boolean, maxChars = 300): string | undefined {
  const v = p[field];
  if (v === undefined || v === null) {
    if (required) throw badPacket(`annotation packet: ${field} is missing`);
    return undefined;
  }
  if (typeof v !== 'string') throw badPacket(`annotation packet: ${field} is not a string`);
  if (required && v.trim() === '') throw badPacket(`annotation packet: ${field} is empty`);
  if (v.length > maxChars) throw badPacket(`annotation packet: ${field} is longer than ${maxChars} characters`);
  return v;
}

/** Parse the reference's annotation packet; CoCo's KBS forms are refused by name. */
export function parseAnnotationPacket(bytes: Buffer): AnnotationPacket {
  const p = parseJson(bytes, 'the annotation packet', badPacket);
  if (!isObject(p)) throw badPacket('the annotation packet is not a JSON object');
  if (p.provider !== undefined) throw cocoRefusal('it names a "provider" (packet v2)');
  if (typeof p.kid === 'string' && /^kbs:\/\//i.test(p.kid)) throw cocoRefusal(`kid ${quote(p.kid, 80)} is a KBS resource URI`);
  if (typeof p.wrap_type === 'string' && COCO_WRAP_TYPES.has(p.wrap_type.toLowerCase())) throw cocoRefusal(`wrap_type ${quote(p.wrap_type, 20)}`);
  const kid = packetString(p, 'kid', true) as string;
  const wrapType = packetString(p, 'wrap_type', false, 40);
  if (wrapType !== undefined && wrapType !== '' && !/^rsa_\d{4}$/i.test(wrapType)) {
    throw badPacket(`annotation packet: wrap_type ${quote(wrapType, 40)} is not an RSA wrap type; this provider unwraps "${WRAP_TYPE}" packets (RSA-OAEP-SHA256)`);
  }
  const kmsEndpoint = packetString(p, 'kms_endpoint', true) as string;
  const attesterEndpoint = packetString(p, 'attester_endpoint', true) as string;
  const wrapped = packetString(p, 'wrapped_data', true, Math.ceil(MAX_WRAPPED_BYTES / 3) * 4) as string;
  const wrappedData = decodeStdBase64(wrapped);
  if (!wrappedData || wrappedData.length === 0) throw badPacket('annotation packet: wrapped_data is not standard base64');
  const iv = p.iv;
  if (iv !== undefined && iv !== null && (typeof iv !== 'string' || iv.length > 64 || !decodeStdBase64(iv))) throw badPacket('annotation packet: iv is not a short base64 string');
  return { kid, wrappedData, kmsEndpoint, attesterEndpoint };
}

/** UnWrapKey's answer `{"keyunwrapresults":{"optsdata":"<base64>"}}`, built in a Buffer the caller wipes. */
export function unwrapOutput(optsData: Uint8Array): Buffer {
  const b64 = base64Bytes(optsData);
  try {
    return Buffer.concat([Buffer.from('{"keyunwrapresults":{"optsdata":"'), b64, Buffer.from('"}}')]);
  } finally {
    b64.fill(0);
  }
}

/** What WrapKey needs from its input: the key path after `skr:` and the layer options. */
export function parseWrapInput(input: Buffer): { keyPath: string; optsData: Buffer } {
  const params = envelope(input, 'keywrap').keywrapparams;
  if (!isObject(params)) throw bad('keywrapparams is missing or not an object');
  const agent = attestationAgentParam(params.ec, 'keywrapparams.ec', `set the encryption config's attestation-agent parameter to "${ATTESTATION_AGENT}:<key path>"`).toString('utf8');
  const colon = agent.indexOf(':');
  if (colon < 0 || agent.slice(colon + 1) === '') throw bad(`keywrapparams.ec.Parameters["attestation-agent"] must be "${ATTESTATION_AGENT}:<key path>": the key path is missing`);
  const name = agent.slice(0, colon);
  if (name.toLowerCase() !== ATTESTATION_AGENT) {
    throw bad(`attestation agent ${quote(name, 40)} is not this provider's: this key provider answers attestation-agent "${ATTESTATION_AGENT}:<key path>"`);
  }
  const keyPath = agent.slice(colon + 1);
  if (keyPath.length > 1024 || keyPath.includes('\0')) throw bad('the key path is longer than 1024 characters or holds a NUL');
  const opts = params.optsdata;
  if (typeof opts !== 'string') throw bad('keywrapparams.optsdata is missing or not a base64 string');
  const optsData = decodeStdBase64(opts);
  if (!optsData || optsData.length === 0) throw bad('keywrapparams.optsdata is not standard base64');
  if (optsData.length > MAX_OPTSDATA_BYTES) throw bad(`keywrapparams.optsdata is larger than ${MAX_OPTSDATA_BYTES} bytes`);
  return { keyPath, optsData };
}

/** WrapKey's answer `{"keywrapresults":{"annotation":"<base64 of the packet>"}}`. */
export function wrapOutput(packet: Buffer): Buffer {
  return Buffer.from(JSON.stringify({ keywrapresults: { annotation: packet.toString('base64') } }));
}

/** UnwrapKey's input as ocicrypt marshals it, for our own client (`skr demo`, the bench). */
export function unwrapInput(packet: Buffer, agent: string = ATTESTATION_AGENT): Buffer {
  return Buffer.from(
    JSON.stringify({
      op: 'keyunwrap',
      keywrapparams: { ec: null, optsdata: null },
      keyunwrapparams: { dc: { Parameters: { 'attestation-agent': [Buffer.from(agent).toString('base64')] } }, annotation: packet.toString('base64') },
    }),
  );
}
