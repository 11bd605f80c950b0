/**
 * The §7.1 explanations for response codes swtpm does not produce (it answers TPM_RC_FAILURE where a
 * current TPM answers TPM_RC_VALUE, and our key template never has scheme RSAES): real rc encodings.
 */
import { StaleKekError } from '../../src/akv/kek';
import { VerificationError } from '../../src/common/errors';
import { explainTpmUnwrapError } from '../../src/cvm/tpm-kek';
import { TpmError } from '../../src/tpm';

const ctx = { enc: 'RSA_AES_KEY_WRAP_384' as const, cipherBytes: 256 };

describe('explainTpmUnwrapError', () => {
  it('TPM_RC_VALUE (parameter 1, a current TPM\'s decrypt failure) names enc and hash; not stale', () => {
    const e = explainTpmUnwrapError(new TpmError('TPM2_RSA_Decrypt', 0x1c4), ctx);
    expect(e).toBeInstanceOf(VerificationError);
    expect(e).not.toBeInstanceOf(StaleKekError);
    expect(e.step).toBe('unwrap');
    expect(e.message).toMatch(/TPM2_RSA_Decrypt: TPM_RC_VALUE \(parameter 1\).*OAEP-SHA-384 decrypt the RSA part \(enc RSA_AES_KEY_WRAP_384\)/);
  });
  it('TPM_RC_SCHEME (parameter 2) names the old RSAES key template', () => {
    expect(explainTpmUnwrapError(new TpmError('TPM2_RSA_Decrypt', 0x2d2), ctx).message).toMatch(/TPM_RC_SCHEME \(parameter 2\).*created with scheme RSAES instead of NULL/);
  });
  it('TPM_RC_HANDLE (handle 1) and TPM_RC_POLICY_FAIL (session 1) are stale: attesting again can help', () => {
    const h = explainTpmUnwrapError(new TpmError('TPM2_RSA_Decrypt', 0x18b), ctx);
    expect(h).toBeInstanceOf(StaleKekError);
    expect(h.message).toMatch(/no longer loaded \(TPM reset or VM reboot\)/);
    const p = explainTpmUnwrapError(new TpmError('TPM2_RSA_Decrypt', 0x99d), ctx);
    expect(p).toBeInstanceOf(StaleKekError);
    expect(p.message).toMatch(/TPM_RC_POLICY_FAIL \(session 1\)/);
  });
  it('anything else keeps the TPM\'s own name and says where', () => {
    const e = explainTpmUnwrapError(new TpmError('TPM2_PolicyPCR', 0x902), ctx);
    expect(e).not.toBeInstanceOf(StaleKekError);
    expect(e.message).toMatch(/^TPM unwrap: TPM2_PolicyPCR: TPM_RC_OBJECT_MEMORY .* on the RSA part \(OAEP-SHA-384, enc RSA_AES_KEY_WRAP_384\)$/);
  });
});
