/**
 * A TPM failure inside a sidecar request names the step it broke (the TPM's own message says which
 * command and why; this says what the sidecar was doing). The code and class family are kept.
 */
import { DeviceError, SkrError, type ErrorCode } from '../common/errors';

/** TPM and vTPM-content failures; anything else (MAA, verification) already names its own step. */
const STEP_CODES = new Set<ErrorCode>(['ERR_TPM_RC', 'ERR_TPM_TRANSPORT', 'ERR_TPM_RESPONSE', 'ERR_HCL_REPORT', 'ERR_HCL_USER_DATA_STALE']);

export async function atTpmStep<T>(step: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof SkrError && STEP_CODES.has(e.code)) {
      throw new DeviceError(e.code, `${step}: ${e.message}`, { cause: e });
    }
    throw e;
  }
}
