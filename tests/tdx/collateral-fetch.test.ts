/**
 * Intel collateral fetched only when the operator allows it: a PCS-shaped server on 127.0.0.1 serves the
 * simulator's signed TCB info and QE identity (issuer chains URL-encoded in the PCS headers); the real
 * TdxCollateralSource and `skr report verify --intel-pcs` fetch, verify, and cache on disk, so a second
 * verify makes no request. Offline files give the same verdict; without either, the verdict says plainly
 * that the TCB status was NOT checked.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { UpstreamError } from '../../src/common/errors';
import type { TdxCollateral } from '../../src/tdx/collateral';
import { TdxCollateralSource } from '../../src/tdx/collateral-source';
import { IntelTrustStore } from '../../src/tdx/roots';
import { mintSimulatedTdxCollateral, SIMULATED_PCK_PLATFORM, SimulatedTdxPlatform, TEST_ONLY_INTEL_ROOT_PEM } from '../../src/tdx/simulator';
import { verifyTdQuote } from '../../src/tdx/verify';
import { runCli } from '../helpers/cli';

const FMSPC = SIMULATED_PCK_PLATFORM.fmspc;

describe('Intel TDX collateral over HTTP, cached', () => {
  let server: http.Server;
  let base: string;
  let tmp: string;
  let quoteFile: string;
  const requests: string[] = [];
  let collateral: TdxCollateral = mintSimulatedTdxCollateral();
  let answerStatus = 200;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-tdx-pcs-'));
    const tdx = new SimulatedTdxPlatform();
    quoteFile = path.join(tmp, 'quote.bin');
    fs.writeFileSync(quoteFile, tdx.quote(tdx.tdReport(Buffer.alloc(64, 9))));
    server = http.createServer((req, res) => {
      requests.push(req.url ?? '');
      const u = new URL(req.url ?? '/', 'http://x');
      if (answerStatus !== 200) {
        res.writeHead(answerStatus).end();
      } else if (u.pathname === '/tdx/certification/v4/tcb' && u.searchParams.get('fmspc')?.toLowerCase() === FMSPC) {
        res.writeHead(200, { 'content-type': 'application/json', 'TCB-Info-Issuer-Chain': encodeURIComponent(collateral.tcbInfo.issuerChainPem) }).end(collateral.tcbInfo.body);
      } else if (u.pathname === '/tdx/certification/v4/qe/identity') {
        res.writeHead(200, { 'content-type': 'application/json', 'SGX-Enclave-Identity-Issuer-Chain': encodeURIComponent(collateral.qeIdentity.issuerChainPem) }).end(collateral.qeIdentity.body);
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/tdx/certification/v4`;
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  beforeEach(() => {
    requests.length = 0;
    answerStatus = 200;
    collateral = mintSimulatedTdxCollateral();
  });

  it('fetches both documents, persists them, and a new source on the same directory makes no request', async () => {
    const dir = path.join(tmp, 'cache-a');
    const a = new TdxCollateralSource({ baseUrl: base, cacheDir: dir });
    const got = await a.get(FMSPC);
    // Exact counts are not asserted where a client may retry a reset kept-alive connection; "no request" is.
    expect(new Set(requests)).toEqual(new Set([`/tdx/certification/v4/qe/identity`, `/tdx/certification/v4/tcb?fmspc=${FMSPC}`]));
    const fetched = requests.length;
    expect(got.tcbInfo).toEqual(collateral.tcbInfo);
    expect(fs.statSync(path.join(dir, `tdx-${FMSPC}.json`)).mode & 0o777).toBe(0o600);
    await a.get(FMSPC);
    const b = new TdxCollateralSource({ baseUrl: base, cacheDir: dir });
    const again = await b.get(FMSPC);
    expect(requests).toHaveLength(fetched);
    expect(b.stats()).toMatchObject({ fetches: 0, diskHits: 1 });
    const trust = new IntelTrustStore({ extraRootsPem: [TEST_ONLY_INTEL_ROOT_PEM], includeIntelRoot: false });
    expect(verifyTdQuote(fs.readFileSync(quoteFile), { trust, collateral: again }).tcbStatus).toBe('UpToDate');
  });

  it('honours nextUpdate: past it the cached copy is fetched again', async () => {
    const dir = path.join(tmp, 'cache-b');
    let now = Date.now();
    collateral = mintSimulatedTdxCollateral({ issueDate: new Date(now - 1000), nextUpdate: new Date(now + 60_000) });
    const s = new TdxCollateralSource({ baseUrl: base, cacheDir: dir, now: () => now });
    await s.get(FMSPC);
    const fetched = requests.length;
    await s.get(FMSPC);
    expect(requests).toHaveLength(fetched);
    now += 61_000;
    await s.get(FMSPC);
    expect(requests.length).toBeGreaterThanOrEqual(fetched + 2);
    expect(s.stats().fetches).toBe(2);
  });

  it('an upstream error or a missing issuer-chain header is an UpstreamError, and nothing is cached', async () => {
    answerStatus = 503;
    const s = new TdxCollateralSource({ baseUrl: base, retries: 0 });
    await expect(s.get(FMSPC)).rejects.toBeInstanceOf(UpstreamError);
    expect(s.stats().hits).toBe(0);
    await expect(s.get('not-hex')).rejects.toThrow(/FMSPC/);
  });

  it('skr report verify --intel-pcs: the verdict names the TCB status; the second run is served by --tdx-cache', async () => {
    const dir = path.join(tmp, 'cache-cli');
    const r = await runCli('report', 'verify', quoteFile, '--trust-simulator', '--intel-pcs', base, '--tdx-cache', dir);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const fetched = requests.length;
    expect(fetched).toBeGreaterThanOrEqual(2);
    expect(r.out).toMatch(/TCB status UpToDate \(platform UpToDate, TDX module UpToDate, QE UpToDate; FMSPC 00806f050000, .*advisories: none; collateral from http:\/\/127\.0\.0\.1:\d+\/tdx\/certification\/v4 valid until /);
    const again = await runCli('report', 'verify', quoteFile, '--trust-simulator', '--intel-pcs', base, '--tdx-cache', dir);
    expect(again.out).toMatch(/TCB status UpToDate .*collateral from cache \(http:\/\/127\.0\.0\.1:\d+\/tdx\/certification\/v4\) valid until/);
    expect(requests).toHaveLength(fetched);
  });

  it('a cached copy damaged on disk is refused at its step, dropped, and fetched again on the next run', async () => {
    const dir = path.join(tmp, 'cache-damaged');
    expect((await runCli('report', 'verify', quoteFile, '--trust-simulator', '--intel-pcs', base, '--tdx-cache', dir)).code).toBe(0);
    const fetched = requests.length;
    const file = path.join(dir, `tdx-${FMSPC}.json`);
    const entry = JSON.parse(fs.readFileSync(file, 'utf8')) as { tcbInfo: { body: string } };
    entry.tcbInfo.body = entry.tcbInfo.body.replace('"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":18');
    fs.writeFileSync(file, JSON.stringify(entry));
    const bad = await runCli('report', 'verify', quoteFile, '--trust-simulator', '--intel-pcs', base, '--tdx-cache', dir);
    expect(bad.err).toMatch(/^FAILED at tcb-info-signature: /);
    expect(requests).toHaveLength(fetched);
    expect(fs.existsSync(file)).toBe(false);
    const again = await runCli('report', 'verify', quoteFile, '--trust-simulator', '--intel-pcs', base, '--tdx-cache', dir);
    expect(again.code).toBe(0);
    expect(requests.length).toBeGreaterThanOrEqual(fetched + 2);
  });

  it('skr report verify --intel-pcs: OutOfDate with its advisories; a tampered answer is refused at its step; a dead PCS at tcb-collateral-fetch', async () => {
    collateral = mintSimulatedTdxCollateral({ platform: 'out-of-date' });
    const r = await runCli('report', 'verify', quoteFile, '--trust-simulator', '--intel-pcs', base);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/TCB status OutOfDate \(platform OutOfDate, .*advisories: INTEL-SA-SIM-0001;/);
    collateral = { ...collateral, qeIdentity: { ...collateral.qeIdentity, body: collateral.qeIdentity.body.replace('"isvprodid":2', '"isvprodid":3') } };
    const bad = await runCli('report', 'verify', quoteFile, '--trust-simulator', '--intel-pcs', base);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/^FAILED at qe-identity-signature: /);
    answerStatus = 500;
    const dead = await runCli('report', 'verify', quoteFile, '--trust-simulator', '--intel-pcs', base);
    expect(dead.code).toBe(1);
    expect(dead.err).toMatch(/^FAILED at tcb-collateral-fetch: GET 127.0.0.1:\d+\/tdx\/certification\/v4\/(tcb|qe\/identity) .*status 500/);
    // The other document's fetch was cancelled with the first failure: no retry of it arrives after the
    // command has answered (its backoff would have sent one within ~2 s).
    const afterDead = requests.length;
    await new Promise((r) => setTimeout(r, 2500));
    expect(requests).toHaveLength(afterDead);
  });

  it('offline: --tcb-info/--qe-identity/--tcb-issuer-chain files (chain URL-encoded as the header carries it); none → NOT checked', async () => {
    const c = mintSimulatedTdxCollateral();
    const f = (n: string, d: string) => {
      const p = path.join(tmp, n);
      fs.writeFileSync(p, d);
      return p;
    };
    const files = ['--tcb-info', f('tcb.json', c.tcbInfo.body), '--qe-identity', f('qe.json', c.qeIdentity.body), '--tcb-issuer-chain', f('chain.txt', encodeURIComponent(c.tcbInfo.issuerChainPem))];
    const r = await runCli('report', 'verify', quoteFile, '--trust-simulator', ...files);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/TCB status UpToDate/);
    const expired = await runCli('report', 'verify', quoteFile, '--trust-simulator', ...files, '--at', new Date(Date.now() + 40 * 86400_000).toISOString());
    expect(expired.code).toBe(1);
    expect(expired.err).toMatch(/^FAILED at tcb-info-expired: nextUpdate .* has passed/);
    const none = await runCli('report', 'verify', quoteFile, '--trust-simulator');
    expect(none.out).toMatch(/TCB status NOT checked \(needs Intel PCS collateral/);
    const partial = await runCli('report', 'verify', quoteFile, '--trust-simulator', '--tcb-info', files[1]);
    expect(partial).toMatchObject({ code: 2, err: expect.stringMatching(/give all of --tcb-info FILE --qe-identity FILE --tcb-issuer-chain PEM/) });
    expect(requests).toHaveLength(0);
  });
});
