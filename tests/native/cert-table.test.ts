import { randomBytes } from 'node:crypto';
import { InvalidInputError } from '../../src/common/errors';
import {
  buildCertTable, CERT_GUIDS, CERT_TABLE_ENTRY_SIZE, guidFromBytes, guidToBytes, parseCertTable,
} from '../../src/snp/cert-table';

const vcek = randomBytes(1300);
const ask = randomBytes(1600);
const ark = randomBytes(1580);

function expectTableError(buf: Buffer, message: RegExp): void {
  let err: unknown;
  try {
    parseCertTable(buf);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(InvalidInputError);
  expect(err).toMatchObject({ code: 'ERR_CERT_TABLE' });
  expect((err as Error).message).toMatch(message);
}

describe('certificate table GUIDs', () => {
  it('writes GUIDs in canonical string byte order, as AMD tools and go-sev-guest do', () => {
    expect(guidToBytes(CERT_GUIDS.vcek).toString('hex')).toBe('63da758de6644564adc5f4b93be8accd');
    expect(guidToBytes(CERT_GUIDS.vcek, 'efi').toString('hex')).toBe('8d75da6364e66445adc5f4b93be8accd');
    expect(guidFromBytes(Buffer.from('8d75da6364e66445adc5f4b93be8accd', 'hex'), 'efi')).toBe(CERT_GUIDS.vcek);
    expect(() => guidToBytes('not-a-guid')).toThrow(InvalidInputError);
  });
});

describe('parseCertTable / buildCertTable', () => {
  it('round-trips entries with their kinds and exact bytes', () => {
    const buf = buildCertTable([{ kind: 'vcek', data: vcek }, { kind: 'ask', data: ask }, { kind: 'ark', data: ark }]);
    expect(buf.length).toBe(4 * CERT_TABLE_ENTRY_SIZE + vcek.length + ask.length + ark.length);
    expect(buf.subarray(3 * 24, 4 * 24).every((b) => b === 0)).toBe(true); // terminator
    expect(buf.readUInt32LE(16)).toBe(96); // first certificate right after the header
    const t = parseCertTable(buf);
    expect(t.map((e) => e.kind)).toEqual(['vcek', 'ask', 'ark']);
    expect(t.map((e) => e.guid)).toEqual([CERT_GUIDS.vcek, CERT_GUIDS.ask, CERT_GUIDS.ark]);
    expect(t[0].data).toEqual(vcek);
    expect(t[1].data).toEqual(ask);
    expect(t[2].data).toEqual(ark);
  });

  it('knows VLEK and keeps unknown GUIDs as unknown', () => {
    const other = '00000000-0000-c0de-0000-000000000000';
    const t = parseCertTable(buildCertTable([{ kind: 'vlek', data: vcek }, { guid: other, data: ask }]));
    expect(t.map((e) => [e.kind, e.guid])).toEqual([['vlek', CERT_GUIDS.vlek], ['unknown', other]]);
  });

  it('recognises known GUIDs written in EFI mixed-endian order', () => {
    const t = parseCertTable(buildCertTable([{ kind: 'ark', data: ark }, { kind: 'vcek', data: vcek }], { guidOrder: 'efi' }));
    expect(t.map((e) => [e.kind, e.guid])).toEqual([['ark', CERT_GUIDS.ark], ['vcek', CERT_GUIDS.vcek]]);
  });

  it('reads the page-padded blob a host returns, ignoring the zero tail', () => {
    const table = buildCertTable([{ kind: 'vcek', data: vcek }]);
    const padded = Buffer.concat([table, Buffer.alloc(8192 - table.length)]);
    expect(parseCertTable(padded)).toHaveLength(1);
  });

  it('treats an empty buffer or a bare terminator as no certificates', () => {
    expect(parseCertTable(Buffer.alloc(0))).toEqual([]);
    expect(parseCertTable(Buffer.alloc(4096))).toEqual([]);
  });

  it('parses from a view at a non-zero offset', () => {
    const table = buildCertTable([{ kind: 'ask', data: ask }]);
    const big = Buffer.concat([Buffer.alloc(7, 0xff), table]);
    expect(parseCertTable(big.subarray(7))[0].data).toEqual(ask);
  });

  it('refuses an entry whose certificate runs past the end', () => {
    const buf = buildCertTable([{ kind: 'vcek', data: vcek }]);
    buf.writeUInt32LE(vcek.length + 1, 20);
    expectTableError(buf, /entry 0 \(63da758d-e664-4564-adc5-f4b93be8accd\) spans \[48, 1349\) past the end of the 1348-byte buffer/);
  });

  it('refuses an offset past the end', () => {
    const buf = buildCertTable([{ kind: 'vcek', data: vcek }]);
    buf.writeUInt32LE(0xfffffff0, 16);
    expectTableError(buf, /past the end/);
  });

  it('refuses a table without a terminator', () => {
    const buf = buildCertTable([{ kind: 'vcek', data: vcek }]).subarray(0, 24);
    expectTableError(buf, /no all-zero terminator/);
    expectTableError(Buffer.alloc(10, 1), /no all-zero terminator/);
    // Non-zero bytes all the way: never runs off the end.
    expectTableError(Buffer.alloc(24 * 5, 0x41), /no all-zero terminator entry within 120 bytes \(5 entries read\)/);
  });

  it('refuses offsets into the header, empty entries and repeated GUIDs', () => {
    const intoHeader = buildCertTable([{ kind: 'vcek', data: vcek }]);
    intoHeader.writeUInt32LE(8, 16);
    expectTableError(intoHeader, /points into the 48-byte header/);
    const empty = buildCertTable([{ kind: 'vcek', data: vcek }]);
    empty.writeUInt32LE(0, 20);
    expectTableError(empty, /has length 0/);
    expectTableError(buildCertTable([{ kind: 'vcek', data: vcek }, { kind: 'vcek', data: ask }]), /entry 1 .* repeats a GUID/);
  });

  it('buildCertTable refuses entries it cannot describe', () => {
    expect(() => buildCertTable([{ data: vcek }])).toThrow(/needs a guid or a kind/);
    expect(() => buildCertTable([{ kind: 'ark', data: Buffer.alloc(0) }])).toThrow(/has no data/);
  });
});
