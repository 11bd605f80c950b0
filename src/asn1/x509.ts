/**
 * X.509 v3 certificate builder on top of the DER writer, signed with Node's crypto. Used for the
 * simulator's test AMD hierarchy (RSA-PSS ARK/ASK, ECDSA VCEK) and for the emulators' local HTTPS CA.
 * Encodings follow what AMD's real certificates do where that matters (PSS parameters, name strings).
 */
import { createHash, generateKeyPairSync, randomBytes, KeyObject, constants as cryptoConstants, sign as cryptoSign } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { InvalidInputError } from '../common/errors';
import { der, parseDer, Tag, tlv } from './der';

export type SignatureAlgorithm = 'rsa-pss-sha384' | 'rsa-sha256' | 'ecdsa-sha384' | 'ecdsa-sha256';

/** One RDN attribute: an OID (`2.5.4.3`) or a short name (`CN`), and its value. */
export type NameAttribute = readonly [string, string];
/** A distinguished name as ordered attributes, each in its own RDN (as AMD and most CAs do). */
export type DistinguishedName = readonly NameAttribute[];

export interface Extension {
  oid: string;
  critical: boolean;
  /** The DER that goes inside extnValue's OCTET STRING. */
  value: Buffer;
}

export interface CertificateOptions {
  subject: DistinguishedName;
  /** Issuer name, or the issuer certificate's raw DER subject (see subjectNameOf) to match it byte for byte. */
  issuer: DistinguishedName | Buffer;
  serialNumber: bigint;
  notBefore: Date;
  notAfter: Date;
  subjectPublicKey: KeyObject;
  issuerPrivateKey: KeyObject;
  signatureAlgorithm: SignatureAlgorithm;
  extensions?: Extension[];
}

export const NAME_OIDS: Readonly<Record<string, string>> = {
  CN: '2.5.4.3',
  SERIALNUMBER: '2.5.4.5',
  C: '2.5.4.6',
  L: '2.5.4.7',
  ST: '2.5.4.8',
  STREET: '2.5.4.9',
  O: '2.5.4.10',
  OU: '2.5.4.11',
  EMAILADDRESS: '1.2.840.113549.1.9.1',
};

export const OID = {
  rsaEncryption: '1.2.840.113549.1.1.1',
  rsassaPss: '1.2.840.113549.1.1.10',
  mgf1: '1.2.840.113549.1.1.8',
  sha256WithRSAEncryption: '1.2.840.113549.1.1.11',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
} as const;

function badInput(message: string): never {
  throw new InvalidInputError('ERR_X509', message);
}

// ---------------------------------------------------------------- names

function resolveNameOid(typ: string): string {
  if (/^\d+(\.\d+)+$/.test(typ)) return typ;
  const oid = NAME_OIDS[typ.toUpperCase()];
  if (!oid) badInput(`unknown name attribute "${typ}" (use an OID or one of ${Object.keys(NAME_OIDS).join(', ')})`);
  return oid;
}

/** Name as AMD writes it: countryName as PrintableString, emailAddress IA5String, the rest UTF8String. */
export function encodeName(dn: DistinguishedName): Buffer {
  const rdns = dn.map(([typ, value]) => {
    const oid = resolveNameOid(typ);
    let str: Buffer;
    if (oid === NAME_OIDS.C) {
      if (!/^[A-Za-z]{2}$/.test(value)) badInput(`countryName must be two letters, got "${value}"`);
      str = tlv(Tag.PRINTABLE_STRING, Buffer.from(value, 'ascii'));
    } else if (oid === NAME_OIDS.EMAILADDRESS) {
      str = der.ia5(value);
    } else {
      str = der.utf8(value);
    }
    return der.set(der.seq(der.oid(oid), str));
  });
  return der.seq(...rdns);
}

// ---------------------------------------------------------------- algorithms

/**
 * AlgorithmIdentifier bytes. RSASSA-PSS carries the parameters exactly as AMD's ARK/ASK/VCEK do:
 * hash SHA-384 [0], MGF1(SHA-384) [1], salt 48 [2], and the (default) trailer field 1 [3] written out.
 */
export function algorithmIdentifier(alg: SignatureAlgorithm): Buffer {
  switch (alg) {
    case 'rsa-pss-sha384': {
      const sha384 = der.seq(der.oid(OID.sha384), der.null());
      return der.seq(
        der.oid(OID.rsassaPss),
        der.seq(der.ctx(0, sha384), der.ctx(1, der.seq(der.oid(OID.mgf1), sha384)), der.ctx(2, der.int(48)), der.ctx(3, der.int(1))),
      );
    }
    case 'rsa-sha256':
      return der.seq(der.oid(OID.sha256WithRSAEncryption), der.null());
    case 'ecdsa-sha384':
      return der.seq(der.oid(OID.ecdsaWithSha384));
    case 'ecdsa-sha256':
      return der.seq(der.oid(OID.ecdsaWithSha256));
  }
}

function signTbs(tbs: Buffer, key: KeyObject, alg: SignatureAlgorithm): Buffer {
  if (key.type !== 'private') badInput('issuerPrivateKey must be a private key');
  const kt = key.asymmetricKeyType;
  const rsa = kt === 'rsa' || kt === 'rsa-pss';
  switch (alg) {
    case 'rsa-pss-sha384':
      if (!rsa) badInput(`${alg} needs an RSA issuer key, got ${kt}`);
      return cryptoSign('sha384', tbs, { key, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: 48 });
    case 'rsa-sha256':
      if (kt !== 'rsa') badInput(`${alg} needs an rsaEncryption issuer key, got ${kt}`);
      return cryptoSign('sha256', tbs, { key, padding: cryptoConstants.RSA_PKCS1_PADDING });
    case 'ecdsa-sha384':
    case 'ecdsa-sha256':
      if (kt !== 'ec') badInput(`${alg} needs an EC issuer key, got ${kt}`);
      return cryptoSign(alg === 'ecdsa-sha384' ? 'sha384' : 'sha256', tbs, { key, dsaEncoding: 'der' });
  }
}

// ---------------------------------------------------------------- certificate

/** Build and sign an X.509 v3 certificate; returns its DER. */
export function buildCertificate(o: CertificateOptions): Buffer {
  if (o.serialNumber < 0n) badInput('serialNumber must not be negative');
  if (!(o.notBefore.getTime() <= o.notAfter.getTime())) badInput('notBefore must not be after notAfter');
  if (o.subjectPublicKey.type === 'secret') badInput('subjectPublicKey must be an asymmetric key');
  if (o.subject.length === 0 || o.issuer.length === 0) badInput('subject and issuer must not be empty');
  const issuerName = Buffer.isBuffer(o.issuer) ? o.issuer : encodeName(o.issuer);
  const spki = o.subjectPublicKey.export({ type: 'spki', format: 'der' });
  const sigAlg = algorithmIdentifier(o.signatureAlgorithm);
  const exts = o.extensions ?? [];
  const seen = new Set<string>();
  for (const e of exts) {
    if (seen.has(e.oid)) badInput(`extension ${e.oid} appears twice`);
    seen.add(e.oid);
  }
  const tbs = der.seq(
    der.ctx(0, der.int(2)),
    der.int(o.serialNumber),
    sigAlg,
    issuerName,
    der.seq(der.time(o.notBefore), der.time(o.notAfter)),
    encodeName(o.subject),
    spki,
    ...(exts.length > 0 ? [der.ctx(3, der.seq(...exts.map(encodeExtension)))] : []),
  );
  const signature = signTbs(tbs, o.issuerPrivateKey, o.signatureAlgorithm);
  return der.seq(tbs, sigAlg, der.bits(signature));
}

function encodeExtension(e: Extension): Buffer {
  // DEFAULT FALSE is omitted in DER.
  return der.seq(der.oid(e.oid), ...(e.critical ? [der.bool(true)] : []), der.octets(e.value));
}

/** PEM armour with 64-column base64 lines. */
export function pemOf(derBytes: Uint8Array, label = 'CERTIFICATE'): string {
  const b64 = Buffer.from(derBytes).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** DER of every PEM block with `label` in `text`, in order. A body that is not canonical base64 is refused. */
export function dersOfPem(text: string, label = 'CERTIFICATE'): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`, 'g');
  return [...text.matchAll(re)].map((m, i) => {
    const body = m[1].replace(/\s+/g, '');
    const bytes = Buffer.from(body, 'base64');
    // Buffer.from skips characters outside the alphabet; a round trip catches them.
    if (bytes.length === 0 || bytes.toString('base64') !== body) throw new InvalidInputError('ERR_PEM', `PEM ${label} block ${i + 1} is not valid base64`);
    return bytes;
  });
}

// ---------------------------------------------------------------- extensions

export function rawExtension(oid: string, critical: boolean, valueDer: Buffer): Extension {
  return { oid, critical, value: valueDer };
}

/** basicConstraints; critical by default (RFC 5280 requires it in CA certificates; AMD marks it so). */
export function basicConstraints(ca: boolean, pathLen?: number, critical = true): Extension {
  if (pathLen !== undefined && !ca) badInput('pathLen only makes sense for a CA');
  const parts = [...(ca ? [der.bool(true)] : []), ...(pathLen !== undefined ? [der.int(pathLen)] : [])];
  return rawExtension(OID.basicConstraints, critical, der.seq(...parts));
}

export type KeyUsageBit =
  | 'digitalSignature'
  | 'nonRepudiation'
  | 'keyEncipherment'
  | 'dataEncipherment'
  | 'keyAgreement'
  | 'keyCertSign'
  | 'cRLSign'
  | 'encipherOnly'
  | 'decipherOnly';

const KEY_USAGE_BITS: readonly KeyUsageBit[] = [
  'digitalSignature',
  'nonRepudiation',
  'keyEncipherment',
  'dataEncipherment',
  'keyAgreement',
  'keyCertSign',
  'cRLSign',
  'encipherOnly',
  'decipherOnly',
];

/** keyUsage (critical): a named BIT STRING, trailing zero bits dropped as DER requires. */
export function keyUsage(bits: readonly KeyUsageBit[]): Extension {
  if (bits.length === 0) badInput('keyUsage needs at least one bit');
  const idx = bits.map((b) => {
    const i = KEY_USAGE_BITS.indexOf(b);
    if (i < 0) badInput(`unknown keyUsage bit "${b}"`);
    return i;
  });
  const highest = Math.max(...idx);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const i of idx) bytes[i >> 3] |= 0x80 >> (i & 7);
  const unused = 7 - (highest & 7);
  return rawExtension(OID.keyUsage, true, tlv(Tag.BIT_STRING, Buffer.concat([Buffer.from([unused]), bytes])));
}

const EKU_NAMES: Readonly<Record<string, string>> = {
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  emailProtection: '1.3.6.1.5.5.7.3.4',
  timeStamping: '1.3.6.1.5.5.7.3.8',
  ocspSigning: '1.3.6.1.5.5.7.3.9',
};

/** extKeyUsage (non-critical): OIDs or the names serverAuth, clientAuth, codeSigning, ... */
export function extKeyUsage(oids: readonly string[]): Extension {
  if (oids.length === 0) badInput('extKeyUsage needs at least one purpose');
  return rawExtension(OID.extKeyUsage, false, der.seq(...oids.map((o) => der.oid(EKU_NAMES[o] ?? o))));
}

function ipBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map((x) => Number(x)));
  if (!isIPv6(ip)) badInput(`"${ip}" is not an IP address`);
  let text = ip;
  // An embedded dotted quad becomes the last two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const q = v4[1].split('.').map((x) => Number(x));
    text = text.slice(0, v4.index) + `${((q[0] << 8) | q[1]).toString(16)}:${((q[2] << 8) | q[3]).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** subjectAltName (non-critical) with dNSName [2] and iPAddress [7] entries. */
export function subjectAltName(names: { dns?: readonly string[]; ip?: readonly string[] }): Extension {
  const dns = (names.dns ?? []).map((d) => {
    if (!/^[\x21-\x7e]+$/.test(d)) badInput(`"${d}" is not a DNS name`);
    return der.ctx(2, Buffer.from(d, 'ascii'), false);
  });
  const ips = (names.ip ?? []).map((ip) => der.ctx(7, ipBytes(ip), false));
  if (dns.length + ips.length === 0) badInput('subjectAltName needs at least one name');
  return rawExtension(OID.subjectAltName, false, der.seq(...dns, ...ips));
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING contents. */
export function keyIdentifier(pub: KeyObject): Buffer {
  const spki = parseDer(pub.export({ type: 'spki', format: 'der' }));
  const bitString = spki.children?.[1];
  if (!bitString || bitString.tag !== Tag.BIT_STRING) badInput('public key has no subjectPublicKey BIT STRING');
  return createHash('sha1').update(bitString.value.subarray(1)).digest();
}

export function subjectKeyIdentifier(pub: KeyObject): Extension {
  return rawExtension(OID.subjectKeyIdentifier, false, der.octets(keyIdentifier(pub)));
}

/** authorityKeyIdentifier with the keyIdentifier [0] only, as AMD's ASK carries it. */
export function authorityKeyIdentifier(issuerPub: KeyObject): Extension {
  return rawExtension(OID.authorityKeyIdentifier, false, der.seq(der.ctx(0, keyIdentifier(issuerPub), false)));
}

// ---------------------------------------------------------------- local CA convenience

export interface IssuedCertificate {
  /** DER of the certificate. */
  der: Buffer;
  certPem: string;
  /** PKCS#8 PEM of the private key. */
  keyPem: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function randomSerial(): bigint {
  // 64 random bits, top bit cleared and never zero: a positive INTEGER of at most 8 bytes.
  const b = randomBytes(8);
  b[0] &= 0x7f;
  return BigInt('0x' + b.toString('hex')) + 1n;
}

function issued(derBytes: Buffer, privateKey: KeyObject, publicKey: KeyObject): IssuedCertificate {
  return {
    der: derBytes,
    certPem: pemOf(derBytes),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    privateKey,
    publicKey,
  };
}

const DAY_MS = 86_400_000;

/** A self-signed ECDSA P-256 CA for loopback HTTPS (the emulators' trust root). */
export function createLocalCa(opts: { commonName?: string; organization?: string; days?: number } = {}): IssuedCertificate {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const name: DistinguishedName = [
    ['O', opts.organization ?? 'skr-sidecar local emulators (test only)'],
    ['CN', opts.commonName ?? 'skr-sidecar local CA'],
  ];
  const now = Date.now();
  const derBytes = buildCertificate({
    subject: name,
    issuer: name,
    serialNumber: randomSerial(),
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + (opts.days ?? 365) * DAY_MS),
    subjectPublicKey: publicKey,
    issuerPrivateKey: privateKey,
    signatureAlgorithm: 'ecdsa-sha256',
    extensions: [basicConstraints(true, 0), keyUsage(['keyCertSign', 'cRLSign']), subjectKeyIdentifier(publicKey)],
  });
  return issued(derBytes, privateKey, publicKey);
}

/** A TLS server certificate issued by `ca`; SAN defaults to DNS:localhost and IP:127.0.0.1. */
export function issueServerCertificate(
  ca: Pick<IssuedCertificate, 'der' | 'privateKey' | 'publicKey'>,
  opts: { commonName?: string; dns?: readonly string[]; ip?: readonly string[]; days?: number } = {},
): IssuedCertificate {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const dns = opts.dns ?? ['localhost'];
  const ip = opts.ip ?? ['127.0.0.1'];
  const now = Date.now();
  const derBytes = buildCertificate({
    subject: [['CN', opts.commonName ?? dns[0] ?? ip[0] ?? 'localhost']],
    issuer: subjectNameOf(ca.der),
    serialNumber: randomSerial(),
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + (opts.days ?? 30) * DAY_MS),
    subjectPublicKey: publicKey,
    issuerPrivateKey: ca.privateKey,
    signatureAlgorithm: 'ecdsa-sha256',
    extensions: [
      basicConstraints(false),
      keyUsage(['digitalSignature']),
      extKeyUsage(['serverAuth']),
      subjectAltName({ dns, ip }),
      subjectKeyIdentifier(publicKey),
      authorityKeyIdentifier(ca.publicKey),
    ],
  });
  return issued(derBytes, privateKey, publicKey);
}

/** The raw DER subject Name of a certificate, for use as the `issuer` of certificates it signs. */
export function subjectNameOf(certDer: Buffer): Buffer {
  const fields = parseDer(certDer).children?.[0]?.children;
  if (!fields || fields.length < 6) badInput('not an X.509 certificate');
  // version [0] is present in v3 certificates; the subject follows validity.
  const base = fields[0].tag === 0xa0 ? 1 : 0;
  const subject = fields[base + 4];
  if (subject.tag !== Tag.SEQUENCE) badInput('certificate subject is not a Name');
  return Buffer.from(subject.raw);
}
