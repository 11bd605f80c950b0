/**
 * The simulator's fake AMD certificate hierarchy, shaped exactly like AMD's: RSA-4096 ARK and ASK with
 * RSASSA-PSS/SHA-384, and an ECDSA P-384 VCEK issued by the ASK carrying AMD's VCEK extensions,
 * encoded byte for byte as AMD's KDS encodes them (see tests/simulator for the comparison with real VCEKs).
 * Names say "skr-sidecar SIMULATED (test only)" so a simulated chain can never pass for AMD's.
 */
import { createECDH, createHash, createPrivateKey, createPublicKey, hkdfSync, KeyObject } from 'node:crypto';
import { der } from '../../asn1/der';
import {
  authorityKeyIdentifier,
  basicConstraints,
  buildCertificate,
  DistinguishedName,
  Extension,
  keyUsage,
  rawExtension,
  subjectKeyIdentifier,
  subjectNameOf,
} from '../../asn1/x509';
import { InvalidInputError } from '../../common/errors';
import { encodeTcb, Product, TcbParts } from '../tcb';

/** AMD's VCEK extension OIDs (AMD "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface Specification"). */
export const VCEK_OID = {
  structVersion: '1.3.6.1.4.1.3704.1.1',
  productName: '1.3.6.1.4.1.3704.1.2',
  blSpl: '1.3.6.1.4.1.3704.1.3.1',
  teeSpl: '1.3.6.1.4.1.3704.1.3.2',
  snpSpl: '1.3.6.1.4.1.3704.1.3.3',
  spl4: '1.3.6.1.4.1.3704.1.3.4',
  spl5: '1.3.6.1.4.1.3704.1.3.5',
  spl6: '1.3.6.1.4.1.3704.1.3.6',
  spl7: '1.3.6.1.4.1.3704.1.3.7',
  ucodeSpl: '1.3.6.1.4.1.3704.1.3.8',
  /** Turin only. Used by go-sev-guest's and virtee/sev's Turin support; AMD's spec lists it for Turin VCEKs. */
  fmcSpl: '1.3.6.1.4.1.3704.1.3.9',
  hwid: '1.3.6.1.4.1.3704.1.4',
} as const;

export interface ProductInfo {
  /** The VCEK `productName` extension value. */
  productName: string;
  /** CPUID family/model/stepping a v3+ report carries. */
  cpuid: { family: number; model: number; stepping: number };
  /** VCEK struct version extension: 0 for Milan/Genoa, 1 for Turin (its TCB layout differs). */
  structVersion: number;
  /** Bytes of CHIP_ID that identify the chip (and go in the VCEK hwid): Turin uses only the first 8. */
  hwidLength: number;
  /** A realistic TCB for a patched machine of that generation. */
  defaultTcb: TcbParts;
}

export const PRODUCT_INFO: Readonly<Record<Product, ProductInfo>> = {
  Milan: {
    productName: 'Milan-B0',
    cpuid: { family: 0x19, model: 0x01, stepping: 0x00 },
    structVersion: 0,
    hwidLength: 64,
    // = 0x7308000000000003, the TCB of the real Milan vectors.
    defaultTcb: { bootloader: 3, tee: 0, snp: 8, microcode: 0x73 },
  },
  Genoa: {
    productName: 'Genoa-B1',
    cpuid: { family: 0x19, model: 0x11, stepping: 0x01 },
    structVersion: 0,
    hwidLength: 64,
    defaultTcb: { bootloader: 7, tee: 0, snp: 14, microcode: 0x48 },
  },
  Turin: {
    productName: 'Turin-B0',
    cpuid: { family: 0x1a, model: 0x02, stepping: 0x00 },
    structVersion: 1,
    hwidLength: 8,
    defaultTcb: { fmc: 1, bootloader: 1, tee: 1, snp: 4, microcode: 0x52 },
  },
};

const SIMULATED_O = 'skr-sidecar SIMULATED (test only)';

/** Subject of a simulated ARK/ASK/VCEK: AMD's attribute order and values, except O. */
export function simulatedName(cn: string): DistinguishedName {
  return [
    ['OU', 'Engineering'],
    ['C', 'US'],
    ['L', 'Santa Clara'],
    ['ST', 'CA'],
    ['O', SIMULATED_O],
    ['CN', cn],
  ];
}

/** Fixed so the committed ARK/ASK stay valid and reproducible; AMD's roots also live 25 years. */
export const ROOT_NOT_BEFORE = new Date('2024-01-01T00:00:00Z');
export const ROOT_NOT_AFTER = new Date('2049-01-01T00:00:00Z');

export interface RootCerts {
  arkDer: Buffer;
  askDer: Buffer;
}

/** Mint an ARK (self-signed) and ASK (issued by it) with the extensions AMD's carry (no CRL DP: nothing to fetch). */
export function mintAmdRoots(product: Product, arkKey: KeyObject, askKey: KeyObject): RootCerts {
  const arkPub = createPublicKey(arkKey);
  const askPub = createPublicKey(askKey);
  const arkName = simulatedName(`ARK-${product}`);
  const arkDer = buildCertificate({
    subject: arkName,
    issuer: arkName,
    serialNumber: 0x10000n,
    notBefore: ROOT_NOT_BEFORE,
    notAfter: ROOT_NOT_AFTER,
    subjectPublicKey: arkPub,
    issuerPrivateKey: arkKey,
    signatureAlgorithm: 'rsa-pss-sha384',
    extensions: [keyUsage(['keyCertSign', 'cRLSign']), subjectKeyIdentifier(arkPub), basicConstraints(true)],
  });
  const askDer = buildCertificate({
    subject: simulatedName(`SEV-${product}`),
    issuer: subjectNameOf(arkDer),
    serialNumber: 0x10001n,
    notBefore: ROOT_NOT_BEFORE,
    notAfter: ROOT_NOT_AFTER,
    subjectPublicKey: askPub,
    issuerPrivateKey: arkKey,
    signatureAlgorithm: 'rsa-pss-sha384',
    extensions: [subjectKeyIdentifier(askPub), authorityKeyIdentifier(arkPub), basicConstraints(true, 0), keyUsage(['keyCertSign'])],
  });
  return { arkDer, askDer };
}

function tcbByte(tcb: bigint, i: number): number {
  return Number((tcb >> BigInt(8 * i)) & 0xffn);
}

/**
 * The VCEK extensions in AMD's order (struct version, product, bl, tee, spl4-7, snp, ucode, [fmc], hwid).
 * Each extnValue is a complete DER INTEGER / IA5String, except hwid, which AMD writes as the raw chip id
 * bytes directly inside extnValue (no inner OCTET STRING). None is critical. `hwidForm: 'octet-string'` wraps
 * the hwid in a DER OCTET STRING instead, as some issuers do, to test verifiers against both forms.
 */
export function vcekExtensions(product: Product, tcb: bigint, chipId: Buffer, hwidForm: HwidForm = 'raw'): Extension[] {
  const info = PRODUCT_INFO[product];
  if (chipId.length !== 64) throw new InvalidInputError('ERR_CHIP_ID', `CHIP_ID must be 64 bytes, got ${chipId.length}`);
  const int = (oid: string, v: number) => rawExtension(oid, false, der.int(v));
  // Byte positions of each SPL in the TCB u64 (see src/snp/tcb.ts); spl4-7 are reserved bytes.
  const pos =
    product === 'Turin'
      ? { bl: 1, tee: 2, snp: 3, spl: [4, 5, 6, -1], ucode: 7 }
      : { bl: 0, tee: 1, snp: 6, spl: [2, 3, 4, 5], ucode: 7 };
  const at = (i: number) => (i < 0 ? 0 : tcbByte(tcb, i));
  const exts: Extension[] = [
    int(VCEK_OID.structVersion, info.structVersion),
    rawExtension(VCEK_OID.productName, false, der.ia5(info.productName)),
    int(VCEK_OID.blSpl, at(pos.bl)),
    int(VCEK_OID.teeSpl, at(pos.tee)),
    int(VCEK_OID.spl4, at(pos.spl[0])),
    int(VCEK_OID.spl5, at(pos.spl[1])),
    int(VCEK_OID.spl6, at(pos.spl[2])),
    int(VCEK_OID.spl7, at(pos.spl[3])),
    int(VCEK_OID.snpSpl, at(pos.snp)),
    int(VCEK_OID.ucodeSpl, at(pos.ucode)),
  ];
  if (product === 'Turin') exts.push(int(VCEK_OID.fmcSpl, at(0)));
  const hwid = Buffer.from(chipId.subarray(0, info.hwidLength));
  exts.push(rawExtension(VCEK_OID.hwid, false, hwidForm === 'octet-string' ? der.octets(hwid) : hwid));
  return exts;
}

/** How the VCEK carries its hwid: raw chip id bytes (as KDS does) or wrapped in a DER OCTET STRING. */
export type HwidForm = 'raw' | 'octet-string';

export interface VcekMintOptions {
  product: Product;
  chipId: Buffer;
  tcb: bigint;
  vcekPublicKey: KeyObject;
  askKey: KeyObject;
  askDer: Buffer;
  notBefore?: Date;
  notAfter?: Date;
  hwidForm?: HwidForm;
}

const DAY_MS = 86_400_000;

/** Issue a VCEK like KDS does: serial 0, seven years of validity, signed by the ASK with RSA-PSS. */
export function mintVcek(o: VcekMintOptions): Buffer {
  const notBefore = o.notBefore ?? new Date(Date.now() - DAY_MS);
  return buildCertificate({
    subject: simulatedName('SEV-VCEK'),
    issuer: subjectNameOf(o.askDer),
    serialNumber: 0n,
    notBefore,
    notAfter: o.notAfter ?? new Date(notBefore.getTime() + 7 * 365 * DAY_MS),
    subjectPublicKey: o.vcekPublicKey,
    issuerPrivateKey: o.askKey,
    signatureAlgorithm: 'rsa-pss-sha384',
    extensions: vcekExtensions(o.product, o.tcb, o.chipId, o.hwidForm),
  });
}

// ---------------------------------------------------------------- per-chip VCEK keys

const P384_ORDER = 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n;

/**
 * A VCEK private key for (chip, TCB), derived deterministically from `seed` (a P-384 private key standing
 * in for the chip's fused secret). Real VCEKs are likewise derived from a chip secret and the TCB, so a
 * different chip or a different TCB signs with a different key and other chips' VCEKs fail to verify.
 */
export function deriveVcekKey(seed: KeyObject, product: Product, chipId: Buffer, tcb: bigint): KeyObject {
  const d = seed.export({ format: 'jwk' }).d;
  if (!d || seed.asymmetricKeyDetails?.namedCurve !== 'secp384r1') {
    throw new InvalidInputError('ERR_SIMULATOR_KEY', 'the VCEK seed must be a P-384 private key');
  }
  const info = Buffer.alloc(8);
  info.writeBigUInt64LE(tcb);
  const okm = Buffer.from(
    hkdfSync('sha384', Buffer.from(d, 'base64url'), 'skr-sidecar simulated VCEK', Buffer.concat([Buffer.from(product), chipId, info]), 64),
  );
  // Reduce 512 bits mod (n-1) and add 1: a uniform non-zero scalar.
  const scalar = (BigInt('0x' + okm.toString('hex')) % (P384_ORDER - 1n)) + 1n;
  const dBytes = Buffer.from(scalar.toString(16).padStart(96, '0'), 'hex');
  const ecdh = createECDH('secp384r1');
  ecdh.setPrivateKey(dBytes);
  const pub = ecdh.getPublicKey(); // 0x04 || X || Y
  return createPrivateKey({
    format: 'jwk',
    key: {
      kty: 'EC',
      crv: 'P-384',
      d: dBytes.toString('base64url'),
      x: pub.subarray(1, 49).toString('base64url'),
      y: pub.subarray(49, 97).toString('base64url'),
    },
  });
}

/** Default CHIP_ID of a simulated product: deterministic; Turin's is 8 bytes then zeros, as on hardware. */
export function defaultChipId(product: Product): Buffer {
  const id = createHash('sha512').update(`skr-sidecar simulated ${product} chip`).digest();
  const len = PRODUCT_INFO[product].hwidLength;
  return Buffer.concat([id.subarray(0, len), Buffer.alloc(64 - len)]);
}

export function defaultTcb(product: Product): bigint {
  return encodeTcb(PRODUCT_INFO[product].defaultTcb, product);
}
