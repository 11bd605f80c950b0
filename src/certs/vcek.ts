/**
 * AMD's X.509 extensions on a VCEK/VLEK (AMD "VCEK Certificate and KDS Interface Specification",
 * doc 57230, tables 8 and 11). In the real certificates every SPL extnValue is a DER INTEGER
 * (`02 01 73`) and the product name is an IA5String (`16 08 "Milan-B0"`). The hwid is the 64-byte CHIP_ID
 * (8 bytes on Turin): KDS writes it raw, but some issuers wrap it in a DER OCTET STRING (`04 40 …`), and other
 * verifiers (trustee, TEE-Attestation-Verification) accept both, so this parser does too. The lengths tell the
 * forms apart: raw is 64 or 8 bytes, wrapped is 66 or 10.
 */
import { X509Certificate } from 'node:crypto';
import { childrenOf, decodeOid, decodeUnsignedInt, DerNode, parseDer, Tag } from '../asn1/der';
import { InvalidInputError } from '../common/errors';
import { encodeTcb, PRODUCTS, Product, TcbParts } from '../snp/tcb';
import { looksLikePem, pemCertificatesToDer } from './pem';

const AMD = '1.3.6.1.4.1.3704.1';
export const AmdOid = {
  structVersion: `${AMD}.1`,
  productName: `${AMD}.2`,
  blSpl: `${AMD}.3.1`,
  teeSpl: `${AMD}.3.2`,
  snpSpl: `${AMD}.3.3`,
  spl4: `${AMD}.3.4`,
  spl5: `${AMD}.3.5`,
  spl6: `${AMD}.3.6`,
  spl7: `${AMD}.3.7`,
  ucodeSpl: `${AMD}.3.8`,
  /** Turin only (doc 57230 table 11). */
  fmcSpl: `${AMD}.3.9`,
  hwid: `${AMD}.4`,
  /** VLEK only: the cloud provider's name. */
  cspId: `${AMD}.5`,
} as const;

export interface VcekExtensions {
  /** e.g. `Milan-B0`, `Genoa-B1`, `Turin-B0`. */
  productName: string;
  /** Product line from the name; undefined for names this code does not know. */
  product: Product | undefined;
  tcb: TcbParts;
  /** The TCB_VERSION this certificate was issued for, in the report's byte layout for `product`. */
  tcbRaw: bigint;
  /** CHIP_ID the VCEK belongs to (absent on VLEKs). */
  hwid?: Buffer;
  /** VLEK only. */
  cspId?: string;
  structVersion?: number;
}

function missing(name: string, oid: string): never {
  throw new InvalidInputError('ERR_VCEK_EXTENSION', `VCEK has no ${name} extension (${oid})`);
}

function bad(msg: string): never {
  throw new InvalidInputError('ERR_VCEK_EXTENSION', `VCEK extension ${msg}`);
}

/** Accept PEM text/bytes, DER bytes or an X509Certificate; return DER. */
function toDer(cert: string | Uint8Array | X509Certificate): Buffer {
  if (cert instanceof X509Certificate) return cert.raw;
  if (typeof cert === 'string' || looksLikePem(cert)) {
    const ders = pemCertificatesToDer(typeof cert === 'string' ? cert : Buffer.from(cert).toString('latin1'), 'VCEK');
    if (ders.length !== 1) throw new InvalidInputError('ERR_VCEK_FORMAT', `expected exactly one VCEK certificate, got ${ders.length}`);
    return ders[0];
  }
  return Buffer.from(cert);
}

/** extnID → extnValue (the OCTET STRING contents) for every extension in the TBSCertificate. */
export function certificateExtensions(der: Buffer): Map<string, Buffer> {
  const cert = parseDer(der);
  if (cert.tag !== Tag.SEQUENCE) bad('parse: certificate is not a SEQUENCE');
  const tbs = childrenOf(cert, 'Certificate')[0];
  if (!tbs || tbs.tag !== Tag.SEQUENCE) bad('parse: TBSCertificate missing');
  // extensions are [3] EXPLICIT in TBSCertificate (RFC 5280 §4.1).
  const wrapper = childrenOf(tbs, 'TBSCertificate').find((n) => n.tag === 0xa3);
  const out = new Map<string, Buffer>();
  if (!wrapper) return out;
  const list: DerNode | undefined = childrenOf(wrapper, 'extensions [3]')[0];
  if (!list || list.tag !== Tag.SEQUENCE) bad('parse: Extensions is not a SEQUENCE');
  for (const ext of childrenOf(list, 'Extensions')) {
    const parts = childrenOf(ext, 'Extension');
    const oid = parts[0];
    const value = parts[parts.length - 1];
    if (!oid || oid.tag !== Tag.OID || !value || value.tag !== Tag.OCTET_STRING) bad('parse: malformed Extension');
    const id = decodeOid(oid.value);
    if (out.has(id)) bad(`${id} appears twice`);
    out.set(id, value.value);
  }
  return out;
}

function splOf(exts: Map<string, Buffer>, name: string, oid: string, required: true): number;
function splOf(exts: Map<string, Buffer>, name: string, oid: string, required: boolean): number | undefined;
function splOf(exts: Map<string, Buffer>, name: string, oid: string, required: boolean): number | undefined {
  const v = exts.get(oid);
  if (v === undefined) return required ? missing(name, oid) : undefined;
  const node = parseDer(v);
  if (node.tag !== Tag.INTEGER) bad(`${name} (${oid}) is not an INTEGER`);
  const n = decodeUnsignedInt(node.value);
  if (n > 255n) bad(`${name} (${oid}) = ${n} does not fit a byte`);
  return Number(n);
}

const HWID_LENGTHS = new Set([64, 8]);

/** The chip id from the hwid extnValue: raw bytes, or one DER OCTET STRING holding them. */
export function hwidOf(extnValue: Buffer): Buffer {
  if (HWID_LENGTHS.has(extnValue.length)) return Buffer.from(extnValue);
  if (extnValue[0] === Tag.OCTET_STRING && HWID_LENGTHS.has(extnValue.length - 2)) {
    let node: DerNode | undefined;
    try {
      node = parseDer(extnValue);
    } catch {
      node = undefined;
    }
    if (node && node.tag === Tag.OCTET_STRING && HWID_LENGTHS.has(node.value.length)) return Buffer.from(node.value);
  }
  return bad(`hwid (${AmdOid.hwid}) is ${extnValue.length} bytes: expected the 64-byte chip id (8 on Turin), raw or in an OCTET STRING`);
}

function productFromName(name: string): Product | undefined {
  const line = name.split('-')[0].toLowerCase();
  return PRODUCTS.find((p) => p.toLowerCase() === line);
}

/** Read AMD's extensions from a VCEK or VLEK (PEM or DER). Missing required ones → ERR_VCEK_EXTENSION. */
export function readVcekExtensions(cert: string | Uint8Array | X509Certificate): VcekExtensions {
  const exts = certificateExtensions(toDer(cert));

  const nameRaw = exts.get(AmdOid.productName) ?? missing('product name', AmdOid.productName);
  const nameNode = parseDer(nameRaw);
  if (nameNode.tag !== Tag.IA5_STRING) bad(`product name (${AmdOid.productName}) is not an IA5String`);
  const productName = nameNode.value.toString('ascii');
  const product = productFromName(productName);

  const fmc = splOf(exts, 'fmcSPL', AmdOid.fmcSpl, product === 'Turin');
  const tcb: TcbParts = {
    bootloader: splOf(exts, 'blSPL', AmdOid.blSpl, true),
    tee: splOf(exts, 'teeSPL', AmdOid.teeSpl, true),
    snp: splOf(exts, 'snpSPL', AmdOid.snpSpl, true),
    microcode: splOf(exts, 'ucodeSPL', AmdOid.ucodeSpl, true),
    ...(fmc !== undefined ? { fmc } : {}),
  };
  const layout: Product = product ?? (fmc !== undefined ? 'Turin' : 'Milan');
  let tcbRaw = encodeTcb(tcb, layout);
  if (layout !== 'Turin') {
    // Milan/Genoa keep spl_4..spl_7 in bytes 2..5 of TCB_VERSION; carry them so the comparison
    // with REPORTED_TCB is over all eight bytes, as the reference sidecar does.
    [AmdOid.spl4, AmdOid.spl5, AmdOid.spl6, AmdOid.spl7].forEach((oid, i) => {
      const v = splOf(exts, `spl_${i + 4}`, oid, false);
      if (v) tcbRaw |= BigInt(v) << BigInt(8 * (i + 2));
    });
  }

  const out: VcekExtensions = { productName, product, tcb, tcbRaw };
  const hwid = exts.get(AmdOid.hwid);
  if (hwid !== undefined) out.hwid = hwidOf(hwid);
  const csp = exts.get(AmdOid.cspId);
  if (csp !== undefined) {
    const n = parseDer(csp);
    out.cspId = n.value.toString('utf8');
  }
  const sv = exts.get(AmdOid.structVersion);
  if (sv !== undefined) {
    const n = parseDer(sv);
    if (n.tag === Tag.INTEGER) out.structVersion = Number(decodeUnsignedInt(n.value));
  }
  return out;
}
