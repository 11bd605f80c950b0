/**
 * The GUID-keyed certificate table a host attaches to an extended report (SNP_GET_EXT_REPORT
 * certs buffer, configfs-tsm `auxblob`; GHCB spec §4.1.8.1): 24-byte entries
 * `{ guid[16], u32 offset, u32 length }` ending in an all-zero entry, offsets relative to the start
 * of the table, certificates after it.
 *
 * GUID byte order: hosts write the 16 bytes in canonical string order (AMD's sev-guest tools via
 * libuuid `uuid_parse`, QEMU/virtee, google/go-sev-guest all do), so that is what we write and read
 * first. A table whose known GUIDs appear in EFI mixed-endian order (first three fields
 * little-endian) is recognised too, so such a host still yields the right `kind`.
 */
import { InvalidInputError } from '../common/errors';
import type { CertTableEntry } from './evidence';

export const CERT_TABLE_ENTRY_SIZE = 24;

export type CertKind = CertTableEntry['kind'];

/** GUIDs from the GHCB specification (PROTOCOLS §3). */
export const CERT_GUIDS = {
  vcek: '63da758d-e664-4564-adc5-f4b93be8accd',
  ask: '4ab7b379-bbac-4fe4-a02f-05aef327c782',
  ark: 'c0b406a4-a803-4952-9743-3fb6014cd0ae',
  vlek: 'a8074bc2-a25a-483e-aae6-39c045a0b8a1',
} as const;

const KIND_BY_GUID = new Map<string, Exclude<CertKind, 'unknown'>>(
  Object.entries(CERT_GUIDS).map(([k, g]) => [g, k as Exclude<CertKind, 'unknown'>]),
);

const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export type GuidByteOrder = 'canonical' | 'efi';

function tableError(message: string): InvalidInputError {
  return new InvalidInputError('ERR_CERT_TABLE', `certificate table: ${message}`);
}

/** Swap the first three GUID fields between canonical (big-endian) and EFI (little-endian) order. */
function swapEfiFields(b: Buffer): Buffer {
  const out = Buffer.from(b);
  out.writeUInt32LE(b.readUInt32BE(0), 0);
  out.writeUInt16LE(b.readUInt16BE(4), 4);
  out.writeUInt16LE(b.readUInt16BE(6), 6);
  return out;
}

export function guidToBytes(guid: string, order: GuidByteOrder = 'canonical'): Buffer {
  const g = guid.toLowerCase();
  if (!GUID_RE.test(g)) throw tableError(`"${guid}" is not a GUID`);
  const b = Buffer.from(g.replace(/-/g, ''), 'hex');
  return order === 'efi' ? swapEfiFields(b) : b;
}

export function guidFromBytes(b: Uint8Array, order: GuidByteOrder = 'canonical'): string {
  if (b.length !== 16) throw tableError(`a GUID is 16 bytes, got ${b.length}`);
  const raw = Buffer.from(b.buffer, b.byteOffset, 16);
  const h = (order === 'efi' ? swapEfiFields(raw) : raw).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Canonical GUID + kind for 16 table bytes, trying canonical order then EFI order for known GUIDs. */
function identify(bytes: Buffer): { guid: string; kind: CertKind } {
  const canonical = guidFromBytes(bytes);
  const kind = KIND_BY_GUID.get(canonical);
  if (kind) return { guid: canonical, kind };
  const efi = guidFromBytes(bytes, 'efi');
  const efiKind = KIND_BY_GUID.get(efi);
  if (efiKind) return { guid: efi, kind: efiKind };
  return { guid: canonical, kind: 'unknown' };
}

/**
 * Parse a certificate table. An empty buffer or one that starts with the terminator means the host
 * supplied no certificates ([]). Every offset/length is bounds-checked; entries may not point into
 * the header, be empty, or repeat a GUID.
 */
export function parseCertTable(input: Uint8Array): CertTableEntry[] {
  const buf = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (buf.length === 0) return [];

  let count = 0;
  for (;; count++) {
    const at = count * CERT_TABLE_ENTRY_SIZE;
    if (at + CERT_TABLE_ENTRY_SIZE > buf.length) {
      throw tableError(`no all-zero terminator entry within ${buf.length} bytes (${count} entries read)`);
    }
    if (buf.subarray(at, at + CERT_TABLE_ENTRY_SIZE).every((x) => x === 0)) break;
  }
  const headerEnd = (count + 1) * CERT_TABLE_ENTRY_SIZE;

  const seen = new Set<string>();
  const entries: CertTableEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * CERT_TABLE_ENTRY_SIZE;
    const { guid, kind } = identify(buf.subarray(at, at + 16));
    const offset = buf.readUInt32LE(at + 16);
    const length = buf.readUInt32LE(at + 20);
    const where = `entry ${i} (${guid})`;
    if (length === 0) throw tableError(`${where} has length 0`);
    if (offset < headerEnd) throw tableError(`${where} offset ${offset} points into the ${headerEnd}-byte header`);
    if (offset + length > buf.length) {
      throw tableError(`${where} spans [${offset}, ${offset + length}) past the end of the ${buf.length}-byte buffer`);
    }
    if (seen.has(guid)) throw tableError(`${where} repeats a GUID`);
    seen.add(guid);
    entries.push({ guid, kind, data: Buffer.from(buf.subarray(offset, offset + length)) });
  }
  return entries;
}

export interface CertTableInput {
  /** Either a GUID or a known kind; a kind wins when both are given. */
  guid?: string;
  kind?: Exclude<CertKind, 'unknown'>;
  data: Uint8Array;
}

/** Serialise a certificate table the way hosts lay it out: header, terminator, then the certificates. */
export function buildCertTable(entries: CertTableInput[], opts: { guidOrder?: GuidByteOrder } = {}): Buffer {
  const headerEnd = (entries.length + 1) * CERT_TABLE_ENTRY_SIZE;
  const header = Buffer.alloc(headerEnd);
  const bodies: Buffer[] = [];
  let offset = headerEnd;
  entries.forEach((e, i) => {
    const guid = e.kind ? CERT_GUIDS[e.kind] : e.guid;
    if (guid === undefined) throw tableError(`entry ${i} needs a guid or a kind`);
    if (e.data.length === 0) throw tableError(`entry ${i} (${guid}) has no data`);
    const at = i * CERT_TABLE_ENTRY_SIZE;
    guidToBytes(guid, opts.guidOrder).copy(header, at);
    header.writeUInt32LE(offset, at + 16);
    header.writeUInt32LE(e.data.length, at + 20);
    bodies.push(Buffer.from(e.data));
    offset += e.data.length;
  });
  return Buffer.concat([header, ...bodies]);
}
