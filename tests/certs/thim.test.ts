import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chainToThim, decodeHostAmdCert, findSecurityContextDir, parseThimCertificates, readSecurityContext, thimToChain } from '../../src/certs/thim';
import { SecurityContextSource } from '../../src/certs/sources/security-context';
import { describeVectors, vector } from '../helpers/vectors';
import { chainOf, makeVcek, testHierarchy } from './fixtures';

const h = testHierarchy();
const tcb = 0x7308000000000003n;
const vcek = makeVcek(h, { tcb });
const thim = { ...chainToThim(chainOf(h, vcek, tcb)), cacheControl: '600' };
const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64');

describe('THIM JSON', () => {
  it('round-trips through the chain shape', () => {
    const c = thimToChain(parseThimCertificates(JSON.stringify(thim)), 'x');
    expect(c).toMatchObject({ tcbm: tcb, cacheControlSeconds: 600, source: 'x', vcekPem: vcek.pem, chainPem: h.askPem + h.arkPem });
    expect(chainToThim(c)).toEqual(thim);
  });

  it.each([
    ['not JSON', '{', /not valid JSON/],
    ['an array', '[]', /not a JSON object/],
    ['a numeric tcbm', JSON.stringify({ ...thim, tcbm: 7 }), /"tcbm" must be a non-empty string/],
    ['a short tcbm', JSON.stringify({ ...thim, tcbm: '7308' }), /16 hex digits/],
    ['a one-cert chain', JSON.stringify({ ...thim, certificateChain: h.askPem }), /two PEM certificates/],
    ['a chain as vcekCert', JSON.stringify({ ...thim, vcekCert: h.askPem + h.arkPem }), /exactly one PEM/],
    ['a numeric cacheControl', JSON.stringify({ ...thim, cacheControl: 5 }), /"cacheControl" must be a string/],
    ['a key block', JSON.stringify({ ...thim, vcekCert: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' }), /PRIVATE KEY/],
  ])('refuses %s', (_name, text, msg) => {
    expect(() => parseThimCertificates(text)).toThrow(msg);
  });

  it('decodes host-amd-cert-base64 strictly', () => {
    expect(decodeHostAmdCert(b64(thim) + '\n').tcbm).toBe('7308000000000003');
    expect(() => decodeHostAmdCert('%%%')).toThrow(expect.objectContaining({ code: 'ERR_THIM_FORMAT' }));
  });
});

describeVectors('real THIM bundles', () => {
  it('parses thim_certs.json and the other chip host-amd-cert-base64', () => {
    expect(parseThimCertificates(vector('real-milan/thim_certs.json').toString('utf8'))).toMatchObject({ tcbm: '7308000000000003', cacheControl: '86400' });
    expect(decodeHostAmdCert(vector('real-milan/other_chip_host-amd-cert-base64').toString('utf8')).tcbm).toBe('7308000000000003');
  });
});

describe('security context', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-root-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  const write = (dir: string, files: Record<string, string>) => {
    fs.mkdirSync(dir, { recursive: true });
    for (const [n, v] of Object.entries(files)) fs.writeFileSync(path.join(dir, n), v);
  };

  it('finds the first security-context-* directory at the root and reads its files', () => {
    write(path.join(root, 'security-context-b'), { 'security-policy-base64': 'B' });
    write(path.join(root, 'security-context-a'), { 'security-policy-base64': 'cG9saWN5\n', 'host-amd-cert-base64': b64(thim), 'reference-info-base64': 'cmVm' });
    fs.writeFileSync(path.join(root, 'security-context-0-not-a-dir'), '');
    const ctx = readSecurityContext({ root, env: {} });
    expect(ctx.dir).toBe(path.join(root, 'security-context-a'));
    expect(ctx.securityPolicyBase64).toBe('cG9saWN5');
    expect(ctx.referenceInfoBase64).toBe('cmVm');
    expect(ctx.hostAmdCert?.tcbm).toBe('7308000000000003');
    expect(ctx.hostAmdCertFrom).toBe('file');
  });

  it('prefers $UVM_SECURITY_CONTEXT_DIR, then falls back to the AKS default', () => {
    const explicit = path.join(root, 'elsewhere');
    write(explicit, { 'security-policy-base64': 'RQ==' });
    write(path.join(root, 'security-context-x'), { 'security-policy-base64': 'WA==' });
    expect(readSecurityContext({ root, env: { UVM_SECURITY_CONTEXT_DIR: explicit } }).securityPolicyBase64).toBe('RQ==');
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-empty-'));
    try {
      expect(findSecurityContextDir({ root: empty, env: {} })).toBe('/opt/confidential-containers/share/kata-containers');
    } finally {
      fs.rmSync(empty, { recursive: true });
    }
  });

  it('falls back per item to UVM_* variables', () => {
    write(path.join(root, 'security-context-a'), { 'security-policy-base64': 'ZmlsZQ==' });
    const ctx = readSecurityContext({ root, env: { UVM_SECURITY_POLICY: 'ZW52', UVM_HOST_AMD_CERTIFICATE: b64(thim), UVM_REFERENCE_INFO: 'cmVmZW52' } });
    expect(ctx.securityPolicyBase64).toBe('ZmlsZQ==');
    expect(ctx.hostAmdCertFrom).toBe('env');
    expect(ctx.referenceInfoBase64).toBe('cmVmZW52');
  });

  it('fails closed on a malformed host certificate file, naming it', () => {
    write(path.join(root, 'security-context-a'), { 'host-amd-cert-base64': b64({ vcekCert: 'x' }) });
    expect(() => readSecurityContext({ root, env: {} })).toThrow(/host-amd-cert-base64.*"certificateChain"/);
  });

  it('serves the chain through SecurityContextSource, or says precisely what is missing', async () => {
    write(path.join(root, 'security-context-a'), { 'host-amd-cert-base64': b64(thim) });
    const chain = await new SecurityContextSource({ root, env: {} }).fetch();
    expect(chain).toMatchObject({ source: 'security-context', tcbm: tcb, cacheControlSeconds: 600 });
    const envOnly = await new SecurityContextSource({ root: path.join(root, 'nothing'), env: { UVM_HOST_AMD_CERTIFICATE: b64(thim) }, aksDefaultDir: path.join(root, 'nope') }).fetch();
    expect(envOnly.source).toBe('env');
    const none = new SecurityContextSource({ root: path.join(root, 'nothing'), env: {}, aksDefaultDir: path.join(root, 'nope') });
    await expect(none.fetch()).rejects.toMatchObject({ code: 'ERR_COLLATERAL_UNAVAILABLE', message: expect.stringContaining('UVM_HOST_AMD_CERTIFICATE') });
  });
});
