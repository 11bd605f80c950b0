import { createHash } from 'node:crypto';
import { buildReport, parseReport, REPORT_SIZE, reportToJson, reportDataFor } from '../../src/snp/report';
import { decodeTcb, encodeTcb, tcbToHex } from '../../src/snp/tcb';
import { describeVectors, vector } from '../helpers/vectors';

describe('report layout', () => {
  it('round-trips every field through build and parse', () => {
    const fields = {
      version: 3, guestSvn: 7, policy: 0x3001fn, familyId: Buffer.alloc(16, 1), imageId: Buffer.alloc(16, 2),
      vmpl: 2, currentTcb: 0x11n, platformInfo: 3n, signerInfo: 0, reportData: Buffer.alloc(64, 3),
      measurement: Buffer.alloc(48, 4), hostData: Buffer.alloc(32, 5), idKeyDigest: Buffer.alloc(48, 6),
      authorKeyDigest: Buffer.alloc(48, 7), reportId: Buffer.alloc(32, 8), reportIdMa: Buffer.alloc(32, 9),
      reportedTcb: 0x7308000000000003n, cpuidFamId: 0x19, cpuidModId: 0x11, cpuidStep: 1, chipId: Buffer.alloc(64, 10),
      committedTcb: 0x22n, currentBuild: 1, currentMinor: 55, currentMajor: 1, committedBuild: 2, committedMinor: 3,
      committedMajor: 1, launchTcb: 0x33n, signatureR: Buffer.alloc(72, 11), signatureS: Buffer.alloc(72, 12),
    };
    const raw = buildReport(fields);
    expect(raw.length).toBe(REPORT_SIZE);
    const r = parseReport(raw);
    for (const [k, v] of Object.entries(fields)) expect((r as unknown as Record<string, unknown>)[k]).toEqual(v);
    expect(reportToJson(r).product).toBe('Genoa');
  });

  it('refuses wrong lengths and pre-v2 versions with typed errors', () => {
    expect(() => parseReport(Buffer.alloc(100))).toThrow(expect.objectContaining({ code: 'ERR_REPORT_LENGTH' }));
    expect(() => parseReport(Buffer.alloc(REPORT_SIZE))).toThrow(expect.objectContaining({ code: 'ERR_REPORT_VERSION' }));
  });

  it('tolerates non-zero reserved bytes in newer versions', () => {
    const raw = buildReport({ version: 5 });
    raw.fill(0xee, 0x1f8, 0x2a0);
    expect(parseReport(raw).version).toBe(5);
  });

  it('binds sha256(runtime data) followed by 32 zero bytes', () => {
    const rd = reportDataFor(Buffer.from('hello'));
    expect(rd.subarray(0, 32)).toEqual(createHash('sha256').update('hello').digest());
    expect(rd.subarray(32)).toEqual(Buffer.alloc(32));
  });
});

describe('TCB encoding', () => {
  it('decodes Milan/Genoa and Turin layouts differently', () => {
    expect(decodeTcb(0x7308000000000003n, 'Milan')).toEqual({ raw: '7308000000000003', bootloader: 3, tee: 0, snp: 8, microcode: 0x73 });
    expect(decodeTcb(0x4800000018040201n, 'Turin')).toEqual({ raw: '4800000018040201', fmc: 1, bootloader: 2, tee: 4, snp: 0x18, microcode: 0x48 });
  });
  it('encodes what it decodes', () => {
    for (const p of ['Milan', 'Genoa', 'Turin'] as const) {
      const parts = { bootloader: 9, tee: 1, snp: 22, microcode: 0xd1, fmc: p === 'Turin' ? 3 : undefined };
      const t = encodeTcb(parts, p);
      expect(decodeTcb(t, p)).toMatchObject({ bootloader: 9, tee: 1, snp: 22, microcode: 0xd1 });
    }
    expect(tcbToHex(1n)).toBe('0000000000000001');
  });
});

describeVectors('real Milan report', () => {
  it('decodes the documented fields', () => {
    const r = parseReport(vector('real-milan/snp_report.bin'));
    const j = reportToJson(r);
    expect(j.version).toBe(2);
    expect(j.vmpl).toBe(0);
    expect(j.policy).toBe(0x3001f);
    expect(j.reportedTcb.raw).toBe('7308000000000003');
    expect(j.hostData).toBe('cadd74f71ebb8fbf9782baab649612520f3c416bc5ce9ac768808ddc8d9b031c');
    expect(j.measurement).toBe('51068107cdc7ee3d89c7821b05bca6147eb77b2005ae759050fc049b65a1b0beabc65a9d857acecf23225f5ec76849f5');
    expect(j.signatureAlgo).toBe(1);
  });
});
