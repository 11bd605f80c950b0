import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DeviceError, InvalidInputError } from '../../src/common/errors';
import { ADDON_PATH, DeviceLock, firstUsefulLogLine, loadAddon, toDeviceError } from '../../src/snp/native';
import { SevGuestSource } from '../../src/snp/sources/sev-guest';

describe('addon loader', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-loader-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('resolves the addon from the package root', () => {
    expect(ADDON_PATH).toBe(path.resolve(__dirname, '..', '..', 'native', 'build', 'Release', 'sev_guest.node'));
  });

  it('a missing addon is ERR_NATIVE_UNAVAILABLE quoting the build log', () => {
    const log = path.join(dir, 'build-error.log');
    fs.writeFileSync(log, [
      'gyp info it worked if it ends with ok',
      '../src/sev_guest.c:1:10: fatal error: node_api.h: No such file or directory',
      'gyp ERR! build error',
      'gyp ERR! not ok',
    ].join('\n'));
    let err: unknown;
    try {
      loadAddon({ addonPath: path.join(dir, 'missing.node'), buildLogPath: log });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DeviceError);
    expect(err).toMatchObject({ code: 'ERR_NATIVE_UNAVAILABLE', status: 500 });
    expect((err as Error).message).toContain('did not build');
    expect((err as Error).message).toContain('"../src/sev_guest.c:1:10: fatal error: node_api.h: No such file or directory"');
    expect((err as Error).message).toContain('--simulate');
  });

  it('without a build log it still says what is missing', () => {
    const missing = path.join(dir, 'nope.node');
    expect(() => loadAddon({ addonPath: missing, buildLogPath: path.join(dir, 'no.log') })).toThrow(
      expect.objectContaining({ code: 'ERR_NATIVE_UNAVAILABLE', message: expect.stringContaining(missing) }),
    );
  });

  it('a file that is not an addon is ERR_NATIVE_UNAVAILABLE too', () => {
    const junk = path.join(dir, 'junk.node');
    fs.writeFileSync(junk, 'not an ELF file');
    expect(() => loadAddon({ addonPath: junk, buildLogPath: path.join(dir, 'no.log') })).toThrow(
      expect.objectContaining({ code: 'ERR_NATIVE_UNAVAILABLE' }),
    );
  });

  it('is only raised when a device source is used, as a rejection', async () => {
    const src = new SevGuestSource('/dev/sev-guest', { addonPath: path.join(dir, 'missing.node'), buildLogPath: path.join(dir, 'no.log') });
    expect(src.kind).toBe('sev-guest');
    await expect(src.getReport({ reportData: Buffer.alloc(64) })).rejects.toMatchObject({ code: 'ERR_NATIVE_UNAVAILABLE' });
  });

  it('picks the most telling build-log line', () => {
    expect(firstUsefulLogLine('gyp info ok\ngyp ERR! stack Error: `make` failed with exit code: 2\ngyp ERR! not ok')).toBe(
      'gyp ERR! stack Error: `make` failed with exit code: 2',
    );
    expect(firstUsefulLogLine('gyp ERR! find Python\ngyp ERR! not ok')).toBe('gyp ERR! find Python');
    expect(firstUsefulLogLine('\n\n  something odd  \n')).toBe('something odd');
    expect(firstUsefulLogLine('')).toBeUndefined();
  });
});

describe('toDeviceError', () => {
  it('keeps errno, firmware error and message from the addon', () => {
    const addonErr = Object.assign(new Error('ioctl SNP_GET_REPORT on /dev/sev-guest failed: EIO (Input/output error)'), {
      code: 'EIO', errno: 5, syscall: 'ioctl', fwErr: '0x100000000',
    });
    const e = toDeviceError(addonErr);
    expect(e).toBeInstanceOf(DeviceError);
    expect(e).toMatchObject({ code: 'ERR_DEVICE', errno: 'EIO', firmwareError: 0x100000000n, message: addonErr.message });
    expect(e.cause).toBe(addonErr);
  });

  it('a firmware status error has no errno', () => {
    const e = toDeviceError(Object.assign(new Error('status'), { code: 'ERR_SNP_FIRMWARE', syscall: 'ioctl', fwErr: '0x16' }));
    expect(e).toMatchObject({ code: 'ERR_DEVICE', errno: undefined, firmwareError: 0x16n });
  });

  it('argument errors become InvalidInputError; SkrErrors pass through', () => {
    expect(toDeviceError(Object.assign(new RangeError('bad'), { code: 'ERR_OUT_OF_RANGE' }))).toBeInstanceOf(InvalidInputError);
    const own = new DeviceError('ERR_NATIVE_UNAVAILABLE', 'x');
    expect(toDeviceError(own)).toBe(own);
  });
});

describe('DeviceLock', () => {
  it('runs one task at a time, in call order, and survives a failing task', async () => {
    const lock = new DeviceLock();
    const events: string[] = [];
    let active = 0;
    let maxActive = 0;
    const task = (name: string, fail = false) => async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      events.push(`start ${name}`);
      await new Promise((r) => setImmediate(r));
      events.push(`end ${name}`);
      active--;
      if (fail) throw new Error(name);
      return name;
    };
    const results = await Promise.allSettled([lock.run(task('a')), lock.run(task('b', true)), lock.run(task('c'))]);
    expect(maxActive).toBe(1);
    expect(events).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
  });
});
