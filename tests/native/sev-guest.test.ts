/**
 * The real addon binary against a fake SEV guest device (an LD_PRELOAD shim that checks the ioctl
 * ABI like the kernel does), plus in-process failures against paths that exist on every Linux box.
 */
import { spawnSync } from 'node:child_process';
import { createSign, createVerify, generateKeyPairSync, KeyObject, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DeviceError, InvalidInputError } from '../../src/common/errors';
import { CERT_GUIDS, parseCertTable, buildCertTable } from '../../src/snp/cert-table';
import { ADDON_PATH, loadAddon } from '../../src/snp/native';
import { buildReport, Off, parseReport, SIGNED_LENGTH } from '../../src/snp/report';
import { LegacySevSource } from '../../src/snp/sources/legacy-sev';
import { SevGuestSource } from '../../src/snp/sources/sev-guest';
import { buildShim, ensureAddonBuilt, transpileTree } from './build';

const DEVICE = '/dev/skr-test-fake-sev-guest'; // does not exist: only the shim knows it
const CHILD = path.join(__dirname, 'child.js');
const USER_DATA = Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 7 + 3) & 0xff));
const VMPL = 2;

let dir: string;
let shim: string;
let distDir: string;
let reportFile: string;
let certsFile: string;
let report: Buffer;
let vcekKey: KeyObject;
const certs = { vcek: randomBytes(1350), ask: randomBytes(1650), ark: randomBytes(1620) };

/** A report signed like firmware does: ECDSA P-384 over [0, 0x2A0), r and s little-endian in 72-byte fields. */
function signedReport(reportData: Buffer, vmpl: number): { raw: Buffer; publicKey: KeyObject } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
  const raw = buildReport({
    version: 3, vmpl, reportData, policy: 0x3001fn, reportedTcb: 0x7308000000000003n,
    measurement: randomBytes(48), hostData: randomBytes(32), chipId: randomBytes(64),
  });
  const sig = createSign('sha384').update(raw.subarray(0, SIGNED_LENGTH)).sign({ key: privateKey, dsaEncoding: 'ieee-p1363' });
  Buffer.from(sig.subarray(0, 48)).reverse().copy(raw, Off.signature);
  Buffer.from(sig.subarray(48)).reverse().copy(raw, Off.signature + 72);
  return { raw, publicKey };
}

function signatureVerifies(raw: Buffer, publicKey: KeyObject): boolean {
  const r = Buffer.from(raw.subarray(Off.signature, Off.signature + 48)).reverse();
  const s = Buffer.from(raw.subarray(Off.signature + 72, Off.signature + 120)).reverse();
  return createVerify('sha384')
    .update(raw.subarray(0, SIGNED_LENGTH))
    .verify({ key: publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.concat([r, s]));
}

interface Outcome {
  ok: boolean;
  report?: string;
  certs?: string;
  certTable?: { guid: string; kind: string; data: string }[];
  error?: { name: string; message: string; code: string; errno?: number; syscall?: string; fwErr?: string; firmwareError?: string };
}

function child(spec: Record<string, unknown>, env: Record<string, string> = {}): { out: Outcome[]; stderr: string } {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FAKE_SEV_')));
  const res = spawnSync(process.execPath, [CHILD, JSON.stringify({ addonPath: ADDON_PATH, distDir, device: DEVICE, userData: USER_DATA.toString('hex'), vmpl: VMPL, ...spec })], {
    encoding: 'utf8',
    env: {
      ...base,
      LD_PRELOAD: shim,
      FAKE_SEV_PATH: DEVICE,
      FAKE_SEV_REPORT_FILE: reportFile,
      FAKE_SEV_EXPECT_USERDATA: USER_DATA.toString('hex'),
      FAKE_SEV_EXPECT_VMPL: String(VMPL),
      ...env,
    },
  });
  if (res.status !== 0) throw new Error(`child failed (${res.status}): ${res.stderr}`);
  return { out: JSON.parse(res.stdout) as Outcome[], stderr: res.stderr };
}

beforeAll(() => {
  ensureAddonBuilt();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-native-'));
  shim = buildShim(dir);
  distDir = path.join(dir, 'dist');
  transpileTree(['src/snp/sources/sev-guest.ts', 'src/snp/sources/legacy-sev.ts'], distDir);
  const signed = signedReport(USER_DATA, VMPL);
  report = signed.raw;
  vcekKey = signed.publicKey;
  reportFile = path.join(dir, 'report.bin');
  fs.writeFileSync(reportFile, report);
  certsFile = path.join(dir, 'certs.bin');
  fs.writeFileSync(certsFile, buildCertTable([{ kind: 'vcek', data: certs.vcek }, { kind: 'ask', data: certs.ask }, { kind: 'ark', data: certs.ark }]));
}, 180_000);

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('addon against the fake /dev/sev-guest', () => {
  it('the fixture report signature verifies, and not once tampered with', () => {
    expect(signatureVerifies(report, vcekKey)).toBe(true);
    const bad = Buffer.from(report);
    bad[Off.measurement] ^= 1;
    expect(signatureVerifies(bad, vcekKey)).toBe(false);
  });

  it('SNP_GET_REPORT returns the firmware report byte for byte', () => {
    const { out, stderr } = child({ mode: 'addon', op: 'getReport' });
    expect(stderr).not.toMatch(/fake_sev_guest/);
    expect(out).toHaveLength(1);
    expect(out[0].ok).toBe(true);
    const got = Buffer.from(out[0].report as string, 'hex');
    expect(got.equals(report)).toBe(true);
    expect(signatureVerifies(got, vcekKey)).toBe(true);
    expect(parseReport(got).reportData).toEqual(USER_DATA);
    expect(parseReport(got).vmpl).toBe(VMPL);
  });

  it('SNP_GET_EXT_REPORT probes with no buffer, then retries with the page-rounded size the host asked for', () => {
    const { out, stderr } = child({ mode: 'addon', op: 'getExtReport' }, { FAKE_SEV_CERTS_FILE: certsFile, FAKE_SEV_TRACE: '1' });
    const passes = [...stderr.matchAll(/SNP_GET_EXT_REPORT certs_len=(\d+) certs_address=(\w+)/g)].map((m) => [Number(m[1]), m[2]]);
    const tableSize = fs.statSync(certsFile).size;
    const pageRounded = Math.ceil(tableSize / 4096) * 4096;
    expect(tableSize).toBeGreaterThan(4096); // so rounding to whole pages is really exercised
    expect(passes).toEqual([[0, 'null'], [pageRounded, 'set']]);
    expect(out[0].ok).toBe(true);
    expect(Buffer.from(out[0].report as string, 'hex').equals(report)).toBe(true);
    const blob = Buffer.from(out[0].certs as string, 'hex');
    expect(blob.length).toBe(pageRounded);
    expect(blob.subarray(tableSize).every((b) => b === 0)).toBe(true);
    const table = parseCertTable(blob);
    expect(table.map((e) => e.kind)).toEqual(['vcek', 'ask', 'ark']);
    expect(table.map((e) => e.guid)).toEqual([CERT_GUIDS.vcek, CERT_GUIDS.ask, CERT_GUIDS.ark]);
    expect(table[0].data).toEqual(certs.vcek);
    expect(table[2].data).toEqual(certs.ark);
  });

  it('SNP_GET_EXT_REPORT from a host without certificates gives the report and an empty blob in one pass', () => {
    const { out, stderr } = child({ mode: 'addon', op: 'getExtReport' }, { FAKE_SEV_TRACE: '1' });
    expect(stderr.match(/SNP_GET_EXT_REPORT certs_len/g)).toHaveLength(1);
    expect(out[0].ok).toBe(true);
    expect(out[0].certs).toBe('');
    expect(Buffer.from(out[0].report as string, 'hex').equals(report)).toBe(true);
  });

  it('legacy /dev/sev guest message returns the same report', () => {
    const { out, stderr } = child({ mode: 'addon', op: 'getLegacyReport' });
    expect(stderr).not.toMatch(/fake_sev_guest/);
    expect(out[0].ok).toBe(true);
    const got = Buffer.from(out[0].report as string, 'hex');
    expect(got.equals(report)).toBe(true);
    expect(signatureVerifies(got, vcekKey)).toBe(true);
  });

  it.each(['getReport', 'getExtReport', 'getLegacyReport'])('%s: the device sees a VMPL mismatch and refuses', (op) => {
    const { out, stderr } = child({ mode: 'addon', op, vmpl: 1 });
    expect(stderr).toContain('fake_sev_guest: vmpl mismatch: got 1 want 2');
    expect(out[0].ok).toBe(false);
    expect(out[0].error).toMatchObject({ code: 'EINVAL', errno: 22, syscall: 'ioctl' });
    expect(out[0].error?.message).toMatch(/^ioctl \w+ on \/dev\/skr-test-fake-sev-guest failed: EINVAL \(Invalid argument\)$/);
  });

  it('the device sees user_data laid out wrongly and refuses', () => {
    const shifted = Buffer.concat([Buffer.alloc(1), USER_DATA.subarray(0, 63)]);
    const { out, stderr } = child({ mode: 'addon', op: 'getReport', userData: shifted.toString('hex') });
    expect(stderr).toContain('fake_sev_guest: user_data mismatch at byte 0: got 00 want 03');
    expect(out[0].error).toMatchObject({ code: 'EINVAL', syscall: 'ioctl' });
  });

  it('passes errno and exitinfo2 through when the host reports an error', () => {
    const { out } = child({ mode: 'addon', op: 'getReport' }, { FAKE_SEV_FAIL_ERRNO: '5', FAKE_SEV_FAIL_EXITINFO2: '200000000' });
    expect(out[0].error).toMatchObject({ code: 'EIO', errno: 5, syscall: 'ioctl', fwErr: '0x200000000' });
    expect(out[0].error?.message).toBe(
      `ioctl SNP_GET_REPORT on ${DEVICE} failed: EIO (Input/output error), exitinfo2 0x200000000`,
    );
  });

  it('a non-zero status in the firmware response is an error, not a report', () => {
    const { out } = child({ mode: 'addon', op: 'getReport' }, { FAKE_SEV_RESP_STATUS: '16' });
    expect(out[0].ok).toBe(false);
    expect(out[0].error).toMatchObject({ code: 'ERR_SNP_FIRMWARE', fwErr: '0x16', syscall: 'ioctl' });
    expect(out[0].error?.errno).toBeUndefined();
  });

  it('the addon itself runs requests on worker threads concurrently (the control for the lock test)', () => {
    const { out, stderr } = child({ mode: 'addon', op: 'getReport', repeat: 6 }, { FAKE_SEV_DELAY_MS: '30' });
    expect(out.every((o) => o.ok && Buffer.from(o.report as string, 'hex').equals(report))).toBe(true);
    expect(stderr).toContain('overlapping ioctl');
  });
});

describe('evidence sources over the fake device', () => {
  it('SevGuestSource extended: report plus a parsed certificate table', () => {
    const { out } = child({ mode: 'source', kind: 'sev-guest', extended: true }, { FAKE_SEV_CERTS_FILE: certsFile });
    expect(out[0].ok).toBe(true);
    expect(Buffer.from(out[0].report as string, 'hex').equals(report)).toBe(true);
    expect(out[0].certTable?.map((e) => [e.kind, e.guid])).toEqual([
      ['vcek', CERT_GUIDS.vcek], ['ask', CERT_GUIDS.ask], ['ark', CERT_GUIDS.ark],
    ]);
    expect(Buffer.from(out[0].certTable?.[1].data as string, 'hex')).toEqual(certs.ask);
  });

  it('SevGuestSource without extended uses SNP_GET_REPORT and returns no table', () => {
    const { out, stderr } = child({ mode: 'source', kind: 'sev-guest' }, { FAKE_SEV_CERTS_FILE: certsFile, FAKE_SEV_TRACE: '1' });
    expect(stderr).toContain('ioctl 0xc0205300');
    expect(stderr).not.toContain('ioctl 0xc0205302');
    expect(out[0].ok).toBe(true);
    expect(out[0].certTable).toBeUndefined();
  });

  it('LegacySevSource returns the report and ignores extended', () => {
    const { out, stderr } = child({ mode: 'source', kind: 'sev', extended: true }, { FAKE_SEV_TRACE: '1' });
    expect(stderr).toContain('ioctl 0xc0285301');
    expect(out[0].ok).toBe(true);
    expect(Buffer.from(out[0].report as string, 'hex').equals(report)).toBe(true);
  });

  it.each(['sev-guest', 'sev'])('%s source serialises concurrent callers: one ioctl at a time', (kind) => {
    const { out, stderr } = child({ mode: 'source', kind, repeat: 6 }, { FAKE_SEV_DELAY_MS: '30', FAKE_SEV_TRACE: '1' });
    expect(out).toHaveLength(6);
    expect(out.every((o) => o.ok)).toBe(true);
    expect(stderr.match(/fake_sev_guest: ioctl/g)).toHaveLength(6);
    expect(stderr).not.toContain('overlapping ioctl');
  });

  it('maps a device error to DeviceError with errno and firmwareError', () => {
    const { out } = child({ mode: 'source', kind: 'sev-guest' }, { FAKE_SEV_FAIL_ERRNO: '16', FAKE_SEV_FAIL_EXITINFO2: '200000000' });
    expect(out[0].error).toMatchObject({ name: 'DeviceError', code: 'ERR_DEVICE', errno: 'EBUSY', firmwareError: '0x200000000' });
  });

  it('a malformed host certificate table is a device fault', () => {
    const table = buildCertTable([{ kind: 'vcek', data: certs.vcek }]);
    table.writeUInt32LE(0x10000, 20); // VCEK length runs past the buffer
    const bad = path.join(dir, 'bad-certs.bin');
    fs.writeFileSync(bad, table);
    const { out } = child({ mode: 'source', kind: 'sev-guest', extended: true }, { FAKE_SEV_CERTS_FILE: bad });
    expect(out[0].error).toMatchObject({ name: 'DeviceError', code: 'ERR_DEVICE_RESPONSE' });
    expect(out[0].error?.message).toContain('past the end');
  });
});

describe('in-process device failures', () => {
  it('missing device → DeviceError ENOENT from open', async () => {
    const src = new SevGuestSource('/nonexistent/sev-guest');
    const err = await src.getReport({ reportData: USER_DATA }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeviceError);
    expect(err).toMatchObject({ code: 'ERR_DEVICE', errno: 'ENOENT', status: 500, firmwareError: undefined });
    expect((err as Error).message).toBe('open /nonexistent/sev-guest failed: ENOENT (No such file or directory)');
  });

  it.each([
    ['SevGuestSource', () => new SevGuestSource('/dev/null'), false, 'SNP_GET_REPORT'],
    ['SevGuestSource extended', () => new SevGuestSource('/dev/null'), true, 'SNP_GET_EXT_REPORT'],
    ['LegacySevSource', () => new LegacySevSource('/dev/null'), false, 'SEV_SNP_GUEST_MSG_REPORT'],
  ] as const)('%s on /dev/null → ENOTTY from ioctl', async (_name, make, extended, ioctlName) => {
    const err = await make().getReport({ reportData: USER_DATA, extended }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeviceError);
    expect(err).toMatchObject({ code: 'ERR_DEVICE', errno: 'ENOTTY' });
    expect((err as Error).message).toBe(`ioctl ${ioctlName} on /dev/null failed: ENOTTY (Inappropriate ioctl for device)`);
  });

  it('sources validate REPORT_DATA and VMPL before touching the device', async () => {
    const src = new SevGuestSource('/nonexistent/sev-guest');
    await expect(src.getReport({ reportData: Buffer.alloc(63) })).rejects.toThrow(InvalidInputError);
    await expect(src.getReport({ reportData: Buffer.alloc(63) })).rejects.toMatchObject({ code: 'ERR_REPORT_DATA_LENGTH', status: 400 });
    await expect(src.getReport({ reportData: USER_DATA, vmpl: 4 })).rejects.toMatchObject({ code: 'ERR_VMPL' });
    await expect(new LegacySevSource('/nonexistent').getReport({ reportData: USER_DATA, vmpl: 0.5 })).rejects.toMatchObject({ code: 'ERR_VMPL' });
  });

  it('the addon validates its arguments synchronously', () => {
    const addon = loadAddon();
    // Errors made by the addon come from Node's realm, not jest's sandbox: compare by name and code.
    const thrown = (...args: unknown[]) => {
      try {
        (addon.getReport as (...a: unknown[]) => unknown)(...args);
      } catch (e) {
        const { name, code, message } = e as { name: string; code: string; message: string };
        return { name, code, message };
      }
      throw new Error('did not throw synchronously');
    };
    const typeErr = { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' };
    const rangeErr = { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' };
    expect(thrown(1, USER_DATA, 0)).toMatchObject(typeErr);
    expect(thrown('', USER_DATA, 0)).toMatchObject(typeErr);
    expect(thrown('/dev/null\0x', USER_DATA, 0)).toMatchObject({ ...typeErr, message: 'getReport: devicePath must not contain NUL' });
    expect(thrown('/dev/null', 'x'.repeat(64), 0)).toMatchObject(typeErr);
    expect(thrown('/dev/null', Buffer.alloc(65), 0)).toMatchObject({ ...rangeErr, message: 'getReport: userData must be exactly 64 bytes, got 65' });
    expect(thrown('/dev/null', USER_DATA, 4)).toMatchObject(rangeErr);
    expect(thrown('/dev/null', USER_DATA, -1)).toMatchObject(rangeErr);
    expect(thrown('/dev/null', USER_DATA, 1.5)).toMatchObject(rangeErr);
    expect(thrown('/dev/null', USER_DATA, Number.NaN)).toMatchObject(rangeErr);
    expect(thrown('/dev/null', USER_DATA, '0')).toMatchObject(typeErr);
    expect(thrown('/dev/null', USER_DATA)).toMatchObject(typeErr);
  });
});
