/**
 * Big-endian marshalling for TPM structures. The Reader treats its input as hostile: every read is
 * bounds-checked and a short buffer becomes a TpmResponseError naming what was being read.
 */
import { TpmResponseError } from './errors';

export class Writer {
  private readonly parts: Buffer[] = [];

  u8(v: number): this {
    const b = Buffer.alloc(1);
    b.writeUInt8(v);
    this.parts.push(b);
    return this;
  }
  u16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    this.parts.push(b);
    return this;
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    this.parts.push(b);
    return this;
  }
  bytes(b: Uint8Array): this {
    this.parts.push(Buffer.from(b));
    return this;
  }
  /** TPM2B: u16 size then the bytes. */
  tpm2b(b: Uint8Array): this {
    if (b.length > 0xffff) throw new RangeError(`TPM2B of ${b.length} bytes exceeds 65535`);
    return this.u16(b.length).bytes(b);
  }
  get length(): number {
    return this.parts.reduce((n, p) => n + p.length, 0);
  }
  build(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export class Reader {
  private off = 0;
  constructor(
    private readonly buf: Buffer,
    /** What is being parsed, for error messages (e.g. `TPM2_Quote response`). */
    private readonly what: string,
  ) {}

  private need(n: number, field: string): void {
    if (this.off + n > this.buf.length) {
      throw new TpmResponseError(`${this.what}: truncated at ${field} (need ${n} bytes at offset ${this.off}, have ${this.buf.length - this.off})`);
    }
  }
  u8(field: string): number {
    this.need(1, field);
    return this.buf.readUInt8(this.off++);
  }
  u16(field: string): number {
    this.need(2, field);
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  u64(field: string): bigint {
    this.need(8, field);
    const v = this.buf.readBigUInt64BE(this.off);
    this.off += 8;
    return v;
  }
  bytes(n: number, field: string): Buffer {
    this.need(n, field);
    const v = Buffer.from(this.buf.subarray(this.off, this.off + n));
    this.off += n;
    return v;
  }
  /**
   * The next n bytes as a view of the input, not a copy: for secrets (RSA_Decrypt's message), which
   * then live in one buffer only, the one the caller wipes.
   */
  view(n: number, field: string): Buffer {
    this.need(n, field);
    const v = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
  /** A TPM2B as a view (see view). */
  tpm2bView(field: string, max = 0xffff): Buffer {
    const n = this.u16(`${field}.size`);
    if (n > max) throw new TpmResponseError(`${this.what}: ${field} declares ${n} bytes, more than the ${max} allowed`);
    return this.view(n, field);
  }
  /** TPM2B with an optional upper bound on its declared size. */
  tpm2b(field: string, max = 0xffff): Buffer {
    const n = this.u16(`${field}.size`);
    if (n > max) throw new TpmResponseError(`${this.what}: ${field} declares ${n} bytes, more than the ${max} allowed`);
    return this.bytes(n, field);
  }
  get offset(): number {
    return this.off;
  }
  get remaining(): number {
    return this.buf.length - this.off;
  }
  /** A sub-reader over the next n bytes (e.g. the parameter area), advancing past them; a view, no copy. */
  sub(n: number, field: string): Reader {
    return new Reader(this.view(n, field), `${this.what} ${field}`);
  }
  /** The structure must have been consumed exactly. */
  end(field: string): void {
    if (this.off !== this.buf.length) throw new TpmResponseError(`${this.what}: ${this.buf.length - this.off} unexpected trailing bytes after ${field}`);
  }
}
