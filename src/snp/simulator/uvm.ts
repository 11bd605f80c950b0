/**
 * The simulated platform's UVM endorsement: what ACI's `reference-info-base64` carries on real hosts,
 * issued here by the TEST-ONLY signer chain for the simulator's launch measurement.
 */
import { createHash, createPrivateKey } from 'node:crypto';
import { dersOfPem } from '../../asn1/x509';
import { issueUvmEndorsement } from '../../cose/uvm-endorsement';
import {
  TEST_ONLY_UVM_INTERMEDIATE_PEM,
  TEST_ONLY_UVM_LEAF_KEY_PEM,
  TEST_ONLY_UVM_LEAF_PEM,
  TEST_ONLY_UVM_ROOT_PEM,
} from './test-only-uvm-signer';

/** sha256 (hex) of the test UVM root: what a verifier must be told to trust for simulated endorsements. */
export const TEST_ONLY_UVM_ROOT_SHA256 = createHash('sha256').update(dersOfPem(TEST_ONLY_UVM_ROOT_PEM)[0]).digest('hex');

/** Base64 COSE_Sign1 endorsing `measurement` (48 bytes) at `guestSvn`, signed by the test UVM signer. */
export function simulatedUvmEndorsementBase64(measurement: Buffer, guestSvn = 1): string {
  const chainDer = [TEST_ONLY_UVM_LEAF_PEM, TEST_ONLY_UVM_INTERMEDIATE_PEM, TEST_ONLY_UVM_ROOT_PEM].map((p) => dersOfPem(p)[0]);
  return issueUvmEndorsement({
    launchMeasurement: measurement.toString('hex'),
    guestSvn,
    signerKey: createPrivateKey(TEST_ONLY_UVM_LEAF_KEY_PEM),
    chainDer,
  }).toString('base64');
}
