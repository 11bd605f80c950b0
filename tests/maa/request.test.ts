import { buildSevSnpVmRequest, parseSevSnpVmRequest, serializeSevSnpVmRequest } from '../../src/maa/request';
import { parseUvmEndorsement } from '../../src/cose/uvm-endorsement';
import { parseReport } from '../../src/snp/report';
import { describeVectors, vector } from '../helpers/vectors';
import { RUNTIME_DATA, RUNTIME_JSON, simulatedInput, simulatedPlatform } from './fixtures';

const B64URL_NOPAD = /^[A-Za-z0-9_-]+={0,2}$/; // padded, as the reference sends it

/** The reference pads base64url (Go's URLEncoding); so do we. */
const padded = (s: string): string => s + '='.repeat((4 - (s.length % 4)) % 4);

function unb64url(s: unknown): Buffer {
  expect(typeof s).toBe('string');
  expect(s).toMatch(B64URL_NOPAD);
  return Buffer.from(s as string, 'base64url');
}

describe('buildSevSnpVmRequest', () => {
  it('produces exactly the PROTOCOLS §4 shape, every layer decodable', () => {
    const input = simulatedInput({ nonce: 0xfedcba9876543210n });
    const text = serializeSevSnpVmRequest(buildSevSnpVmRequest(input));

    // Top level: report, runtimeData, nonce and nothing else; the u64 nonce is an exact integer literal.
    expect(text).toMatch(/,"nonce":18364758544493064720}$/);
    const body = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(['nonce', 'report', 'runtimeData']);
    expect(body.runtimeData).toEqual({ data: padded(RUNTIME_DATA.toString('base64url')), dataType: 'JSON' });
    expect(JSON.parse(unb64url((body.runtimeData as { data: string }).data).toString('utf8'))).toEqual(RUNTIME_JSON);

    // report → JSON { SnpReport, VcekCertChain, Endorsements }
    const inner = JSON.parse(unb64url(body.report).toString('utf8')) as Record<string, unknown>;
    expect(Object.keys(inner)).toEqual(['SnpReport', 'VcekCertChain', 'Endorsements']);
    expect(unb64url(inner.SnpReport).equals(input.report)).toBe(true);
    expect(unb64url(inner.VcekCertChain).toString('utf8')).toBe(input.vcekPem + input.chainPem);

    // Endorsements → JSON { Uvm: [b64url(COSE bytes)] }, the COSE bytes being reference-info decoded.
    const endorsements = JSON.parse(unb64url(inner.Endorsements).toString('utf8')) as { Uvm: unknown[] };
    expect(Object.keys(endorsements)).toEqual(['Uvm']);
    expect(endorsements.Uvm).toHaveLength(1);
    const cose = unb64url(endorsements.Uvm[0]);
    expect(cose.equals(Buffer.from(input.uvmEndorsementBase64 as string, 'base64'))).toBe(true);
    expect(parseUvmEndorsement(cose).launchMeasurement).toBe(simulatedPlatform().measurement.toString('hex'));
  });

  it('omits Endorsements without a UVM endorsement, and picks a random u64 nonce when none is given', () => {
    const a = buildSevSnpVmRequest(simulatedInput({ uvmEndorsementBase64: undefined }));
    const b = buildSevSnpVmRequest(simulatedInput({ uvmEndorsementBase64: '' }));
    for (const r of [a, b]) {
      const inner = JSON.parse(Buffer.from(r.report, 'base64url').toString('utf8')) as Record<string, unknown>;
      expect(Object.keys(inner)).toEqual(['SnpReport', 'VcekCertChain']);
    }
    expect(a.nonce).not.toBe(b.nonce);
    expect(a.nonce >= 0n && a.nonce < 1n << 64n).toBe(true);
  });

  it('joins a VCEK PEM without a final newline to the chain on a new line', () => {
    const input = simulatedInput();
    const r = buildSevSnpVmRequest({ ...input, vcekPem: input.vcekPem.trimEnd() });
    const inner = JSON.parse(Buffer.from(r.report, 'base64url').toString('utf8')) as { VcekCertChain: string };
    expect(Buffer.from(inner.VcekCertChain, 'base64url').toString('utf8')).toBe(`${input.vcekPem.trimEnd()}\n${input.chainPem}`);
  });

  it('refuses inputs MAA would refuse, with ERR_MAA_REQUEST naming the part', () => {
    const input = simulatedInput();
    const cases: [Partial<typeof input>, RegExp][] = [
      [{ report: input.report.subarray(0, 1000) }, /report: SNP report is 1000 bytes/],
      [{ vcekPem: input.vcekPem + input.chainPem }, /VcekCertChain: VCEK PEM holds 3 certificates/],
      [{ chainPem: 'nothing here' }, /VcekCertChain: chain PEM holds no certificate/],
      [{ uvmEndorsementBase64: 'not base64!' }, /Endorsements\.Uvm/],
      [{ runtimeData: Buffer.from('not json') }, /runtimeData: not valid JSON/],
      [{ nonce: 1n << 64n }, /nonce/],
      [{ nonce: -1n }, /nonce/],
    ];
    for (const [over, msg] of cases) {
      expect(() => buildSevSnpVmRequest({ ...input, ...over })).toThrow(expect.objectContaining({ code: 'ERR_MAA_REQUEST', status: 400, message: expect.stringMatching(msg) }));
    }
  });
});

describe('parseSevSnpVmRequest', () => {
  it('round-trips what buildSevSnpVmRequest produces (object and JSON text)', () => {
    const input = simulatedInput({ nonce: 42n });
    const req = buildSevSnpVmRequest(input);
    const text = serializeSevSnpVmRequest(req);
    for (const body of [JSON.parse(text) as unknown, text, Buffer.from(text)]) {
      const p = parseSevSnpVmRequest(body);
      expect(p.report.equals(input.report)).toBe(true);
      expect(p.vcekCertChainPem).toBe(input.vcekPem + input.chainPem);
      expect(p.uvmEndorsements).toEqual([Buffer.from(input.uvmEndorsementBase64 as string, 'base64')]);
      expect(p.runtimeData.equals(RUNTIME_DATA)).toBe(true);
      expect(p.runtimeDataType).toBe('JSON');
      expect(p.runtimeJson).toEqual(RUNTIME_JSON);
      expect(p.nonce).toBe(42n);
      expect(p.initTimeData).toBeUndefined();
    }
    // Object form straight from the builder (bigint nonce) works too.
    expect(parseSevSnpVmRequest(req).nonce).toBe(42n);
  });

  it('accepts the reference sidecar\'s variant: padded base64url, empty initTimeData, no Endorsements', () => {
    const input = simulatedInput();
    // Go's base64.URLEncoding pads every layer.
    const pad = (s: string) => s + '='.repeat((4 - (s.length % 4)) % 4);
    const inner = { SnpReport: pad(input.report.toString('base64url')), VcekCertChain: pad(Buffer.from(input.vcekPem + input.chainPem).toString('base64url')) };
    expect(inner.SnpReport.endsWith('=')).toBe(true);
    const body = {
      report: pad(Buffer.from(JSON.stringify(inner)).toString('base64url')),
      runtimeData: { data: pad(RUNTIME_DATA.toString('base64url')), dataType: 'JSON' },
      initTimeData: { data: '', dataType: '' },
      nonce: 9007199254740991,
    };
    const p = parseSevSnpVmRequest(body);
    expect(p.report.equals(input.report)).toBe(true);
    expect(p.uvmEndorsements).toEqual([]);
    expect(p.nonce).toBe(9007199254740991n);
    expect(p.initTimeData).toBeUndefined();
  });

  it('carries Binary runtime data without parsing it, and a non-empty initTimeData', () => {
    const base = JSON.parse(serializeSevSnpVmRequest(buildSevSnpVmRequest(simulatedInput()))) as Record<string, unknown>;
    const p = parseSevSnpVmRequest({
      ...base,
      runtimeData: { data: Buffer.from([0, 255, 1]).toString('base64url'), dataType: 'binary' },
      initTimeData: { data: Buffer.from('policy').toString('base64url'), dataType: 'Binary' },
    });
    expect(p.runtimeDataType).toBe('Binary');
    expect(p.runtimeData).toEqual(Buffer.from([0, 255, 1]));
    expect(p.runtimeJson).toBeUndefined();
    expect(p.initTimeData?.toString()).toBe('policy');
    expect(typeof p.nonce).toBe('bigint');
  });

  describe('malformed inputs', () => {
    const input = simulatedInput();
    const good = JSON.parse(serializeSevSnpVmRequest(buildSevSnpVmRequest(input))) as Record<string, unknown>;
    const goodInner = JSON.parse(Buffer.from(good.report as string, 'base64url').toString()) as Record<string, unknown>;
    const enc = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
    const withInner = (inner: Record<string, unknown>) => ({ ...good, report: enc(inner) });

    const cases: [string, unknown, RegExp][] = [
      ['not an object', [1, 2], /body: must be a JSON object/],
      ['null', null, /body: must be a JSON object/],
      ['JSON text that is not JSON', '{"report":', /body: not valid JSON/],
      ['report missing', { ...good, report: undefined }, /report: expected a base64url string, got undefined/],
      ['report not base64', { ...good, report: 'ab$cd' }, /report: not valid base64url/],
      ['report not JSON', { ...good, report: enc('hello') }, /report: not valid JSON/],
      ['report JSON an array', { ...good, report: enc([1]) }, /report: must encode a JSON object/],
      ['SnpReport missing', withInner({ ...goodInner, SnpReport: undefined }), /report\.SnpReport: expected a base64url string/],
      ['SnpReport short', withInner({ ...goodInner, SnpReport: Buffer.alloc(100).toString('base64url') }), /report\.SnpReport: is 100 bytes, expected 1184/],
      ['VcekCertChain not PEM', withInner({ ...goodInner, VcekCertChain: enc('hello') }), /report\.VcekCertChain: holds no PEM certificate/],
      ['VcekCertChain bad PEM body', withInner({ ...goodInner, VcekCertChain: enc('-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n') }), /report\.VcekCertChain: .*not valid base64/],
      ['VcekCertChain not UTF-8', withInner({ ...goodInner, VcekCertChain: Buffer.from([0xff, 0xfe]).toString('base64url') }), /report\.VcekCertChain: not valid UTF-8/],
      ['Endorsements not JSON', withInner({ ...goodInner, Endorsements: enc('x') }), /report\.Endorsements: not valid JSON/],
      ['Uvm not an array', withInner({ ...goodInner, Endorsements: enc({ Uvm: 'abc' }) }), /report\.Endorsements\.Uvm: must be an array/],
      ['Uvm entry not a string', withInner({ ...goodInner, Endorsements: enc({ Uvm: ['AAAA', 7] }) }), /report\.Endorsements\.Uvm\[1\]: expected a base64url string, got number/],
      ['Uvm entry empty', withInner({ ...goodInner, Endorsements: enc({ Uvm: [''] }) }), /report\.Endorsements\.Uvm\[0\]: is empty/],
      ['runtimeData missing', { ...good, runtimeData: undefined }, /runtimeData: must be an object/],
      ['runtimeData.data not base64', { ...good, runtimeData: { data: '***', dataType: 'JSON' } }, /runtimeData\.data: not valid base64url/],
      ['runtimeData bad dataType', { ...good, runtimeData: { data: 'e30', dataType: 'Text' } }, /runtimeData\.dataType: dataType must be "JSON" or "Binary"/],
      ['runtimeData JSON that is not JSON', { ...good, runtimeData: { data: enc('{x'), dataType: 'JSON' } }, /runtimeData\.data: not valid JSON/],
      ['initTimeData not an object', { ...good, initTimeData: 'x' }, /initTimeData: must be an object/],
      ['nonce negative', { ...good, nonce: -1 }, /nonce: must be an unsigned 64-bit integer/],
      ['nonce fractional', { ...good, nonce: 1.5 }, /nonce: must be an unsigned 64-bit integer/],
      ['nonce too big', { ...good, nonce: '18446744073709551616' }, /nonce: must be an unsigned 64-bit integer/],
      ['nonce object', { ...good, nonce: {} }, /nonce: must be an unsigned 64-bit integer/],
    ];
    it.each(cases)('%s', (_name, body, msg) => {
      expect(() => parseSevSnpVmRequest(body)).toThrow(expect.objectContaining({ code: 'ERR_MAA_REQUEST', status: 400, message: expect.stringMatching(msg) }));
    });
  });
});

describeVectors('SevSnpVm request from real Milan evidence', () => {
  it('carries the real report, THIM chain and reference-info byte for byte', () => {
    const report = vector('real-milan/snp_report.bin');
    const thim = JSON.parse(vector('real-milan/thim_certs.json').toString('utf8')) as { vcekCert: string; certificateChain: string };
    const referenceInfo = vector('real-milan/reference-info-base64').toString('utf8').trim();
    const req = buildSevSnpVmRequest({
      report,
      vcekPem: thim.vcekCert,
      chainPem: thim.certificateChain,
      uvmEndorsementBase64: referenceInfo,
      runtimeData: Buffer.from('{"keys":[]}'),
      nonce: 7n,
    });
    const p = parseSevSnpVmRequest(JSON.parse(serializeSevSnpVmRequest(req)));
    expect(p.report.equals(report)).toBe(true);
    expect(parseReport(p.report).measurement.toString('hex')).toBe(
      '51068107cdc7ee3d89c7821b05bca6147eb77b2005ae759050fc049b65a1b0beabc65a9d857acecf23225f5ec76849f5',
    );
    expect(p.uvmEndorsements).toHaveLength(1);
    expect(p.uvmEndorsements[0].equals(Buffer.from(referenceInfo, 'base64'))).toBe(true);
    expect(p.vcekCertChainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(3);
  });
});
