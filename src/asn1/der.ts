/**
 * Minimal DER reader and writer: enough ASN.1 to read AMD's VCEK extensions and X.509 structure,
 * and to build the simulator's and the emulators' certificates. No BER, no indefinite lengths.
 */
import { InvalidInputError } from '../common/errors';

export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** One decoded TLV. `value` is a view into the input; `raw` covers tag, length and value. */
export interface DerNode {
  tag: number;
  value: Buffer;
  raw: Buffer;
  /** Children, for constructed encodings (bit 0x20 of the tag). */
  children?: DerNode[];
}

function bad(msg: string): never {
  throw new InvalidInputError('ERR_DER', `malformed DER: ${msg}`);
}

/** Parse one TLV at `offset`; returns the node and the offset after it. */
export function readTlv(buf: Buffer, offset = 0): { node: DerNode; next: number } {
  if (offset + 2 > buf.length) bad('truncated header');
  const tag = buf[offset];
  if ((tag & 0x1f) === 0x1f) bad('multi-byte tags are not supported');
  let len = buf[offset + 1];
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) bad('unsupported length encoding');
    if (p + n > buf.length) bad('truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i];
    p += n;
  }
  if (p + len > buf.length) bad('length past end of input');
  const value = buf.subarray(p, p + len);
  const node: DerNode = { tag, value, raw: buf.subarray(offset, p + len) };
  if (tag & 0x20) {
    const children: DerNode[] = [];
    let q = 0;
    while (q < value.length) {
      const r = readTlv(value, q);
      children.push(r.node);
      q = r.next;
    }
    node.children = children;
  }
  return { node, next: p + len };
}

/** Parse a buffer holding exactly one TLV. */
export function parseDer(buf: Buffer): DerNode {
  const { node, next } = readTlv(buf, 0);
  if (next !== buf.length) bad('trailing bytes');
  return node;
}

export function decodeOid(value: Buffer): string {
  if (value.length === 0) bad('empty OID');
  const parts: number[] = [];
  const first = value[0];
  parts.push(first < 80 ? Math.floor(first / 40) : 2, first < 80 ? first % 40 : first - 80);
  let acc = 0;
  for (let i = 1; i < value.length; i++) {
    acc = acc * 128 + (value[i] & 0x7f);
    if (!(value[i] & 0x80)) {
      parts.push(acc);
      acc = 0;
    }
  }
  return parts.join('.');
}

/** Decode a non-negative INTEGER value as bigint. */
export function decodeUnsignedInt(value: Buffer): bigint {
  if (value.length === 0) bad('empty INTEGER');
  if (value[0] & 0x80) bad('negative INTEGER where unsigned expected');
  return value.length === 0 ? 0n : BigInt('0x' + value.toString('hex'));
}

export function childrenOf(node: DerNode, what: string): DerNode[] {
  if (!node.children) bad(`${what} is not constructed`);
  return node.children;
}

// ---------------------------------------------------------------- writer

function encodeLength(len: number): Buffer {
  if (len < 0x80) return Buffer.from([len]);
  const bytes: number[] = [];
  for (let l = len; l > 0; l = Math.floor(l / 256)) bytes.unshift(l & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, value: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([tag]), encodeLength(value.length), value]);
}

export const der = {
  seq: (...items: Buffer[]): Buffer => tlv(Tag.SEQUENCE, Buffer.concat(items)),
  set: (...items: Buffer[]): Buffer => tlv(Tag.SET, Buffer.concat(items)),
  null: (): Buffer => tlv(Tag.NULL, Buffer.alloc(0)),
  bool: (b: boolean): Buffer => tlv(Tag.BOOLEAN, Buffer.from([b ? 0xff : 0])),
  octets: (b: Uint8Array): Buffer => tlv(Tag.OCTET_STRING, b),
  bits: (b: Uint8Array): Buffer => tlv(Tag.BIT_STRING, Buffer.concat([Buffer.from([0]), b])),
  utf8: (s: string): Buffer => tlv(Tag.UTF8_STRING, Buffer.from(s, 'utf8')),
  ia5: (s: string): Buffer => tlv(Tag.IA5_STRING, Buffer.from(s, 'ascii')),
  /** Context-specific tag [n]; constructed (explicit) by default. */
  ctx: (n: number, value: Uint8Array, constructed = true): Buffer => tlv((constructed ? 0xa0 : 0x80) | n, value),
  int(v: bigint | number): Buffer {
    const n = BigInt(v);
    if (n < 0n) throw new RangeError('negative INTEGER not supported');
    let hex = n.toString(16);
    if (hex.length % 2) hex = '0' + hex;
    let b = Buffer.from(hex, 'hex');
    if (b[0] & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
    return tlv(Tag.INTEGER, b);
  },
  oid(s: string): Buffer {
    const parts = s.split('.').map((x) => Number(x));
    if (parts.length < 2 || parts.some((x) => !Number.isInteger(x) || x < 0)) throw new RangeError(`bad OID ${s}`);
    const out: number[] = [parts[0] * 40 + parts[1]];
    for (const p of parts.slice(2)) {
      const enc: number[] = [p & 0x7f];
      for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) enc.unshift(0x80 | (v & 0x7f));
      out.push(...enc);
    }
    return tlv(Tag.OID, Buffer.from(out));
  },
  /** UTCTime for years 1950–2049, GeneralizedTime otherwise (RFC 5280 §4.1.2.5). */
  time(d: Date): Buffer {
    const iso = d.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
    const y = d.getUTCFullYear();
    return y >= 1950 && y < 2050 ? tlv(Tag.UTC_TIME, Buffer.from(iso.slice(2), 'ascii')) : tlv(Tag.GENERALIZED_TIME, Buffer.from(iso, 'ascii'));
  },
};
