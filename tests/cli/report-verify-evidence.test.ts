/**
 * `skr report verify` on evidence built for the purpose: both hwid forms, malformed VCEKs with and without
 * AMD's (test) signature, `--at`, and a named step on every refusal. Real vectors where they exist.
 */
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildCertificate, pemOf, rawExtension, subjectNameOf } from '../../src/asn1/x509';
import { derToPem, pemCertificatesToDer } from '../../src/certs/pem';
import { AmdOid } from '../../src/certs/vcek';
import { parseThimCertificates } from '../../src/certs/thim';
import { SimulatedPlatform, simulatedName, vcekExtensions } from '../../src/snp/simulator';
import { TEST_ONLY_ASK_KEY_PEM } from '../../src/snp/simulator/test-only-keys';
import { runCli as run } from '../helpers/cli';
import { describeVectors, vector, vectorPath } from '../helpers/vectors';
import { certificateFromDer } from '../../src/asn1/certificate';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-cli-evidence-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const write = (name: string, data: string | Buffer) => {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, data);
  return p;
};

/** A VCEK for `p`'s current key and TCB whose hwid extension holds `hwid`, signed by `issuerKey`. */
function vcekWithHwid(p: SimulatedPlatform, hwid: Buffer, issuerKey = createPrivateKey(TEST_ONLY_ASK_KEY_PEM)): string {
  const exts = vcekExtensions(p.product, p.reportedTcb, p.chipId).map((e) => (e.oid === AmdOid.hwid ? rawExtension(AmdOid.hwid, false, hwid) : e));
  const der = buildCertificate({
    subject: simulatedName('SEV-VCEK'), issuer: subjectNameOf(p.askDer), serialNumber: 0n,
    notBefore: new Date(Date.now() - 86_400_000), notAfter: new Date(Date.now() + 86_400_000 * 365),
    subjectPublicKey: p.vcekPublicKey, issuerPrivateKey: issuerKey, signatureAlgorithm: 'rsa-pss-sha384', extensions: exts,
  });
  return pemOf(der);
}

describe('skr report verify: hwid forms and malformed VCEKs', () => {
  for (const product of ['Milan', 'Turin'] as const) {
    it(`accepts a ${product} VCEK with the raw hwid and one with the OCTET STRING-wrapped hwid`, async () => {
      for (const hwidForm of ['raw', 'octet-string'] as const) {
        const p = new SimulatedPlatform({ product, hwidForm });
        const report = write(`${product}-${hwidForm}.bin`, p.signReport({}));
        const certs = write(`${product}-${hwidForm}.pem`, p.vcekPem + p.askPem + p.arkPem);
        const r = await run('report', 'verify', report, '--certs', certs, '--trust-simulator');
        expect(r.err).toBe('');
        expect(r.code).toBe(0);
        expect(r.out).toMatch(new RegExp(`^OK: .*\\(${product}\\)`));
      }
    });
  }

  it('still compares a wrapped hwid with CHIP_ID: another chip is refused at vcek-hwid', async () => {
    const p = new SimulatedPlatform({ hwidForm: 'octet-string' });
    const other = Buffer.alloc(64, 0x5a);
    const certs = write('other-chip.pem', vcekWithHwid(p, Buffer.concat([Buffer.from([0x04, 0x40]), other])) + p.askPem + p.arkPem);
    const r = await run('report', 'verify', write('chip.bin', p.signReport({})), '--certs', certs, '--trust-simulator');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at vcek-hwid: /);
  });

  it('refuses a malformed hwid in a VCEK AMD did not sign at ask-signs-vcek, before reading it', async () => {
    const p = new SimulatedPlatform();
    const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const certs = write('forged.pem', vcekWithHwid(p, Buffer.alloc(5, 1), stranger) + p.askPem + p.arkPem);
    const r = await run('report', 'verify', write('forged.bin', p.signReport({})), '--certs', certs, '--trust-simulator');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at ask-signs-vcek: VCEK "SEV-VCEK" is not signed by ASK/);
  });

  it('refuses a malformed hwid in a VCEK the (test) ASK did sign at vcek-extensions', async () => {
    const p = new SimulatedPlatform();
    const certs = write('bad-hwid.pem', vcekWithHwid(p, Buffer.alloc(5, 1)) + p.askPem + p.arkPem);
    const r = await run('report', 'verify', write('bad-hwid.bin', p.signReport({})), '--certs', certs, '--trust-simulator');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at vcek-extensions: VCEK extension hwid \(1\.3\.6\.1\.4\.1\.3704\.1\.4\) is 5 bytes/);
  });

  it('names a step for a report or a certificate file that does not parse', async () => {
    const p = new SimulatedPlatform();
    const certs = write('ok.pem', p.vcekPem + p.askPem + p.arkPem);
    const short = await run('report', 'verify', write('short.bin', Buffer.alloc(100)), '--certs', certs, '--trust-simulator');
    expect(short.code).toBe(1);
    expect(short.err).toMatch(/^FAILED at report-format: .*1184 bytes/);
    const report = write('good.bin', p.signReport({}));
    const two = await run('report', 'verify', report, '--certs', write('two.pem', p.vcekPem + p.askPem), '--trust-simulator');
    expect(two.code).toBe(1);
    expect(two.err).toMatch(/^FAILED at chain-format: --certs holds 2 certificates/);
    const json = await run('report', 'verify', report, '--certs', write('bad.json', '{"vcekCert": 1}'), '--trust-simulator');
    expect(json.code).toBe(1);
    expect(json.err).toMatch(/^FAILED at chain-format: /);
  });
});

describe('skr report verify --at', () => {
  const p = new SimulatedPlatform();
  // A VCEK valid only during 2024 (the simulator's ARK/ASK are valid from 2024-01-01).
  const old = p.vcekFor(p.reportedTcb, { notBefore: new Date('2024-02-01T00:00:00Z'), notAfter: new Date('2024-12-31T00:00:00Z') });
  const report = write('at.bin', p.signReport({}));
  const certs = write('at.pem', old.pem + p.askPem + p.arkPem);

  it('checks validity at the given time and says which time it used', async () => {
    const r = await run('report', 'verify', report, '--certs', certs, '--trust-simulator', '--at', '2024-06-01T12:00:00+02:00');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/certificate validity checked at 2024-06-01T10:00:00\.000Z \(--at\)$/);
  });

  it('defaults to now, where this VCEK has expired', async () => {
    const r = await run('report', 'verify', report, '--certs', certs, '--trust-simulator');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at cert-expired: VCEK \(SEV-VCEK\) expired at 2024-12-31T00:00:00\.000Z \[certificate validity checked at .* \(now\)\]$/);
  });

  it('refuses a time before the VCEK was issued', async () => {
    const r = await run('report', 'verify', report, '--certs', certs, '--trust-simulator', '--at', '2024-01-15T00:00:00Z');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at cert-expired: VCEK \(SEV-VCEK\) is not valid before 2024-02-01/);
  });

  it.each(['yesterday', '2024-06-01', '2024-02-30T00:00:00Z', '2024-06-01T25:00:00Z', '1717200000'])('refuses --at %s as a usage error (exit 2)', async (at) => {
    const r = await run('report', 'verify', report, '--certs', certs, '--trust-simulator', '--at', at);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--at .* is not an RFC 3339 time/);
    expect(r.out).toBe('');
  });
});

describeVectors('skr report verify on the real vectors', () => {
  const thim = () => parseThimCertificates(vector('real-milan/thim_certs.json').toString('utf8'));

  it('verifies the real Milan report (raw 64-byte hwid) at a given time', async () => {
    const r = await run('report', 'verify', vectorPath('real-milan/snp_report.bin'), '--certs', vectorPath('real-milan/thim_certs.json'),
      '--at', '2025-01-01T00:00:00Z');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/AMD Milan ARK.*checked at 2025-01-01T00:00:00\.000Z \(--at\)$/);
  });

  it('refuses the real chain at a time before the VCEK existed, naming cert-expired', async () => {
    const r = await run('report', 'verify', vectorPath('real-milan/snp_report.bin'), '--certs', vectorPath('real-milan/thim_certs.json'),
      '--at', '2000-01-01T00:00:00Z');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at cert-expired: ARK .* is not valid before/);
  });

  it('refuses the real VCEK with a malformed AMD extension at ask-signs-vcek (the edit breaks AMD\'s signature)', async () => {
    const der = Buffer.from(pemCertificatesToDer(thim().vcekCert)[0]);
    // The product name "Milan-B0" as IA5String (16 08 ...) becomes a UTF8String (0c 08 ...): same length, now malformed.
    const at = der.indexOf(Buffer.from('1608' + Buffer.from('Milan-B0').toString('hex'), 'hex'));
    expect(at).toBeGreaterThan(0);
    der[at] = 0x0c;
    certificateFromDer(der); // still a certificate
    const certs = write('real-edited.pem', derToPem(der) + thim().certificateChain);
    const r = await run('report', 'verify', vectorPath('real-milan/snp_report.bin'), '--certs', certs);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at ask-signs-vcek: /);
  });

  it('refuses the real VCEK with its hwid wrapped in an OCTET STRING at ask-signs-vcek (AMD signed the raw form)', async () => {
    const der = Buffer.from(pemCertificatesToDer(thim().vcekCert)[0]);
    // extnID 1.3.6.1.4.1.3704.1.4, then extnValue: OCTET STRING of 64 raw bytes (04 40 ...).
    const hwidOid = Buffer.from('06092b060104019c780104', 'hex');
    const i = der.indexOf(hwidOid);
    expect(i).toBeGreaterThan(0);
    expect(der.subarray(i + hwidOid.length, i + hwidOid.length + 2).toString('hex')).toBe('0440');
    // Same length, different content: the first two chip-id bytes become an inner 04 3e header.
    der[i + hwidOid.length + 2] = 0x04;
    der[i + hwidOid.length + 3] = 0x3e;
    const certs = write('real-wrapped.pem', derToPem(der) + thim().certificateChain);
    const r = await run('report', 'verify', vectorPath('real-milan/snp_report.bin'), '--certs', certs);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^FAILED at ask-signs-vcek: /);
  });
});

describe('skr report verify: configuration errors are usage errors', () => {
  it('refuses a --trust-root that holds no certificate with exit 2', async () => {
    const p = new SimulatedPlatform();
    const r = await run('report', 'verify', write('cfg.bin', p.signReport({})), '--certs', write('cfg.pem', p.vcekPem + p.askPem + p.arkPem),
      '--trust-root', write('not-a-root.pem', 'hello'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^skr report verify: --trust-root: extra root 1 holds no PEM certificate/);
  });

  it('lists the new commands in the help', async () => {
    const r = await run('--help');
    expect(r.out).toMatch(/skr report get \[--runtime-data B64/);
    expect(r.out).toMatch(/skr token verify TOKEN\|FILE --authority URL/);
    expect(r.out).toMatch(/skr report verify .*\[--at TIME\]/);
  });
});
