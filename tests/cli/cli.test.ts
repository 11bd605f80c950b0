import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli } from '../helpers/cli';
import { SimulatedPlatform } from '../../src/snp/simulator';
import { describeVectors, vector, vectorPath } from '../helpers/vectors';

const run = runCli;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const write = (name: string, data: string | Buffer) => {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, data);
  return p;
};

describe('skr CLI basics', () => {
  it('prints help and refuses unknown commands with exit 2', async () => {
    expect((await run('--help')).out).toMatch(/skr report verify/);
    const r = await run('frobnicate');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/unknown command "frobnicate"/);
  });

  it('refuses unknown options with usage', async () => {
    const r = await run('report', 'decode', 'x', '--bogus');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/usage: skr report decode/);
  });

  it('policy digest refuses non-base64 input', async () => {
    const r = await run('policy', 'digest', write('bad.b64', 'this is *not* base64'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ERR_POLICY_BASE64/);
  });

  it('report decode refuses a file that is not a report', async () => {
    const r = await run('report', 'decode', write('short.bin', Buffer.alloc(10)));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ERR_REPORT_LENGTH: an SEV-SNP report is 1184 bytes, got 10/);
  });

  it('report decode names a missing file', async () => {
    const r = await run('report', 'decode', path.join(tmp, 'nope.bin'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/cannot read report .*nope\.bin: ENOENT/);
  });
});

describe('skr report verify against the simulator (explicitly trusted)', () => {
  const p = new SimulatedPlatform();
  const reportFile = write('sim.bin', p.signReport({ reportData: Buffer.alloc(64, 7) }));
  const thimFile = write('sim-thim.json', JSON.stringify(p.thimCertificates()));

  it('accepts with --trust-simulator, refuses without (the test ARK is not pinned)', async () => {
    expect((await run('report', 'verify', reportFile, '--certs', thimFile, '--trust-simulator')).code).toBe(0);
    const r = await run('report', 'verify', reportFile, '--certs', thimFile);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/FAILED at ark-pinned/);
  });

  it('accepts a PEM bundle and a lone VCEK with --chain, and the hex form of a report', async () => {
    const bundle = write('bundle.pem', p.vcekPem + p.askPem + p.arkPem);
    const hex = write('sim.hex', p.signReport({}).toString('hex') + '\n');
    expect((await run('report', 'verify', hex, '--certs', bundle, '--trust-simulator')).code).toBe(0);
    const vcekDer = write('vcek.der', p.vcekDer);
    const chain = write('chain.pem', p.askPem + p.arkPem);
    expect((await run('report', 'verify', reportFile, '--certs', vcekDer, '--chain', chain, '--trust-simulator')).code).toBe(0);
  });

  it('names report-signature when a signed byte is flipped', async () => {
    const bad = p.signReport({});
    bad[0x90] ^= 1;
    const r = await run('report', 'verify', write('flipped.bin', bad), '--certs', thimFile, '--trust-simulator');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/FAILED at report-signature/);
  });
});

describeVectors('skr on the real hardware vectors', () => {
  it('decodes every field of the real Milan report as JSON with the documented keys', async () => {
    const r = await run('report', 'decode', vectorPath('real-milan/snp_report.bin'), '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as Record<string, unknown>;
    for (const k of ['version', 'guestSvn', 'policy', 'familyId', 'imageId', 'vmpl', 'signatureAlgo', 'platformInfo', 'reportData',
      'measurement', 'hostData', 'idKeyDigest', 'authorKeyDigest', 'reportId', 'reportIdMa', 'chipId', 'currentTcb', 'reportedTcb',
      'committedTcb', 'launchTcb', 'signature']) expect(j).toHaveProperty(k);
    expect(j.hostData).toBe('cadd74f71ebb8fbf9782baab649612520f3c416bc5ce9ac768808ddc8d9b031c');
    expect(j.reportedTcb).toEqual({ raw: '7308000000000003', bootloader: 3, tee: 0, snp: 8, microcode: 0x73 });
    const text = await run('report', 'decode', vectorPath('real-milan/snp_report.bin'));
    expect(text.out).toMatch(/^measurement\s+51068107cdc7ee3d/m);
  });

  it('verifies the real Milan report with its THIM chain', async () => {
    const r = await run('report', 'verify', vectorPath('real-milan/snp_report.bin'), '--certs', vectorPath('real-milan/thim_certs.json'));
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^OK: .*TCB 7308000000000003.*AMD Milan ARK/);
  });

  it("refuses the real report with another chip's chain, naming the step", async () => {
    const other = write('other.json', Buffer.from(vector('real-milan/other_chip_host-amd-cert-base64').toString('utf8'), 'base64'));
    const r = await run('report', 'verify', vectorPath('real-milan/snp_report.bin'), '--certs', other);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/FAILED at vcek-hwid/);
    // The security-context file itself (base64 of THIM JSON) is accepted as input too.
    const r2 = await run('report', 'verify', vectorPath('real-milan/snp_report.bin'), '--certs', vectorPath('real-milan/other_chip_host-amd-cert-base64'));
    expect(r2.code).toBe(1);
  });

  it('verifies the go-sev-guest report with its DER VCEK and the KDS cert_chain, and not with the Milan THIM VCEK', async () => {
    const ok = await run('report', 'verify', vectorPath('real-go-sev-guest/attestation.bin'), '--certs', vectorPath('real-go-sev-guest/vcek.testcer'),
      '--chain', vectorPath('real-go-sev-guest/milan.testcer'));
    expect(ok.code).toBe(0);
    const bad = await run('report', 'verify', vectorPath('real-go-sev-guest/attestation.bin'), '--certs', vectorPath('real-milan/thim_certs.json'));
    expect(bad.code).toBe(1);
  });

  it('policy digest of the real ccePolicy equals the report HOST_DATA', async () => {
    const r = await run('policy', 'digest', vectorPath('real-milan/security_policy.base64'));
    expect(r.out).toBe('cadd74f71ebb8fbf9782baab649612520f3c416bc5ce9ac768808ddc8d9b031c');
    const other = await run('policy', 'digest', vectorPath('real-milan/other_security-policy-base64'));
    expect(other.out).not.toBe(r.out);
  });
});
