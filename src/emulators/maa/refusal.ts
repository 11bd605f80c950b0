/**
 * How the emulator says no. Real MAA answers 400 with `{"error": {"code", "message"}}`; the emulator
 * keeps that shape and starts every message with the name of the check that failed (e.g.
 * `report-signature: ...`, `report-data: ...`), so a client and a test can tell the causes apart.
 */
import { SkrError } from '../../common/errors';

/** MAA's code for evidence it will not accept and for malformed requests. */
export const MAA_INVALID_PARAMETER = 'InvalidParameter';
export const MAA_UNSUPPORTED_API_VERSION = 'UnsupportedApiVersion';

export class MaaEmulatorRefusal extends SkrError {
  /** Which check failed: `request-format`, `api-version`, a report/chain step, `uvm-*`, `report-data`. */
  readonly check: string;
  /** The `error.code` sent to the client. */
  readonly maaCode: string;
  /** The status the emulator answers with (MAA's own, not the sidecar's table). */
  readonly httpStatus: number;

  constructor(check: string, message: string, opts: { maaCode?: string; status?: number; cause?: unknown } = {}) {
    // Steps from src/certs already prefix their own name; do not say it twice.
    const text = message.startsWith(`${check}:`) ? message : `${check}: ${message}`;
    super('ERR_MAA_EMULATOR_REFUSED', text, { cause: opts.cause });
    this.httpStatus = opts.status ?? 400;
    this.check = check;
    this.maaCode = opts.maaCode ?? MAA_INVALID_PARAMETER;
  }

  body(): { error: { code: string; message: string } } {
    return { error: { code: this.maaCode, message: this.message } };
  }
}
