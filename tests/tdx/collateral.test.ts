/**
 * TDX TCB status from Intel-shaped collateral: the simulated platform's TCB info and QE identity, signed by
 * the TEST-ONLY TCB signing certificate under the simulated root, verified and evaluated by the real code.
 * Each tampering is refused at its named step.
 */
import { rawMember, type TdxCollateral } from '../../src/tdx/collateral';
import { IntelTrustStore } from '../../src/tdx/roots';
import { mintSimulatedTdxCollateral, SIMULATED_PCK_PLATFORM, SimulatedTdxPlatform, TEST_ONLY_INTEL_ROOT_PEM } from '../../src/tdx/simulator';
import { evaluateTdxTcb } from '../../src/tdx/tcb';
import { verifyTdQeIdentity, verifyTdxTcbInfo } from '../../src/tdx/collateral';
import { verifyTdQuote } from '../../src/tdx/verify';
import { stepOf } from '../helpers/errors';

const trust = new IntelTrustStore({ extraRootsPem: [TEST_ONLY_INTEL_ROOT_PEM], includeIntelRoot: false });
const tdx = new SimulatedTdxPlatform();
const quote = tdx.quote(tdx.tdReport(Buffer.alloc(64, 3)));


/** The PCK platform CA of the quote's chain: a real certificate, but not a trusted root. */
const quotePckChainCa = () => verifyTdQuote(quote, { trust }).intermediate.toString();

const flipSignature = (body: string) => body.replace(/"signature":"(.)/, (_m, c: string) => `"signature":"${c === '0' ? '1' : '0'}`);

describe('TDX collateral and TCB status', () => {
  it('the simulated PCK certificate carries the platform FMSPC, PCE id and TCB', () => {
    const v = verifyTdQuote(quote, { trust });
    expect(v.tcbStatus).toBe('not-checked');
    expect(v.pckInfo).toEqual({ fmspc: SIMULATED_PCK_PLATFORM.fmspc, pceId: '0000', tcb: { sgxComponents: [...SIMULATED_PCK_PLATFORM.sgxComponents], pceSvn: 13, cpuSvn: Buffer.from(SIMULATED_PCK_PLATFORM.sgxComponents).toString('hex') } });
  });

  it('UpToDate: the platform meets the newest level; QE and module identities match', () => {
    const v = verifyTdQuote(quote, { trust, collateral: mintSimulatedTdxCollateral() });
    expect(v.tcbStatus).toBe('UpToDate');
    expect(v.tcb).toMatchObject({ platformStatus: 'UpToDate', qeStatus: 'UpToDate', moduleStatus: 'UpToDate', advisoryIds: [], fmspc: SIMULATED_PCK_PLATFORM.fmspc, tcbEvaluationDataNumber: 17 });
  });

  it('OutOfDate: a level above the platform exists; its advisories are reported', () => {
    const v = verifyTdQuote(quote, { trust, collateral: mintSimulatedTdxCollateral({ platform: 'out-of-date' }) });
    expect(v.tcbStatus).toBe('OutOfDate');
    expect(v.tcb?.advisoryIds).toEqual(['INTEL-SA-SIM-0001']);
    expect(v.tcb?.tcbDate).toBe('2024-03-13T00:00:00Z');
  });

  it('a flipped signature byte is refused at tcb-info-signature / qe-identity-signature', () => {
    const c = mintSimulatedTdxCollateral();
    const badTcb: TdxCollateral = { ...c, tcbInfo: { ...c.tcbInfo, body: flipSignature(c.tcbInfo.body) } };
    const badQe: TdxCollateral = { ...c, qeIdentity: { ...c.qeIdentity, body: flipSignature(c.qeIdentity.body) } };
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: badTcb }))).toBe('tcb-info-signature');
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: badQe }))).toBe('qe-identity-signature');
  });

  it('a changed signed byte (a status rewritten) is refused at tcb-info-signature', () => {
    const c = mintSimulatedTdxCollateral({ platform: 'out-of-date' });
    const body = c.tcbInfo.body.replace('"tcbStatus":"OutOfDate"', '"tcbStatus":"UpToDate"');
    expect(body).not.toBe(c.tcbInfo.body);
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: { ...c, tcbInfo: { ...c.tcbInfo, body } } }))).toBe('tcb-info-signature');
  });

  it('the signature covers the served bytes: whitespace the signer did not sign is refused, re-serialising would not notice', () => {
    const c = mintSimulatedTdxCollateral();
    const body = c.tcbInfo.body.replace('"id":"TDX"', '"id": "TDX"');
    expect(JSON.stringify(JSON.parse(body))).toBe(JSON.stringify(JSON.parse(c.tcbInfo.body)));
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: { ...c, tcbInfo: { ...c.tcbInfo, body } } }))).toBe('tcb-info-signature');
  });

  it('a second tcbInfo member (parser would read the unsigned one) is refused at tcb-info-format', () => {
    const c = mintSimulatedTdxCollateral();
    const body = c.tcbInfo.body.replace(/}$/, ',"tcbInfo":{"id":"TDX"}}');
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: { ...c, tcbInfo: { ...c.tcbInfo, body } } }))).toBe('tcb-info-format');
  });

  it('past nextUpdate is refused at tcb-info-expired; before issueDate too', () => {
    const c = mintSimulatedTdxCollateral({ issueDate: new Date('2026-01-01T00:00:00Z'), nextUpdate: new Date('2026-02-01T00:00:00Z') });
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: c, now: new Date('2026-02-02T00:00:00Z') }))).toBe('tcb-info-expired');
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: c, now: new Date('2025-12-31T00:00:00Z') }))).toBe('tcb-info-expired');
    expect(verifyTdQuote(quote, { trust, collateral: c, now: new Date('2026-01-15T00:00:00Z') }).tcbStatus).toBe('UpToDate');
  });

  it('TCB info for another FMSPC is refused at tcb-info-fmspc', () => {
    const c = mintSimulatedTdxCollateral({ fmspc: '00906ed50000' });
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: c }))).toBe('tcb-info-fmspc');
  });

  it('an issuer chain without its root (or another root) is refused at tcb-info-chain', () => {
    const c = mintSimulatedTdxCollateral();
    const otherRoot = c.qeIdentity.issuerChainPem.replace(TEST_ONLY_INTEL_ROOT_PEM, quotePckChainCa());
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: { ...c, qeIdentity: { ...c.qeIdentity, issuerChainPem: otherRoot } } }))).toBe('qe-identity-chain');
    const chainWithoutRoot = c.tcbInfo.issuerChainPem.split('-----END CERTIFICATE-----')[0] + '-----END CERTIFICATE-----\n';
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: { ...c, tcbInfo: { ...c.tcbInfo, issuerChainPem: chainWithoutRoot } } }))).toBe('tcb-info-chain');
  });

  it('a QE identity naming another signer is refused at qe-identity; a TCB info passed as QE identity at qe-identity-format', () => {
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: mintSimulatedTdxCollateral({ qeMrSigner: Buffer.alloc(32, 0xaa) }) }))).toBe('qe-identity');
    const c = mintSimulatedTdxCollateral();
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: { ...c, qeIdentity: c.tcbInfo } }))).toBe('qe-identity-format');
  });

  it('a stale QE makes an up-to-date platform OutOfDate; a Revoked QE is refused at tcb-status', () => {
    const stale = verifyTdQuote(quote, { trust, collateral: mintSimulatedTdxCollateral({ qeStatus: 'OutOfDate' }) });
    expect(stale.tcb).toMatchObject({ status: 'OutOfDate', platformStatus: 'UpToDate', qeStatus: 'OutOfDate' });
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: mintSimulatedTdxCollateral({ qeStatus: 'Revoked' }) }))).toBe('tcb-status');
    expect(stepOf(() => verifyTdQuote(quote, { trust, collateral: mintSimulatedTdxCollateral({ qeStatus: 'Fine' }) }))).toBe('qe-identity');
  });

  it('TDX module major > 0: TEE_TCB_SVN[0..1] are judged by the TDX_01 identity, not the TCB level', () => {
    const v = verifyTdQuote(quote, { trust });
    const c = mintSimulatedTdxCollateral();
    const now = new Date();
    const info = verifyTdxTcbInfo(c.tcbInfo, trust, now);
    const qe = verifyTdQeIdentity(c.qeIdentity, trust, now);
    const svn = Buffer.from(v.quote.body.teeTcbSvn);
    svn[0] = 2; // module ISVSVN
    svn[1] = 1; // module major version 1
    const body = { ...v.quote.body, teeTcbSvn: svn };
    const level = { ...info.tcbLevels[0], tdxComponents: [3, 0, ...info.tcbLevels[0].tdxComponents.slice(2)] };
    const identity = { id: 'TDX_01', mrSigner: Buffer.alloc(48), attributes: Buffer.alloc(8), attributesMask: Buffer.alloc(8, 0xff), tcbLevels: [{ isvSvn: 3, tcbDate: '2025-01-01T00:00:00Z', tcbStatus: 'UpToDate', advisoryIds: [] }, { isvSvn: 0, tcbDate: '2024-01-01T00:00:00Z', tcbStatus: 'OutOfDate', advisoryIds: ['INTEL-SA-MOD'] }] };
    const withModule = { ...info, tcbLevels: [level], tdxModuleIdentities: [identity] };
    const r = evaluateTdxTcb(withModule, qe, v.pckInfo, body, v.quote.qeReport);
    expect(r).toMatchObject({ status: 'OutOfDate', platformStatus: 'UpToDate', moduleStatus: 'OutOfDate', advisoryIds: ['INTEL-SA-MOD'] });
    // Major 0: component 0 (2 < 3) counts, and no level is met.
    const major0 = Buffer.from(svn);
    major0[1] = 0;
    expect(stepOf(() => evaluateTdxTcb(withModule, qe, v.pckInfo, { ...body, teeTcbSvn: major0 }, v.quote.qeReport))).toBe('tcb-level');
    // No TDX_01 identity, or another MRSIGNERSEAM: refused at tdx-module.
    expect(stepOf(() => evaluateTdxTcb({ ...withModule, tdxModuleIdentities: [] }, qe, v.pckInfo, body, v.quote.qeReport))).toBe('tdx-module');
    expect(stepOf(() => evaluateTdxTcb(withModule, qe, v.pckInfo, { ...body, mrSignerSeam: Buffer.alloc(48, 1) }, v.quote.qeReport))).toBe('tdx-module');
  });

  it('rawMember returns the exact bytes of the member value and refuses duplicates', () => {
    expect(rawMember('{"a":1,"tcbInfo": {"x":"}","y":[{}]} ,"signature":"00"}', 'tcbInfo')).toBe('{"x":"}","y":[{}]}');
    expect(rawMember('{"s":"\\"tcbInfo\\":{}","tcbInfo":{"k":2}}', 'tcbInfo')).toBe('{"k":2}');
    expect(rawMember('{"tcbInfo":{},"tcbInfo":{"k":1}}', 'tcbInfo')).toBeUndefined();
    expect(rawMember('{"o":{"tcbInfo":{}}}', 'tcbInfo')).toBeUndefined();
  });
});
