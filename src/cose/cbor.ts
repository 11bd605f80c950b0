/**
 * A small, strict CBOR (RFC 8949) codec for COSE. Decoding refuses anything not well-formed
 * (indefinite lengths, reserved additional info, trailing bytes, duplicate map keys, invalid UTF-8)
 * and checks every declared length against the bytes that remain before allocating, so hostile
 * input can neither allocate huge buffers nor recurse without bound. Encoding is definite-length
 * with the shortest argument form; map entries keep the caller's insertion order.
 */
import { InvalidInputError } from '../common/errors';

export const CBOR_ERROR_CODE = 'ERR_CBOR';
export const DEFAULT_MAX_DEPTH = 64;

/** A CBOR tag (major type 6) wrapping one data item. */
export class CborTag {
  constructor(
    readonly tag: number | bigint,
    readonly value: CborValue,
  ) {}
}

/** A simple value other than false/true/null/undefined (major type 7, 0..19 or 32..255). */
export class CborSimple {
  constructor(readonly value: number) {}
}

export type CborKey = number | string;
export type CborMap = Map<CborKey, CborValue>;
export type CborValue =
  | number
  | bigint
  | string
  | Buffer
  | boolean
  | null
  | undefined
  | CborValue[]
  | CborMap
  | CborTag
  | CborSimple;

export class CborError extends InvalidInputError {
  constructor(message: string, cause?: unknown) {
    super(CBOR_ERROR_CODE, message, cause);
  }
}

export interface DecodeOptions {
  /** Maximum nesting of arrays, maps and tags (default 64). */
  maxDepth?: number;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const U64_MAX = (1n << 64n) - 1n;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Decode exactly one CBOR data item that spans all of `bytes`. */
export function decodeCbor(bytes: Uint8Array, opts: DecodeOptions = {}): CborValue {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const d = new Decoder(buf, opts.maxDepth ?? DEFAULT_MAX_DEPTH);
  const v = d.item(0);
  if (d.pos !== buf.length) throw new CborError(`trailing bytes after CBOR item: ${buf.length - d.pos} left at offset ${d.pos}`);
  return v;
}

/**
 * Decode one item at `offset` and report where it ends, without requiring the rest of the input
 * to be consumed. Used to slice the exact encoded bytes of a nested item.
 */
export function decodeCborPrefix(bytes: Uint8Array, offset = 0, opts: DecodeOptions = {}): { value: CborValue; end: number } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (!Number.isInteger(offset) || offset < 0 || offset > buf.length) throw new CborError(`offset ${offset} outside input`);
  const d = new Decoder(buf, opts.maxDepth ?? DEFAULT_MAX_DEPTH);
  d.pos = offset;
  const value = d.item(0);
  return { value, end: d.pos };
}

class Decoder {
  pos = 0;
  constructor(
    private readonly buf: Buffer,
    private readonly maxDepth: number,
  ) {}

  private need(n: number, what: string): void {
    if (n > this.buf.length - this.pos) {
      throw new CborError(`truncated CBOR: ${what} needs ${n} bytes at offset ${this.pos}, ${this.buf.length - this.pos} left`);
    }
  }

  /** Read the argument for additional info `ai`; returns bigint only for values past 2^53 - 1. */
  private argument(ai: number, start: number): number | bigint {
    if (ai < 24) return ai;
    switch (ai) {
      case 24:
        this.need(1, 'argument');
        return this.buf[this.pos++];
      case 25: {
        this.need(2, 'argument');
        const v = this.buf.readUInt16BE(this.pos);
        this.pos += 2;
        return v;
      }
      case 26: {
        this.need(4, 'argument');
        const v = this.buf.readUInt32BE(this.pos);
        this.pos += 4;
        return v;
      }
      case 27: {
        this.need(8, 'argument');
        const v = this.buf.readBigUInt64BE(this.pos);
        this.pos += 8;
        return v <= MAX_SAFE ? Number(v) : v;
      }
      case 31:
        throw new CborError(`indefinite-length items are not supported (offset ${start})`);
      default:
        throw new CborError(`reserved additional information ${ai} at offset ${start}`);
    }
  }

  /** A length argument that must also fit in what remains (each unit at least `unit` bytes). */
  private length(ai: number, start: number, unit: number, what: string): number {
    const n = this.argument(ai, start);
    const left = this.buf.length - this.pos;
    if (typeof n === 'bigint' || n * unit > left) {
      throw new CborError(`${what} at offset ${start} declares ${n.toString()} entries but only ${left} bytes remain`);
    }
    return n;
  }

  item(depth: number): CborValue {
    const start = this.pos;
    this.need(1, 'initial byte');
    const ib = this.buf[this.pos++];
    const major = ib >> 5;
    const ai = ib & 0x1f;
    switch (major) {
      case 0:
        return this.argument(ai, start);
      case 1: {
        const n = this.argument(ai, start);
        if (typeof n === 'number' && n < Number.MAX_SAFE_INTEGER) return -1 - n;
        const v = -1n - BigInt(n);
        return v;
      }
      case 2: {
        const n = this.length(ai, start, 1, 'byte string');
        const out = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
        this.pos += n;
        return out;
      }
      case 3: {
        const n = this.length(ai, start, 1, 'text string');
        try {
          const s = utf8.decode(this.buf.subarray(this.pos, this.pos + n));
          this.pos += n;
          return s;
        } catch (e) {
          throw new CborError(`text string at offset ${start} is not valid UTF-8`, e);
        }
      }
      case 4: {
        const n = this.length(ai, start, 1, 'array');
        this.enter(depth, start);
        const out: CborValue[] = [];
        for (let i = 0; i < n; i++) out.push(this.item(depth + 1));
        return out;
      }
      case 5: {
        const n = this.length(ai, start, 2, 'map');
        this.enter(depth, start);
        const out: CborMap = new Map();
        for (let i = 0; i < n; i++) {
          const keyAt = this.pos;
          const k = this.item(depth + 1);
          if (typeof k !== 'number' && typeof k !== 'string') {
            throw new CborError(`map key at offset ${keyAt} must be an integer or text string`);
          }
          if (out.has(k)) throw new CborError(`duplicate map key ${JSON.stringify(k)} at offset ${keyAt}`);
          out.set(k, this.item(depth + 1));
        }
        return out;
      }
      case 6: {
        const tag = this.argument(ai, start);
        this.enter(depth, start);
        return new CborTag(tag, this.item(depth + 1));
      }
      default:
        return this.simple(ai, start);
    }
  }

  private enter(depth: number, start: number): void {
    if (depth >= this.maxDepth) throw new CborError(`CBOR nesting deeper than ${this.maxDepth} at offset ${start}`);
  }

  private simple(ai: number, start: number): CborValue {
    switch (ai) {
      case 20:
        return false;
      case 21:
        return true;
      case 22:
        return null;
      case 23:
        return undefined;
      case 24: {
        this.need(1, 'simple value');
        const v = this.buf[this.pos++];
        // RFC 8949 §3.3: values below 32 must use the one-byte form.
        if (v < 32) throw new CborError(`non-well-formed two-byte simple value ${v} at offset ${start}`);
        return new CborSimple(v);
      }
      case 25: {
        this.need(2, 'half float');
        const v = halfToNumber(this.buf.readUInt16BE(this.pos));
        this.pos += 2;
        return v;
      }
      case 26: {
        this.need(4, 'float');
        const v = this.buf.readFloatBE(this.pos);
        this.pos += 4;
        return v;
      }
      case 27: {
        this.need(8, 'double');
        const v = this.buf.readDoubleBE(this.pos);
        this.pos += 8;
        return v;
      }
      case 31:
        throw new CborError(`unexpected break code at offset ${start}`);
      default:
        if (ai < 20) return new CborSimple(ai);
        throw new CborError(`reserved additional information ${ai} in major type 7 at offset ${start}`);
    }
  }
}

function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Encode a value. Integers use the shortest form; non-integral numbers become 64-bit floats. */
export function encodeCbor(value: CborValue): Buffer {
  const parts: Buffer[] = [];
  encodeInto(value, parts, 0);
  return Buffer.concat(parts);
}

function head(major: number, n: number | bigint): Buffer {
  const v = BigInt(n);
  if (v < 0n || v > U64_MAX) throw new CborError(`CBOR argument ${v.toString()} out of range`);
  const m = major << 5;
  if (v < 24n) return Buffer.from([m | Number(v)]);
  if (v <= 0xffn) return Buffer.from([m | 24, Number(v)]);
  if (v <= 0xffffn) {
    const b = Buffer.alloc(3);
    b[0] = m | 25;
    b.writeUInt16BE(Number(v), 1);
    return b;
  }
  if (v <= 0xffffffffn) {
    const b = Buffer.alloc(5);
    b[0] = m | 26;
    b.writeUInt32BE(Number(v), 1);
    return b;
  }
  const b = Buffer.alloc(9);
  b[0] = m | 27;
  b.writeBigUInt64BE(v, 1);
  return b;
}

function encodeInt(v: number | bigint, parts: Buffer[]): void {
  const b = BigInt(v);
  if (b >= 0n) parts.push(head(0, b));
  else parts.push(head(1, -1n - b));
}

function encodeInto(value: CborValue, parts: Buffer[], depth: number): void {
  if (depth > DEFAULT_MAX_DEPTH) throw new CborError(`value nests deeper than ${DEFAULT_MAX_DEPTH}`);
  if (value === false) parts.push(Buffer.from([0xf4]));
  else if (value === true) parts.push(Buffer.from([0xf5]));
  else if (value === null) parts.push(Buffer.from([0xf6]));
  else if (value === undefined) parts.push(Buffer.from([0xf7]));
  else if (typeof value === 'bigint') encodeInt(value, parts);
  else if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && !Object.is(value, -0)) encodeInt(value, parts);
    else {
      const b = Buffer.alloc(9);
      b[0] = 0xfb;
      b.writeDoubleBE(value, 1);
      parts.push(b);
    }
  } else if (typeof value === 'string') {
    const s = Buffer.from(value, 'utf8');
    if (s.toString('utf8') !== value) throw new CborError('text string holds lone surrogates and cannot be UTF-8');
    parts.push(head(3, s.length), s);
  } else if (value instanceof Uint8Array) {
    parts.push(head(2, value.length), Buffer.from(value));
  } else if (Array.isArray(value)) {
    parts.push(head(4, value.length));
    for (const v of value) encodeInto(v, parts, depth + 1);
  } else if (value instanceof Map) {
    parts.push(head(5, value.size));
    for (const [k, v] of value) {
      if (typeof k !== 'number' && typeof k !== 'string') throw new CborError('map keys must be integers or text strings');
      if (typeof k === 'number' && !Number.isSafeInteger(k)) throw new CborError(`map key ${k} is not an integer`);
      encodeInto(k, parts, depth + 1);
      encodeInto(v, parts, depth + 1);
    }
  } else if (value instanceof CborTag) {
    parts.push(head(6, value.tag));
    encodeInto(value.value, parts, depth + 1);
  } else if (value instanceof CborSimple) {
    const v = value.value;
    if (!Number.isInteger(v) || v < 0 || v > 255 || (v >= 20 && v < 32)) throw new CborError(`invalid simple value ${v}`);
    parts.push(v < 24 ? Buffer.from([0xe0 | v]) : Buffer.from([0xf8, v]));
  } else {
    throw new CborError(`cannot encode ${Object.prototype.toString.call(value)} as CBOR`);
  }
}
