/**
 * TCB_VERSION decoding. The u64 packs security patch levels whose byte positions depend on the
 * product: Milan and Genoa `[bootloader, tee, 0, 0, 0, 0, snp, microcode]`, Turin
 * `[fmc, bootloader, tee, snp, 0, 0, 0, microcode]` (byte 0 = least significant).
 */
import { InvalidInputError } from '../common/errors';

export type Product = 'Milan' | 'Genoa' | 'Turin';
export const PRODUCTS: readonly Product[] = ['Milan', 'Genoa', 'Turin'];

export interface TcbParts {
  bootloader: number;
  tee: number;
  snp: number;
  microcode: number;
  /** Turin only. */
  fmc?: number;
}

export interface DecodedTcb extends TcbParts {
  /** 16 lowercase hex digits of the u64, most significant first (the `tcbm` form THIM uses). */
  raw: string;
}

export function parseProduct(s: string): Product {
  const hit = PRODUCTS.find((p) => p.toLowerCase() === s.trim().toLowerCase());
  if (!hit) throw new InvalidInputError('ERR_PRODUCT', `unknown SEV-SNP product "${s}" (expected Milan, Genoa or Turin)`);
  return hit;
}

export function tcbToHex(tcb: bigint): string {
  return tcb.toString(16).padStart(16, '0');
}

export function tcbFromHex(hex: string): bigint {
  if (!/^[0-9a-fA-F]{1,16}$/.test(hex)) throw new InvalidInputError('ERR_TCB', `TCB "${hex}" is not up to 16 hex digits`);
  return BigInt('0x' + hex);
}

function byteAt(tcb: bigint, i: number): number {
  return Number((tcb >> BigInt(8 * i)) & 0xffn);
}

export function decodeTcb(tcb: bigint, product: Product = 'Milan'): DecodedTcb {
  const raw = tcbToHex(tcb);
  if (product === 'Turin') {
    return { raw, fmc: byteAt(tcb, 0), bootloader: byteAt(tcb, 1), tee: byteAt(tcb, 2), snp: byteAt(tcb, 3), microcode: byteAt(tcb, 7) };
  }
  return { raw, bootloader: byteAt(tcb, 0), tee: byteAt(tcb, 1), snp: byteAt(tcb, 6), microcode: byteAt(tcb, 7) };
}

export function encodeTcb(parts: TcbParts, product: Product = 'Milan'): bigint {
  const bytes = new Array<number>(8).fill(0);
  const set = (i: number, v: number | undefined, name: string) => {
    const x = v ?? 0;
    if (!Number.isInteger(x) || x < 0 || x > 255) throw new InvalidInputError('ERR_TCB', `TCB ${name} SPL ${x} is not a byte`);
    bytes[i] = x;
  };
  if (product === 'Turin') {
    set(0, parts.fmc, 'fmc');
    set(1, parts.bootloader, 'bootloader');
    set(2, parts.tee, 'tee');
    set(3, parts.snp, 'snp');
  } else {
    set(0, parts.bootloader, 'bootloader');
    set(1, parts.tee, 'tee');
    set(6, parts.snp, 'snp');
  }
  set(7, parts.microcode, 'microcode');
  return bytes.reduce((acc, b, i) => acc | (BigInt(b) << BigInt(8 * i)), 0n);
}

/** Product from the CPUID family/model a v3+ report carries; undefined when unknown (v2 reports). */
export function productFromCpuid(family: number, model: number): Product | undefined {
  if (family === 0x19) {
    if (model <= 0x0f) return 'Milan';
    if ((model >= 0x10 && model <= 0x1f) || (model >= 0xa0 && model <= 0xaf)) return 'Genoa';
  }
  if (family === 0x1a && model <= 0x1f) return 'Turin';
  return undefined;
}
