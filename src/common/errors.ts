/**
 * Typed errors with stable codes from one closed union (error-codes.ts). Every error the sidecar
 * raises on purpose is an SkrError, so the HTTP layer maps it to a status by its code alone (one
 * table beside the codes, error-status.ts) and the CLI can print `code: message`.
 */
import type { ErrorCode } from './error-codes';
import { httpStatusOf } from './error-status';

export type { ErrorCode };

export class SkrError extends Error {
  /** Stable machine-readable code, e.g. `ERR_REPORT_LENGTH`. Never changes once released. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    this.code = code;
  }

  /** The HTTP status a request ends with when this error ends it (the table, by code). */
  get status(): number {
    return httpStatusOf(this.code);
  }
}

/** Input that cannot be right: malformed bytes, bad base64, wrong length. → 400 */
export class InvalidInputError extends SkrError {
  constructor(code: ErrorCode, message: string, cause?: unknown) {
    super(code, message, { cause });
  }
}

/** A signature, chain or binding that does not verify. */
export class VerificationError extends SkrError {
  /** The verification step that failed, e.g. `report-signature`, `ask-signs-vcek`. */
  readonly step: string;
  constructor(step: string, message: string, cause?: unknown) {
    super('ERR_VERIFICATION', message, { cause });
    this.step = step;
  }
}

/** The attestation device is missing, unusable, or returned an error. → 500 with the cause */
export class DeviceError extends SkrError {
  /** errno name such as ENOENT/ENOTTY, when the failure came from a syscall. */
  readonly errno?: string;
  /** SEV firmware error (exitinfo2) when the firmware answered with one. */
  readonly firmwareError?: bigint;
  constructor(code: ErrorCode, message: string, opts?: { errno?: string; firmwareError?: bigint; cause?: unknown }) {
    super(code, message, { cause: opts?.cause });
    if (opts?.errno !== undefined) this.errno = opts.errno;
    if (opts?.firmwareError !== undefined) this.firmwareError = opts.firmwareError;
  }
}

/** An upstream service (KDS, THIM, MAA, vault) could not be reached or answered badly. → 502 */
export class UpstreamError extends SkrError {
  readonly upstream: string;
  readonly upstreamStatus?: number;
  constructor(upstream: string, message: string, opts?: { upstreamStatus?: number; code?: ErrorCode; cause?: unknown }) {
    super(opts?.code ?? 'ERR_UPSTREAM', message, { cause: opts?.cause });
    this.upstream = upstream;
    if (opts?.upstreamStatus !== undefined) this.upstreamStatus = opts.upstreamStatus;
  }
}

/** Configuration that cannot work (bad SkrSideCarArgs, unknown product). */
export class ConfigError extends SkrError {
  constructor(message: string, cause?: unknown) {
    super('ERR_CONFIG', message, { cause });
  }
}
