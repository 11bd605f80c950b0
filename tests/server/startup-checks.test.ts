/**
 * Start-up refuses what would only fail later: a SEV device node the sidecar's user cannot open
 * read/write (it used to start, report ready and fail the first /attest/raw with EACCES), and a
 * LogFile it cannot write (it used to start with no file and no warning).
 *
 * The tests run as root here, and root opens anything: the EACCES cases run a child without
 * CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv), so the file's mode applies to it as to the image's
 * node user. Run as a normal user, the child needs no setpriv at all.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadServerConfig } from '../../src/server/config';
import { startSidecar } from '../../src/server/sidecar';
import { startError } from '../helpers/sidecar';
import { detectEvidenceSource } from '../../src/snp/detect';
import { CLI, freePort, killAll, REPO, run } from '../ship/helpers';

const isRoot = process.getuid?.() === 0;
/** argv prefix running a command without the capabilities that let root ignore file modes. */
const UNPRIVILEGED = isRoot ? ['setpriv', '--bounding-set=-dac_override,-dac_read_search', '--'] : [];

function unprivileged(args: string[], env: NodeJS.ProcessEnv = {}, deadlineMs = 15_000) {
  const argv = [...UNPRIVILEGED, process.execPath, ...args];
  return run(argv[0], argv.slice(1), { cwd: REPO, env: { ...process.env, ...env } }, deadlineMs);
}

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-startup-'));
});
afterEach(() => {
  // The tests take permissions away; give them back so the directory can go.
  for (const p of [dir, ...fs.readdirSync(dir).map((f) => path.join(dir, f))]) fs.chmodSync(p, 0o700);
  fs.rmSync(dir, { recursive: true, force: true });
});
afterAll(() => killAll());

const none = { configfsRoot: '/nonexistent/tsm', sevGuestPath: '/nonexistent/sev-guest', sevPath: '/nonexistent/sev' };

describe('SEV device access at start-up', () => {
  it('a /dev/sev-guest that cannot be opened read/write is refused before anything serves, naming the device and errno', async () => {
    // A directory exists but never opens O_RDWR (EISDIR), whoever asks.
    await expect(detectEvidenceSource({ ...none, sevGuestPath: dir })).rejects.toMatchObject({
      code: 'ERR_DEVICE_ACCESS',
      errno: 'EISDIR',
      message: expect.stringContaining(`cannot open ${dir} for reading and writing (EISDIR)`),
    });
    await expect(detectEvidenceSource({ ...none, sevPath: dir })).rejects.toMatchObject({ code: 'ERR_DEVICE_ACCESS' });
  });

  it('startSidecar refuses to start (no listener) on such a device', async () => {
    const config = loadServerConfig({ port: '0', simulate: false }, {});
    expect(await startError({ config, detect: { ...none, sevGuestPath: dir } })).toMatchObject({ code: 'ERR_DEVICE_ACCESS' });
  });

  it('a root-only device node: the refusal says who runs, who may use the device and how to fix it', async () => {
    const device = path.join(dir, 'sev-guest');
    fs.writeFileSync(device, '');
    fs.chmodSync(device, 0o000); // no bits for anyone: only CAP_DAC_OVERRIDE could open it
    const script =
      `require(${JSON.stringify(path.join(REPO, 'dist', 'snp', 'detect.js'))})` +
      `.detectEvidenceSource({ configfsRoot: '/nonexistent/tsm', sevGuestPath: process.argv[1], sevPath: '/nonexistent/sev' })` +
      `.then(() => { console.log('OPENED'); process.exit(0); }, (e) => { console.log(e.code + ' ' + e.message); process.exit(3); })`;
    const { code, out } = await unprivileged(['-e', script, device]);
    expect(out).not.toContain('OPENED');
    expect(code).toBe(3);
    const st = fs.statSync(device);
    expect(out).toContain(`ERR_DEVICE_ACCESS cannot open ${device} for reading and writing (EACCES)`);
    expect(out).toContain(`the device is uid ${st.uid} gid ${st.gid} mode 00`);
    expect(out).toContain('securityContext.runAsUser: 0');
    expect(out).toContain(`the device's group (gid ${st.gid})`);
  });

  it('a device that opens read/write is accepted (as before)', async () => {
    await expect(detectEvidenceSource({ ...none, sevGuestPath: '/dev/null' })).resolves.toMatchObject({ kind: 'sev-guest' });
  });
});

describe('LogFile at start-up', () => {
  it('a LogFile whose directory is a regular file fails start-up with the path and the reason', async () => {
    const notADir = path.join(dir, 'file');
    fs.writeFileSync(notADir, '');
    const logFile = path.join(notADir, 'skr.log');
    const config = { ...loadServerConfig({ port: '0', simulate: true }, {}), logFile, logLevel: 'error' as const };
    expect(await startError({ config, securityContextDir: path.join(dir, 'ctx') })).toMatchObject({
      code: 'ERR_CONFIG',
      message: expect.stringMatching(new RegExp(`^cannot write log file ${logFile}: ENOTDIR`)),
    });
    expect(fs.existsSync(path.join(dir, 'ctx'))).toBe(false);
  });

  it('skr serve with a LogFile in a directory the user cannot write exits 1 naming path and reason', async () => {
    const locked = path.join(dir, 'locked');
    fs.mkdirSync(locked);
    fs.chmodSync(locked, 0o500);
    const logFile = path.join(locked, 'skr.log');
    const port = await freePort();
    const { code, out } = await unprivileged([CLI, 'serve', '--simulate', '--port', String(port)], { LogFile: logFile });
    expect(out).toContain(`skr serve: ERR_CONFIG: cannot write log file ${logFile}: EACCES`);
    expect(out).not.toContain('sidecar ready');
    expect(code).toBe(1);
    expect(fs.existsSync(logFile)).toBe(false);
  });

  it('a LogFile in a directory that does not exist yet is created, and the sidecar logs to it', async () => {
    const logFile = path.join(dir, 'new', 'skr.log');
    const config = { ...loadServerConfig({ port: '0', simulate: true }, {}), logFile, logLevel: 'warn' as const };
    const s = await startSidecar({ config, securityContextDir: path.join(dir, 'ctx') });
    try {
      // The simulation warning reaches the file (winston writes it asynchronously).
      for (let i = 0; i < 100 && !fs.readFileSync(logFile, 'utf8').includes('SIMULATION MODE'); i++) await new Promise((r) => setTimeout(r, 20));
      expect(fs.readFileSync(logFile, 'utf8')).toContain('SIMULATION MODE');
    } finally {
      await s.close();
      s.logger.close();
    }
  });
});
