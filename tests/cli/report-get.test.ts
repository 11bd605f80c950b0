/** `skr report get`: REPORT_DATA binding, hex or a new binary file, certificates, and verification of what it took. */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseReport } from '../../src/snp/report';
import { SimulatedPlatform } from '../../src/snp/simulator';
import { runCli as run } from '../helpers/cli';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-cli-get-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const file = (name: string) => path.join(tmp, name);

describe('skr report get --simulate', () => {
  it('prints the report as hex, REPORT_DATA = sha256(runtime data) + 32 zero bytes, signed by the simulated VCEK', async () => {
    const runtime = Buffer.from('{"nonce":"1234"}');
    const r = await run('report', 'get', '--simulate', '--runtime-data', runtime.toString('base64'));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^[0-9a-f]{2368}$/);
    expect(r.err).toMatch(/SIMULATED/);
    const report = parseReport(Buffer.from(r.out, 'hex'));
    expect(report.reportData).toEqual(Buffer.concat([createHash('sha256').update(runtime).digest(), Buffer.alloc(32)]));
    // The simulator's VCEK key is derived per (chip, TCB), so a fresh platform's certificate verifies it.
    const p = new SimulatedPlatform();
    const hex = file('get.hex');
    fs.writeFileSync(hex, r.out);
    const certs = file('get-certs.pem');
    fs.writeFileSync(certs, p.vcekPem + p.askPem + p.arkPem);
    expect((await run('report', 'verify', hex, '--certs', certs, '--trust-simulator')).code).toBe(0);
  });

  it('takes REPORT_DATA as hex, zero-padded to 64 bytes, and all zeros by default', async () => {
    const r = await run('report', 'get', '--simulate', '--report-data', 'c0ffee');
    expect(parseReport(Buffer.from(r.out, 'hex')).reportData).toEqual(Buffer.concat([Buffer.from('c0ffee', 'hex'), Buffer.alloc(61)]));
    const z = await run('report', 'get', '--simulate');
    expect(parseReport(Buffer.from(z.out, 'hex')).reportData).toEqual(Buffer.alloc(64));
  });

  it('writes the binary report and the VCEK/ASK/ARK to new files that skr report verify accepts', async () => {
    const out = file('r.bin');
    const certs = file('r-certs.pem');
    const r = await run('report', 'get', '--simulate', '--report-data', 'ab'.repeat(64), '--out', out, '--certs-out', certs);
    expect(r.code).toBe(0);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/wrote the 1184-byte report from simulated SEV-SNP platform .* to .*r\.bin/);
    expect(fs.statSync(out).size).toBe(1184);
    expect(parseReport(fs.readFileSync(out)).reportData).toEqual(Buffer.alloc(64, 0xab));
    const v = await run('report', 'verify', out, '--certs', certs, '--trust-simulator');
    expect(v.code).toBe(0);
    expect(v.out).toMatch(/^OK: /);
  });

  it('never overwrites an existing file', async () => {
    const out = file('exists.bin');
    fs.writeFileSync(out, 'keep me');
    const r = await run('report', 'get', '--simulate', '--out', out);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/exists/);
    expect(fs.readFileSync(out, 'utf8')).toBe('keep me');
  });

  it.each([
    [['--runtime-data', 'e30=', '--report-data', '00'], /not both/],
    [['--report-data', 'xyz'], /--report-data is not hex/],
    [['--report-data', 'ab'.repeat(65)], /--report-data is 65 bytes; REPORT_DATA holds 64/],
    [['--runtime-data', '***'], /--runtime-data is not base64/],
    [['extra'], /unexpected argument "extra"/],
  ])('refuses %j as a usage error', async (args, msg) => {
    const r = await run('report', 'get', '--simulate', ...args);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(msg);
    expect(r.out).toBe('');
  });
});

const devices = ['/sys/kernel/config/tsm/report', '/dev/sev-guest', '/dev/sev'];
// On an SEV-SNP guest a device exists and this refusal cannot happen; everywhere else it must.
const noDevice = devices.every((d) => !fs.existsSync(d));
(noDevice ? describe : describe.skip)('skr report get without a device', () => {
  it('fails with the device error and points at --simulate', async () => {
    const r = await run('report', 'get');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^skr report get: ERR_NO_DEVICE: no SEV-SNP device found; use --simulate/);
  });
});
