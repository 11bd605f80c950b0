/** Errors specific to collateral: nothing usable could be obtained, or the TCBs never agreed. */
import { SkrError } from '../common/errors';

/** A source has no chain to give (no security context, no THIM bundle). → 500 */
export class CollateralUnavailableError extends SkrError {
  readonly source: string;
  constructor(source: string, message: string, cause?: unknown) {
    super('ERR_COLLATERAL_UNAVAILABLE', message, { cause });
    this.source = source;
  }
}

/** REPORTED_TCB still differs from the chain's TCB after refreshing the chain and the report. → 500 */
export class TcbMismatchError extends SkrError {
  readonly reportedTcb: bigint;
  readonly chainTcb: bigint;
  constructor(reportedTcb: bigint, chainTcb: bigint, message: string) {
    super('ERR_TCB_MISMATCH', message);
    this.reportedTcb = reportedTcb;
    this.chainTcb = chainTcb;
  }
}
