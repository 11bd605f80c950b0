import { verifyUvmEndorsement, MICROSOFT_UVM_ROOT_SHA256 } from '../../src/cose/uvm-endorsement';
import { SimulatedPlatform, simulatedUvmEndorsementBase64, TEST_ONLY_UVM_ROOT_SHA256 } from '../../src/snp/simulator';

describe('simulated UVM endorsement', () => {
  const p = new SimulatedPlatform();
  const b64 = simulatedUvmEndorsementBase64(p.measurement, 3);

  it('verifies when the test UVM root is trusted, endorsing the launch measurement', () => {
    const v = verifyUvmEndorsement(b64, { trustedRootFingerprints: [TEST_ONLY_UVM_ROOT_SHA256] });
    expect(v.launchMeasurement).toBe(p.measurement.toString('hex'));
    expect(v.guestSvn).toBe('3');
  });

  it("is refused by default (only Microsoft's root is pinned)", () => {
    expect(TEST_ONLY_UVM_ROOT_SHA256).not.toBe(MICROSOFT_UVM_ROOT_SHA256.toLowerCase().replace(/:/g, ''));
    expect(() => verifyUvmEndorsement(b64)).toThrow(expect.objectContaining({ step: 'uvm-root' }));
  });
});
