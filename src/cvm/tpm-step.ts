/**
 * A TPM failure inside a sidecar request names the step it broke (the TPM's own message says which
 * command and why; this says what the sidecar was doing). The code and class family are kept.
 */
import { DeviceError, SkrError } from '../common/errors';

export async function atTpmStep<T>(step: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof SkrError && (e.code === 'ERR_TPM_RC' || e.code === 'ERR_TPM_TRANSPORT' || e.code === 'ERR_TPM_RESPONSE')) {
      throw new DeviceError(e.code, `${step}: ${e.message}`, { cause: e });
    }
    throw e;
  }
}
