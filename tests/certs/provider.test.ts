import { CollateralProvider } from '../../src/certs/provider';
import { TcbMismatchError } from '../../src/certs/errors';
import type { AmdCertChain, CollateralKey, CollateralSource } from '../../src/certs/types';
import type { Evidence, EvidenceSource, ReportRequest } from '../../src/snp/evidence';
import { buildReport, parseReport } from '../../src/snp/report';

/** Evidence source that hands out reports with the queued REPORTED_TCBs, one per call. */
class FakeEvidence implements EvidenceSource {
  readonly kind = 'simulated' as const;
  readonly description = 'fake';
  calls = 0;
  constructor(private readonly tcbs: bigint[]) {}
  async getReport(req: ReportRequest): Promise<Evidence> {
    const tcb = this.tcbs[Math.min(this.calls, this.tcbs.length - 1)];
    this.calls++;
    return { report: buildReport({ version: 3, cpuidFamId: 0x19, cpuidModId: 0x11, reportedTcb: tcb, reportData: req.reportData, chipId: Buffer.alloc(64, 5) }) };
  }
}

/** Chain source answering with the queued tcbm values, one per fetch. */
class FakeChains implements CollateralSource {
  calls = 0;
  keys: CollateralKey[] = [];
  constructor(readonly name: string, private readonly tcbms: bigint[]) {}
  async fetch(key: CollateralKey): Promise<AmdCertChain> {
    const tcbm = this.tcbms[Math.min(this.calls, this.tcbms.length - 1)];
    this.calls++;
    this.keys.push(key);
    return { vcekPem: `${this.name}-${this.calls}`, chainPem: '', tcbm, source: this.name };
  }
}

const OLD = 0x7308000000000003n;
const NEW = 0x7408000000000003n;
const req = { reportData: Buffer.alloc(64, 9) };

describe('CollateralProvider', () => {
  it('uses the primary chain when TCBs match, and caches it', async () => {
    const ev = new FakeEvidence([OLD]);
    const primary = new FakeChains('thim', [OLD]);
    const refresh = new FakeChains('kds', [OLD]);
    const p = new CollateralProvider({ evidence: ev, primary, refresh });
    const a = await p.getEvidenceWithChain(req);
    await p.getEvidenceWithChain(req);
    expect(a.chain.source).toBe('thim');
    expect(a.report.reportedTcb).toBe(OLD);
    expect(primary.calls).toBe(1);
    expect(refresh.calls).toBe(0);
    expect(primary.keys[0]).toMatchObject({ product: 'Genoa', tcb: OLD });
    expect(p.stats().primary.hits).toBe(1);
  });

  it('refreshes from the refresh source when REPORTED_TCB differs from the primary tcbm', async () => {
    const ev = new FakeEvidence([NEW]);
    const primary = new FakeChains('thim', [OLD]);
    const refresh = new FakeChains('kds', [NEW]);
    const r = await new CollateralProvider({ evidence: ev, primary, refresh }).getEvidenceWithChain(req);
    expect(r.chain.source).toBe('kds');
    expect(r.chain.tcbm).toBe(NEW);
    expect(ev.calls).toBe(1);
  });

  it('takes a fresh report once when the refreshed chain still differs', async () => {
    // Firmware moved back under us: the first report says NEW, the chain sources say OLD, the second report says OLD.
    const ev = new FakeEvidence([NEW, OLD]);
    const primary = new FakeChains('thim', [OLD]);
    const refresh = new FakeChains('kds', [OLD]);
    const r = await new CollateralProvider({ evidence: ev, primary, refresh }).getEvidenceWithChain(req);
    expect(ev.calls).toBe(2);
    expect(r.report.reportedTcb).toBe(OLD);
    expect(r.chain.tcbm).toBe(OLD);
  });

  it('fails with ERR_TCB_MISMATCH naming both values when nothing agrees', async () => {
    const ev = new FakeEvidence([NEW]);
    const primary = new FakeChains('thim', [OLD]);
    const refresh = new FakeChains('kds', [OLD]);
    const p = new CollateralProvider({ evidence: ev, primary, refresh });
    const err = (await p.getEvidenceWithChain(req).catch((e: unknown) => e)) as TcbMismatchError;
    expect(err).toBeInstanceOf(TcbMismatchError);
    expect(err.code).toBe('ERR_TCB_MISMATCH');
    expect(err.status).toBe(500);
    expect(err.message).toContain('7408000000000003');
    expect(err.message).toContain('7308000000000003');
    expect(ev.calls).toBe(2);
    // Round 1: refresh miss (fetch) + forced refresh (fetch); round 2: cached copy mismatches → forced refresh.
    expect(refresh.calls).toBe(3);
    expect(primary.calls).toBe(1);
  });

  it('re-fetches the primary when there is no refresh source', async () => {
    const ev = new FakeEvidence([NEW]);
    const primary = new FakeChains('thim', [OLD, NEW]);
    const r = await new CollateralProvider({ evidence: ev, primary }).getEvidenceWithChain(req);
    expect(primary.calls).toBe(2);
    expect(r.chain.tcbm).toBe(NEW);
  });

  it('gives the chain for a parsed report, or the mismatch error', async () => {
    const p = new CollateralProvider({ evidence: new FakeEvidence([OLD]), primary: new FakeChains('thim', [OLD]), refresh: new FakeChains('kds', [OLD]) });
    const report = parseReport(buildReport({ version: 2, reportedTcb: OLD }));
    expect((await p.chainForReport(report)).source).toBe('thim');
    expect(p.keyFor(report).product).toBe('Milan');
    await expect(p.chainForReport(parseReport(buildReport({ version: 2, reportedTcb: NEW })))).rejects.toMatchObject({ code: 'ERR_TCB_MISMATCH' });
  });
});
