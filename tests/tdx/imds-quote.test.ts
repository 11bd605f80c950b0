/**
 * IMDS `POST /acc/tdquote`: our client against the IMDS emulator (real HTTP on 127.0.0.1) whose quoting
 * enclave is the simulated TDX machine. Both clients' dialects are accepted: Metadata header or none,
 * padded or unpadded base64url; the answer's `quote`/`Quote` in any base64 form.
 */
import { UpstreamError } from '../../src/common/errors';
import { startImdsEmulator, type ImdsEmulator } from '../../src/emulators/imds';
import { fetchTdQuote, parseTdQuoteAnswer } from '../../src/tdx/imds-quote';
import { IntelTrustStore } from '../../src/tdx/roots';
import { SimulatedTdxPlatform, TEST_ONLY_INTEL_ROOT_PEM } from '../../src/tdx/simulator';
import { verifyTdQuote } from '../../src/tdx/verify';

describe('IMDS /acc/tdquote', () => {
  const tdx = new SimulatedTdxPlatform();
  let imds: ImdsEmulator;
  beforeAll(async () => {
    imds = await startImdsEmulator({ tdQuote: (r) => tdx.quote(r), tenantId: 't', principals: [{ clientId: 'c', objectId: 'o' }] });
  });
  afterAll(() => imds.close());

  it('our client: the quote of our TDREPORT, verifiable against the simulated root', async () => {
    const report = tdx.tdReport(Buffer.alloc(64, 9));
    const quote = await fetchTdQuote(report, { baseUrl: imds.url });
    const v = verifyTdQuote(quote, { trust: new IntelTrustStore({ extraRootsPem: [TEST_ONLY_INTEL_ROOT_PEM] }) });
    expect(v.quote.body.reportData).toEqual(Buffer.alloc(64, 9));
  });

  it("accepts the other clients' dialects: no Metadata header, padded base64url", async () => {
    const report = tdx.tdReport(Buffer.alloc(64, 1));
    const padded = report.toString('base64url') + '='.repeat((4 - (report.toString('base64url').length % 4)) % 4);
    expect(padded.endsWith('=')).toBe(true);
    const res = await fetch(`${imds.url}/acc/tdquote`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ report: padded }) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { quote: string };
    expect(parseTdQuoteAnswer(JSON.stringify(body)).length).toBeGreaterThan(1000);
  });

  it('reads Quote or quote, padded or not, either alphabet; refuses what is not a TD quote', () => {
    const q = tdx.quote(tdx.tdReport(Buffer.alloc(64)));
    expect(parseTdQuoteAnswer(JSON.stringify({ Quote: q.toString('base64') }))).toEqual(q);
    expect(parseTdQuoteAnswer(JSON.stringify({ quote: q.toString('base64url') }))).toEqual(q);
    expect(() => parseTdQuoteAnswer('{"quote": "AAAA"}')).toThrow(/TD quote/);
    expect(() => parseTdQuoteAnswer('{"report": "x"}')).toThrow(/no "quote" string/);
    expect(() => parseTdQuoteAnswer('<html>')).toThrow(/not JSON/);
  });

  it('a TDREPORT the quoting enclave refuses is a 400, named as the upstream', async () => {
    const foreign = new SimulatedTdxPlatform().tdReport(Buffer.alloc(64));
    const e = await fetchTdQuote(foreign, { baseUrl: imds.url, retries: 0 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UpstreamError);
    expect((e as UpstreamError).upstream).toBe('imds-tdquote');
    expect((e as UpstreamError).upstreamStatus).toBe(400);
    const get = await fetch(`${imds.url}/acc/tdquote`);
    expect(get.status).toBe(405);
  });
});
