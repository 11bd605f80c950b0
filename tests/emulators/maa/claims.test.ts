import { claimsFromReport, COMPLIANT_UVM, SEVSNPVM_CLAIM_NAMES } from '../../../src/emulators/maa/claims';
import { DEFAULT_SEVSNPVM_POLICY, policyHash } from '../../../src/emulators/maa/policy';
import { buildReport, parseReport } from '../../../src/snp/report';
import { encodeTcb } from '../../../src/snp/tcb';
import { createHash } from 'node:crypto';

const base = {
  version: 3,
  guestSvn: 9,
  familyId: Buffer.alloc(16, 0xf1),
  imageId: Buffer.alloc(16, 0xa2),
  vmpl: 2,
  reportData: Buffer.alloc(64, 0x11),
  measurement: Buffer.alloc(48, 0x22),
  hostData: Buffer.alloc(32, 0x33),
  idKeyDigest: Buffer.alloc(48, 0x44),
  authorKeyDigest: Buffer.alloc(48, 0x55),
  reportId: Buffer.alloc(32, 0x66),
};

describe('claimsFromReport', () => {
  it('maps policy bits 16/18/19 to booleans independently', () => {
    const bits = (policy: bigint) => {
      const c = claimsFromReport(parseReport(buildReport({ ...base, policy })));
      return [c['x-ms-sevsnpvm-smt-allowed'], c['x-ms-sevsnpvm-migration-allowed'], c['x-ms-sevsnpvm-is-debuggable']];
    };
    expect(bits(0x30000n)).toEqual([true, false, false]);
    expect(bits(0x40000n | 0x20000n)).toEqual([false, true, false]);
    expect(bits(0x80000n | 0x20000n)).toEqual([false, false, true]);
  });

  it('writes digests as lowercase hex and SVNs/VMPL as numbers', () => {
    const tcb = encodeTcb({ bootloader: 3, tee: 0, snp: 8, microcode: 115 }, 'Milan');
    const c = claimsFromReport(parseReport(buildReport({ ...base, reportedTcb: tcb, cpuidFamId: 0x19, cpuidModId: 0x01 })));
    expect(c).toMatchObject({
      'x-ms-sevsnpvm-familyId': 'f1'.repeat(16),
      'x-ms-sevsnpvm-imageId': 'a2'.repeat(16),
      'x-ms-sevsnpvm-reportdata': '11'.repeat(64),
      'x-ms-sevsnpvm-launchmeasurement': '22'.repeat(48),
      'x-ms-sevsnpvm-hostdata': '33'.repeat(32),
      'x-ms-sevsnpvm-idkeydigest': '44'.repeat(48),
      'x-ms-sevsnpvm-authorkeydigest': '55'.repeat(48),
      'x-ms-sevsnpvm-reportid': '66'.repeat(32),
      'x-ms-sevsnpvm-guestsvn': 9,
      'x-ms-sevsnpvm-vmpl': 2,
      'x-ms-sevsnpvm-bootloader-svn': 3,
      'x-ms-sevsnpvm-tee-svn': 0,
      'x-ms-sevsnpvm-snpfw-svn': 8,
      'x-ms-sevsnpvm-microcode-svn': 115,
      'x-ms-attestation-type': 'sevsnpvm',
      'x-ms-ver': '1.0',
    });
  });

  it('reads REPORTED_TCB in the Turin layout for Turin', () => {
    const tcb = encodeTcb({ fmc: 1, bootloader: 2, tee: 3, snp: 4, microcode: 5 }, 'Turin');
    const c = claimsFromReport(parseReport(buildReport({ ...base, reportedTcb: tcb })), { product: 'Turin' });
    expect([c['x-ms-sevsnpvm-bootloader-svn'], c['x-ms-sevsnpvm-tee-svn'], c['x-ms-sevsnpvm-snpfw-svn'], c['x-ms-sevsnpvm-microcode-svn']]).toEqual([2, 3, 4, 5]);
  });

  it('says azure-compliant-uvm only with a (verified) endorsement, and x-ms-runtime only with runtime JSON', () => {
    const r = parseReport(buildReport(base));
    const bare = claimsFromReport(r);
    expect(bare).not.toHaveProperty('x-ms-compliance-status');
    expect(bare).not.toHaveProperty('x-ms-sevsnpvm-uvm-endorsement');
    expect(bare).not.toHaveProperty('x-ms-runtime');
    expect(bare).not.toHaveProperty('nonce');
    const full = claimsFromReport(r, {
      runtime: { keys: [] },
      uvmEndorsement: { launchMeasurement: '22'.repeat(48), guestSvn: '101' },
      nonce: 7n,
    });
    expect(full['x-ms-compliance-status']).toBe(COMPLIANT_UVM);
    expect(full['x-ms-sevsnpvm-uvm-endorsement']).toEqual({ 'x-ms-sevsnpvm-guestsvn': '101', 'x-ms-sevsnpvm-launchmeasurement': '22'.repeat(48) });
    expect(full['x-ms-runtime']).toEqual({ keys: [] });
    expect(full.nonce).toBe('7');
    expect(Object.keys(full).sort()).toEqual([...SEVSNPVM_CLAIM_NAMES].sort());
  });

  it('hashes the default policy as base64url sha256', () => {
    expect(claimsFromReport(parseReport(buildReport(base)))['x-ms-policy-hash']).toBe(
      createHash('sha256').update(DEFAULT_SEVSNPVM_POLICY).digest('base64url'),
    );
    expect(policyHash('x')).not.toBe(policyHash());
  });
});
