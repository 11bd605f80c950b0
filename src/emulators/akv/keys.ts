/**
 * Key material for the emulator: generate or import oct/RSA/EC keys, keep them as the bytes a
 * release wraps (raw for oct, PKCS#8 DER for RSA/EC), and derive the public JWK fields an answer
 * may carry. Private parts never leave this module except as release material.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto';
import { badParameter, keyTypeNotSupported } from './errors';

export type Flavour = 'vault' | 'hsm';
export type Kty = 'RSA' | 'RSA-HSM' | 'EC' | 'EC-HSM' | 'oct' | 'oct-HSM';
export type Curve = 'P-256' | 'P-384' | 'P-521' | 'P-256K';

export interface KeyMaterial {
  kty: Kty;
  /** oct: the raw key; RSA/EC: PKCS#8 DER of the private key. */
  material: Buffer;
  keySize?: number;
  crv?: Curve;
}

export const RSA_SIZES: readonly number[] = [2048, 3072, 4096];
export const OCT_SIZES: readonly number[] = [128, 192, 256];
const NODE_CURVES: Record<Curve, string> = { 'P-256': 'prime256v1', 'P-384': 'secp384r1', 'P-521': 'secp521r1', 'P-256K': 'secp256k1' };
/** JOSE names node uses in JWKs (RFC 8812 calls Azure's P-256K `secp256k1`). */
const JWK_CURVES: Record<Curve, string> = { 'P-256': 'P-256', 'P-384': 'P-384', 'P-521': 'P-521', 'P-256K': 'secp256k1' };
const KTYS: readonly Kty[] = ['RSA', 'RSA-HSM', 'EC', 'EC-HSM', 'oct', 'oct-HSM'];

const isKty = (v: unknown): v is Kty => typeof v === 'string' && (KTYS as readonly string[]).includes(v);
const isCurve = (v: unknown): v is Curve => typeof v === 'string' && v in NODE_CURVES;
const baseOf = (kty: Kty): 'RSA' | 'EC' | 'oct' => kty.replace('-HSM', '') as 'RSA' | 'EC' | 'oct';

export function defaultKeyOps(kty: Kty): string[] {
  switch (baseOf(kty)) {
    case 'RSA':
      return ['encrypt', 'decrypt', 'sign', 'verify', 'wrapKey', 'unwrapKey'];
    case 'EC':
      return ['sign', 'verify'];
    default:
      return ['encrypt', 'decrypt', 'wrapKey', 'unwrapKey'];
  }
}

/**
 * Which key types a resource holds (Key Vault's "About keys"): a vault (Premium) holds RSA, EC,
 * RSA-HSM and EC-HSM; Managed HSM holds RSA-HSM, EC-HSM and oct-HSM. Software `oct` keys exist
 * nowhere, and symmetric keys only in Managed HSM: a vault refuses `oct-HSM` with the service's
 * KeyTypeNotSupported error.
 */
export function checkKtyForFlavour(kty: Kty, flavour: Flavour): void {
  if (kty === 'oct' || (kty === 'oct-HSM' && flavour === 'vault')) throw keyTypeNotSupported(kty);
}

function checkCreateKty(kty: unknown, flavour: Flavour): Kty {
  if (!isKty(kty)) throw keyTypeNotSupported(String(kty).slice(0, 64));
  checkKtyForFlavour(kty, flavour);
  if (flavour === 'hsm' && !kty.endsWith('-HSM')) {
    throw badParameter(`Key type '${kty}' is not supported by Managed HSM. Supported key types: RSA-HSM, EC-HSM, oct-HSM.`);
  }
  return kty;
}

/** Secure key release hands out HSM-protected keys only: a software RSA/EC key cannot be exportable. */
export function checkExportableKty(kty: Kty): void {
  if (!kty.endsWith('-HSM')) {
    throw badParameter(`Only HSM-protected keys can be exportable: '${kty}' is a software key (use ${kty}-HSM, or import with Hsm=true).`);
  }
}

export function generateKeyMaterial(
  ktyIn: unknown,
  opts: { keySize?: unknown; crv?: unknown; publicExponent?: unknown },
  flavour: Flavour,
): KeyMaterial {
  const kty = checkCreateKty(ktyIn, flavour);
  const base = baseOf(kty);
  if (base === 'RSA') {
    const size = opts.keySize ?? 2048;
    if (typeof size !== 'number' || !RSA_SIZES.includes(size)) throw badParameter(`Invalid key_size ${String(size)} for ${kty}: use 2048, 3072 or 4096.`);
    if (opts.publicExponent !== undefined && opts.publicExponent !== 65537) throw badParameter('Only public_exponent 65537 is supported.');
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: size, publicExponent: 65537 });
    return { kty, keySize: size, material: privateKey.export({ type: 'pkcs8', format: 'der' }) };
  }
  if (base === 'EC') {
    const crv = opts.crv ?? 'P-256';
    if (!isCurve(crv)) throw badParameter(`Invalid crv '${String(crv)}' for ${kty}: use P-256, P-384, P-521 or P-256K.`);
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: NODE_CURVES[crv] });
    return { kty, crv, material: privateKey.export({ type: 'pkcs8', format: 'der' }) };
  }
  const size = opts.keySize ?? 256;
  if (typeof size !== 'number' || !OCT_SIZES.includes(size)) throw badParameter(`Invalid key_size ${String(size)} for ${kty}: use 128, 192 or 256.`);
  return { kty, keySize: size, material: randomBytes(size / 8) };
}

function b64urlField(jwk: Record<string, unknown>, name: string): Buffer {
  const v = jwk[name];
  if (typeof v !== 'string' || v.length === 0 || !/^[A-Za-z0-9_-]+$/.test(v)) {
    throw badParameter(`The JSON Web Key is missing or has a malformed '${name}' (base64url expected).`);
  }
  return Buffer.from(v, 'base64url');
}

function privateKeyFromJwk(jwk: JsonWebKey, what: string): KeyObject {
  try {
    return createPrivateKey({ key: jwk, format: 'jwk' });
  } catch (err) {
    throw badParameter(`The ${what} key in the JSON Web Key is not valid: ${(err as Error).message}`);
  }
}

/**
 * Import a JWK with its private parts. The stored type is the HSM variant when the JWK names it,
 * when the request sets `Hsm: true`, or always on Managed HSM.
 */
export function importKeyMaterial(jwkIn: unknown, hsm: unknown, flavour: Flavour): KeyMaterial {
  if (typeof jwkIn !== 'object' || jwkIn === null || Array.isArray(jwkIn)) throw badParameter('The request has no JSON Web Key in "key".');
  const jwk = jwkIn as Record<string, unknown>;
  if (!isKty(jwk.kty)) throw keyTypeNotSupported(String(jwk.kty).slice(0, 64));
  if (hsm !== undefined && typeof hsm !== 'boolean') throw badParameter('"Hsm" must be a boolean.');
  if (jwk.key_hsm !== undefined) throw badParameter('BYOK imports (key_hsm) are not supported by this emulator.');
  const base = baseOf(jwk.kty);
  const toHsm = jwk.kty.endsWith('-HSM') || hsm === true || flavour === 'hsm';
  const kty = (toHsm ? `${base}-HSM` : base) as Kty;
  checkKtyForFlavour(kty, flavour);

  if (base === 'oct') {
    const k = b64urlField(jwk, 'k');
    if (!OCT_SIZES.includes(k.length * 8)) throw badParameter(`Invalid oct key length ${k.length * 8} bits: use 128, 192 or 256.`);
    return { kty, keySize: k.length * 8, material: k };
  }
  if (base === 'RSA') {
    const parts = ['n', 'e', 'd', 'p', 'q', 'dp', 'dq', 'qi'] as const;
    const fields: Record<string, string> = {};
    for (const p of parts) fields[p] = b64urlField(jwk, p).toString('base64url');
    const key = privateKeyFromJwk({ kty: 'RSA', ...fields }, 'RSA');
    const pub = createPublicKey(key).export({ format: 'jwk' });
    if (pub.n !== fields.n || pub.e !== fields.e) throw badParameter('The RSA private key does not match n and e.');
    const size = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (!RSA_SIZES.includes(size)) throw badParameter(`Invalid RSA key size ${size}: use 2048, 3072 or 4096.`);
    return { kty, keySize: size, material: key.export({ type: 'pkcs8', format: 'der' }) };
  }
  if (!isCurve(jwk.crv)) throw badParameter(`Invalid crv '${String(jwk.crv)}': use P-256, P-384, P-521 or P-256K.`);
  const fields = { x: b64urlField(jwk, 'x').toString('base64url'), y: b64urlField(jwk, 'y').toString('base64url'), d: b64urlField(jwk, 'd').toString('base64url') };
  const key = privateKeyFromJwk({ kty: 'EC', crv: JWK_CURVES[jwk.crv], ...fields }, 'EC');
  const pub = createPublicKey(key).export({ format: 'jwk' });
  if (pub.x !== fields.x || pub.y !== fields.y) throw badParameter('The EC private key does not match x and y.');
  return { kty, crv: jwk.crv, material: key.export({ type: 'pkcs8', format: 'der' }) };
}

/** The public JWK members of a key: n/e for RSA, crv/x/y for EC, nothing for oct. */
export function publicJwkFields(km: KeyMaterial): Record<string, string> {
  const base = baseOf(km.kty);
  if (base === 'oct') return {};
  const pub = createPublicKey(createPrivateKey({ key: km.material, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' });
  if (base === 'RSA') return { n: pub.n as string, e: pub.e as string };
  return { crv: km.crv as string, x: pub.x as string, y: pub.y as string };
}

export function isValidKeyOps(v: unknown): v is string[] {
  const ops = ['encrypt', 'decrypt', 'sign', 'verify', 'wrapKey', 'unwrapKey', 'import', 'export'];
  return Array.isArray(v) && v.every((o) => typeof o === 'string' && ops.includes(o));
}
