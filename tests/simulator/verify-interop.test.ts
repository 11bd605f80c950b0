/**
 * The simulator's evidence passes the project's own relying-party checks (src/certs), when and only
 * when the simulated ARK is explicitly trusted: proof that it is shaped like hardware evidence.
 */
import { TrustStore } from '../../src/certs/roots';
import { parseThimCertificates, thimToChain } from '../../src/certs/thim';
import { verifyReport } from '../../src/certs/verify';
import { reportDataFor } from '../../src/snp/report';
import { SimulatedPlatform } from '../../src/snp/simulator';

const rd = reportDataFor(Buffer.from('interop'));

describe('simulated evidence through src/certs verification', () => {
  it.each(['Milan', 'Genoa', 'Turin'] as const)('%s report + THIM chain verify against the pinned simulated ARK', async (product) => {
    const p = new SimulatedPlatform({ product });
    const { report } = await p.evidenceSource().getReport({ reportData: rd });
    const chain = thimToChain(parseThimCertificates(JSON.stringify(p.thimCertificates())), 'simulator');
    const v = verifyReport(report, chain, new TrustStore({ extraRootsPem: [p.arkPem], includeAmdRoots: false }));
    expect(v.product).toBe(product);
    expect(v.vcekTcb).toBe(p.reportedTcb);
    expect(v.chain.arkSha256).toBe(p.arkFingerprint);
  });

  it('is refused without trusting the simulated ARK (AMD roots only)', async () => {
    const p = new SimulatedPlatform();
    const { report } = await p.evidenceSource().getReport({ reportData: rd });
    const chain = thimToChain(p.thimCertificates(), 'simulator');
    expect(() => verifyReport(report, chain, new TrustStore())).toThrow(expect.objectContaining({ step: 'ark-pinned' }));
  });

  it('a stale VCEK (other TCB) and another chip\'s VCEK are refused', async () => {
    const p = new SimulatedPlatform();
    const trust = new TrustStore({ extraRootsPem: [p.arkPem] });
    const { report } = await p.evidenceSource().getReport({ reportData: rd });
    const stale = p.vcekFor({ bootloader: 4, tee: 0, snp: 9, microcode: 0x74 });
    const staleChain = { ...thimToChain(p.thimCertificates(), 'simulator'), vcekPem: stale.pem };
    expect(() => verifyReport(report, staleChain, trust)).toThrow(expect.objectContaining({ step: 'vcek-tcb' }));
    const other = new SimulatedPlatform({ chipId: Buffer.alloc(64, 7) });
    const otherChain = thimToChain(other.thimCertificates(), 'simulator');
    expect(() => verifyReport(report, otherChain, trust)).toThrow(expect.objectContaining({ step: 'vcek-hwid' }));
  });
});
