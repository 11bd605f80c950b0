/**
 * The §7.1 explanations for response codes swtpm does not produce (it answers TPM_RC_FAILURE where a
 * current TPM answers TPM_RC_VALUE, and our key template never has scheme RSAES): real rc encodings.
 */
import { StaleKekError } from '../../src/akv/kek';
import { DeviceError, VerificationError } from '../../src/common/errors';
import { httpStatusOf } from '../../src/common/error-status';
import { explainTpmUnwrapError } from '../../src/cvm/tpm-kek';
import { TpmError } from '../../src/tpm';

const ctx = { enc: 'RSA_AES_KEY_WRAP_384' as const, cipherBytes: 256 };

describe('explainTpmUnwrapError', () => {
  it('TPM_RC_VALUE (parameter 1, a current TPM\'s decrypt failure) names enc and hash; not stale; a refusal (403)', () => {
    const e = explainTpmUnwrapError(new TpmError('TPM2_RSA_Decrypt', 0x1c4), ctx) as VerificationError;
    expect(e).toBeInstanceOf(VerificationError);
    expect(e).not.toBeInstanceOf(StaleKekError);
    expect(httpStatusOf(e.code)).toBe(403);
    expect(e.step).toBe('unwrap');
    expect(e.message).toMatch(/TPM2_RSA_Decrypt: TPM_RC_VALUE \(parameter 1\).*OAEP-SHA-384 decrypt the RSA part \(enc RSA_AES_KEY_WRAP_384\)/);
  });
  it('TPM_RC_SCHEME (parameter 2) names the old RSAES key template; a TPM failure: ERR_TPM_RC, 500', () => {
    const e = explainTpmUnwrapError(new TpmError('TPM2_RSA_Decrypt', 0x2d2), ctx);
    expect(e.message).toMatch(/TPM_RC_SCHEME \(parameter 2\).*created with scheme RSAES instead of NULL/);
    expect(e).toBeInstanceOf(DeviceError);
    expect(httpStatusOf(e.code)).toBe(500);
  });
  it('TPM_RC_HANDLE (handle 1) and TPM_RC_POLICY_FAIL (session 1) are stale: attesting again can help', () => {
    const h = explainTpmUnwrapError(new TpmError('TPM2_RSA_Decrypt', 0x18b), ctx);
    expect(httpStatusOf(h.code)).toBe(403);
    expect(h).toBeInstanceOf(StaleKekError);
    expect(h.message).toMatch(/no longer loaded \(TPM reset or VM reboot\)/);
    const p = explainTpmUnwrapError(new TpmError('TPM2_RSA_Decrypt', 0x99d), ctx);
    expect(p).toBeInstanceOf(StaleKekError);
    expect(p.message).toMatch(/TPM_RC_POLICY_FAIL \(session 1\)/);
  });
  it('anything else is the TPM failing (issue 20: was a 403): ERR_TPM_RC, 500, keeping the TPM\'s own name and saying where', () => {
    const e = explainTpmUnwrapError(new TpmError('TPM2_PolicyPCR', 0x902), ctx);
    expect(e).not.toBeInstanceOf(VerificationError);
    expect(e).toBeInstanceOf(DeviceError);
    expect(e.code).toBe('ERR_TPM_RC');
    expect(httpStatusOf(e.code)).toBe(500);
    expect(e.message).toMatch(/^TPM unwrap: TPM2_PolicyPCR: TPM_RC_OBJECT_MEMORY .* on the RSA part \(OAEP-SHA-384, enc RSA_AES_KEY_WRAP_384\)$/);
  });
});
