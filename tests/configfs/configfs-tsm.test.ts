import { verify } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parseReport, reportDataFor } from '../../src/snp/report';
import { SimulatedPlatform } from '../../src/snp/simulator';
import { ConfigfsTsmSource } from '../../src/snp/sources/configfs-tsm';
import { FakeConfigfsKernel, FakeKernelOptions } from './fake-kernel';

const platform = new SimulatedPlatform();
const rd = reportDataFor(Buffer.from('configfs runtime data'));
let root: string;

beforeEach(() => {
  root = fs.mkdtempSync(path.join(tmpdir(), 'tsm-report-'));
});
afterEach(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

function setup(opts: FakeKernelOptions = {}) {
  const kernel = new FakeConfigfsKernel(root, platform, opts);
  return { kernel, source: new ConfigfsTsmSource({ root, client: kernel }) };
}

const leftovers = () => fs.readdirSync(root);

describe('ConfigfsTsmSource', () => {
  it('gets a report bound to REPORT_DATA at the requested VMPL, with the host certificates', async () => {
    const { kernel, source } = setup();
    expect(source.kind).toBe('configfs-tsm');
    const ev = await source.getReport({ reportData: rd, vmpl: 2, extended: true });
    const r = parseReport(ev.report);
    expect(r.reportData).toEqual(rd);
    expect(r.vmpl).toBe(2);
    expect(r.chipId).toEqual(platform.chipId);
    // A genuine signed report: r, s little-endian at 0x2A0 verify with the platform's VCEK.
    const sig = Buffer.concat([Buffer.from(ev.report.subarray(0x2a0, 0x2d0)).reverse(), Buffer.from(ev.report.subarray(0x2e8, 0x318)).reverse()]);
    expect(verify('sha384', ev.report.subarray(0, 0x2a0), { key: platform.vcekPublicKey, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true);
    expect(ev.certTable?.map((c) => c.kind)).toEqual(['vcek', 'ask', 'ark']);
    expect(ev.certTable?.[0].data).toEqual(platform.vcekDer);
    expect(ev.certTable?.[2].data).toEqual(platform.arkDer);
    const ops = kernel.calls.map((c) => c.split(' ')[0] + ' ' + (c.startsWith('mkdir') || c.startsWith('rmdir') ? '<entry>' : c.split(' ')[1]));
    expect(ops).toEqual([
      'mkdir <entry>',
      'read provider',
      'read generation',
      'write privlevel',
      'write inblob',
      'read outblob',
      'read auxblob',
      'read generation',
      'rmdir <entry>',
    ]);
    expect(leftovers()).toEqual([]);
  });

  it('leaves privlevel alone without a VMPL and skips auxblob unless extended', async () => {
    const { kernel, source } = setup();
    const ev = await source.getReport({ reportData: rd });
    expect(parseReport(ev.report).vmpl).toBe(0);
    expect(ev.certTable).toBeUndefined();
    expect(kernel.calls.some((c) => c.includes('privlevel') || c.includes('auxblob'))).toBe(false);
  });

  it('returns no certificate table when the host has none or the kernel has no auxblob', async () => {
    expect((await setup({ noCerts: true }).source.getReport({ reportData: rd, extended: true })).certTable).toBeUndefined();
    expect((await setup({ noAuxblob: true }).source.getReport({ reportData: rd, extended: true })).certTable).toBeUndefined();
    expect(leftovers()).toEqual([]);
  });

  it('refuses a provider other than sev_guest', async () => {
    const { source } = setup({ provider: 'tdx_guest' });
    await expect(source.getReport({ reportData: rd })).rejects.toMatchObject({ code: 'ERR_CONFIGFS_PROVIDER', status: 500 });
    expect(leftovers()).toEqual([]);
  });

  it('detects a concurrent writer through generation', async () => {
    const { source } = setup({
      beforeRead: (attr, entry, kernel) => {
        if (attr === 'outblob') kernel.bump(entry);
      },
    });
    const err = await source.getReport({ reportData: rd, vmpl: 0 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_CONFIGFS_RACE' });
    expect((err as Error).message).toMatch(/generation went from 0 to 3 but we wrote 2/);
    expect(leftovers()).toEqual([]);
  });

  it('maps kernel errors to DeviceError with the errno and still removes the entry', async () => {
    const { source } = setup({
      beforeRead: (attr) => {
        if (attr === 'outblob') throw Object.assign(new Error('EIO: firmware said no'), { code: 'EIO' });
      },
    });
    await expect(source.getReport({ reportData: rd })).rejects.toMatchObject({ code: 'ERR_CONFIGFS', errno: 'EIO' });
    expect(leftovers()).toEqual([]);
  });

  it('fails closed on a malformed auxblob or a short outblob', async () => {
    const broken = setup();
    const realRead = broken.kernel.readFile.bind(broken.kernel);
    broken.kernel.readFile = async (p) => (p.endsWith('auxblob') ? Buffer.alloc(10, 1) : realRead(p));
    await expect(broken.source.getReport({ reportData: rd, extended: true })).rejects.toMatchObject({ code: 'ERR_CONFIGFS_AUXBLOB' });

    const short = setup();
    const realRead2 = short.kernel.readFile.bind(short.kernel);
    short.kernel.readFile = async (p) => (p.endsWith('outblob') ? Buffer.alloc(1000) : realRead2(p));
    await expect(short.source.getReport({ reportData: rd })).rejects.toMatchObject({ code: 'ERR_CONFIGFS_REPORT' });
    expect(leftovers()).toEqual([]);
  });

  it('validates the request before touching configfs', async () => {
    const { kernel, source } = setup();
    await expect(source.getReport({ reportData: Buffer.alloc(63) })).rejects.toMatchObject({ code: 'ERR_REPORT_DATA' });
    await expect(source.getReport({ reportData: rd, vmpl: 7 })).rejects.toMatchObject({ code: 'ERR_VMPL' });
    expect(kernel.calls).toEqual([]);
  });

  it('reports a missing root as a DeviceError', async () => {
    const source = new ConfigfsTsmSource({ root: path.join(root, 'absent') });
    await expect(source.getReport({ reportData: rd })).rejects.toMatchObject({ code: 'ERR_CONFIGFS', errno: 'ENOENT' });
  });

  it('uses a unique entry per request', async () => {
    const { kernel, source } = setup();
    await Promise.all([source.getReport({ reportData: rd }), source.getReport({ reportData: rd })]);
    const made = kernel.calls.filter((c) => c.startsWith('mkdir'));
    expect(new Set(made).size).toBe(2);
    expect(leftovers()).toEqual([]);
  });
});

describe('ConfigfsTsmSource.isAvailable', () => {
  it('is true for a sev_guest provider and cleans up its probe', async () => {
    const { kernel } = setup();
    expect(await ConfigfsTsmSource.isAvailable(root, kernel)).toBe(true);
    expect(leftovers()).toEqual([]);
  });

  it('is false for another provider, a missing root, or a plain directory', async () => {
    expect(await ConfigfsTsmSource.isAvailable(root, setup({ provider: 'tdx_guest' }).kernel)).toBe(false);
    expect(await ConfigfsTsmSource.isAvailable(path.join(root, 'absent'))).toBe(false);
    // A plain directory through the real node:fs client: the probe entry has no provider file.
    expect(await ConfigfsTsmSource.isAvailable(root)).toBe(false);
    expect(leftovers()).toEqual([]);
  });
});
