/**
 * TPM failures as typed errors. A response code is decoded per Part 2 §6.6 (format zero / format one,
 * with the handle, session or parameter it refers to) and named as the specification names it, so an
 * operator reads `TPM_RC_NV_UNINITIALIZED` rather than `0x14a`.
 */
import { DeviceError, SkrError } from '../common/errors';

/** Format-zero codes (TPM_RC_VER1 + n, and warnings TPM_RC_WARN + n). */
const FMT0: Readonly<Record<number, string>> = {
  0x100: 'INITIALIZE', 0x101: 'FAILURE', 0x103: 'SEQUENCE', 0x10b: 'PRIVATE', 0x119: 'HMAC', 0x120: 'DISABLED',
  0x121: 'EXCLUSIVE', 0x124: 'AUTH_TYPE', 0x125: 'AUTH_MISSING', 0x126: 'POLICY', 0x127: 'PCR', 0x128: 'PCR_CHANGED',
  0x12d: 'UPGRADE', 0x12e: 'TOO_MANY_CONTEXTS', 0x12f: 'AUTH_UNAVAILABLE', 0x130: 'REBOOT', 0x131: 'UNBALANCED',
  0x142: 'COMMAND_SIZE', 0x143: 'COMMAND_CODE', 0x144: 'AUTHSIZE', 0x145: 'AUTH_CONTEXT', 0x146: 'NV_RANGE',
  0x147: 'NV_SIZE', 0x148: 'NV_LOCKED', 0x149: 'NV_AUTHORIZATION', 0x14a: 'NV_UNINITIALIZED', 0x14b: 'NV_SPACE',
  0x14c: 'NV_DEFINED', 0x150: 'BAD_CONTEXT', 0x151: 'CPHASH', 0x152: 'PARENT', 0x153: 'NEEDS_TEST', 0x154: 'NO_RESULT',
  0x155: 'SENSITIVE',
  0x901: 'CONTEXT_GAP', 0x902: 'OBJECT_MEMORY', 0x903: 'SESSION_MEMORY', 0x904: 'MEMORY', 0x905: 'SESSION_HANDLES',
  0x906: 'OBJECT_HANDLES', 0x907: 'LOCALITY', 0x908: 'YIELDED', 0x909: 'CANCELED', 0x90a: 'TESTING',
  0x910: 'REFERENCE_H0', 0x911: 'REFERENCE_H1', 0x912: 'REFERENCE_H2', 0x913: 'REFERENCE_H3', 0x914: 'REFERENCE_H4',
  0x915: 'REFERENCE_H5', 0x916: 'REFERENCE_H6', 0x918: 'REFERENCE_S0', 0x919: 'REFERENCE_S1', 0x91a: 'REFERENCE_S2',
  0x91b: 'REFERENCE_S3', 0x91c: 'REFERENCE_S4', 0x91d: 'REFERENCE_S5', 0x91e: 'REFERENCE_S6', 0x920: 'NV_RATE',
  0x921: 'LOCKOUT', 0x922: 'RETRY', 0x923: 'NV_UNAVAILABLE',
};

/** Format-one codes (TPM_RC_FMT1 + n). */
const FMT1: Readonly<Record<number, string>> = {
  0x081: 'ASYMMETRIC', 0x082: 'ATTRIBUTES', 0x083: 'HASH', 0x084: 'VALUE', 0x085: 'HIERARCHY', 0x087: 'KEY_SIZE',
  0x088: 'MGF', 0x089: 'MODE', 0x08a: 'TYPE', 0x08b: 'HANDLE', 0x08c: 'KDF', 0x08d: 'RANGE', 0x08e: 'AUTH_FAIL',
  0x08f: 'NONCE', 0x090: 'PP', 0x092: 'SCHEME', 0x095: 'SIZE', 0x096: 'SYMMETRIC', 0x097: 'TAG', 0x098: 'SELECTOR',
  0x09a: 'INSUFFICIENT', 0x09b: 'SIGNATURE', 0x09c: 'KEY', 0x09d: 'POLICY_FAIL', 0x09f: 'INTEGRITY', 0x0a0: 'TICKET',
  0x0a1: 'RESERVED_BITS', 0x0a2: 'BAD_AUTH', 0x0a3: 'EXPIRED', 0x0a4: 'POLICY_CC', 0x0a5: 'BINDING', 0x0a6: 'CURVE',
  0x0a7: 'ECC_POINT',
};

export interface DecodedRc {
  rc: number;
  /** `TPM_RC_NV_UNINITIALIZED`, or `TPM_RC_0x...` for a code the specification does not name. */
  name: string;
  /** The base code without the handle/session/parameter number (e.g. 0x09d for 0x99d). */
  base: number;
  format: 'zero' | 'one';
  warning: boolean;
  /** 1-based, format one only: which parameter, handle or session the code is about. */
  parameter?: number;
  handle?: number;
  session?: number;
}

/** Decode a non-zero response code (Part 2, Figure 26 and 27). */
export function decodeRc(rc: number): DecodedRc {
  rc = rc >>> 0;
  if (rc & 0x80) {
    const base = 0x080 + (rc & 0x3f);
    const out: DecodedRc = { rc, base, name: `TPM_RC_${FMT1[base] ?? `0x${base.toString(16)}`}`, format: 'one', warning: false };
    const n = (rc >> 8) & 0xf;
    if (rc & 0x40) {
      if (n) out.parameter = n;
    } else if (rc & 0x800) {
      if (n & 0x7) out.session = n & 0x7;
    } else if (n & 0x7) {
      out.handle = n & 0x7;
    }
    return out;
  }
  if ((rc & 0x100) === 0) {
    // TPM 1.2 style code (VER1 clear): no TPM 2.0 name.
    return { rc, base: rc, name: `TPM_RC_0x${rc.toString(16)} (TPM 1.2 code)`, format: 'zero', warning: false };
  }
  const base = rc & 0xfff & ~0x400;
  const vendor = (rc & 0x400) !== 0;
  const name = vendor ? `TPM_RC_VENDOR_0x${(rc & 0x7f).toString(16)}` : `TPM_RC_${FMT0[base] ?? `0x${base.toString(16)}`}`;
  return { rc, base, name, format: 'zero', warning: (rc & 0x800) !== 0 };
}

/** Default advice for codes whose cause is usually the same whatever the command. */
const HINTS: Readonly<Record<string, string>> = {
  TPM_RC_POLICY_FAIL: 'the PCRs changed since attestation (or the VM rebooted): attest again',
  TPM_RC_AUTH_UNAVAILABLE: 'the key can only be used through a policy session',
  TPM_RC_OBJECT_MEMORY: 'the TPM has no free transient object slot: a handle was not flushed',
  TPM_RC_SESSION_MEMORY: 'the TPM has no free session slot: a session was not flushed',
  TPM_RC_INITIALIZE: 'the TPM has not been started (TPM2_Startup)',
  TPM_RC_RETRY: 'the TPM is busy: retry the command',
  TPM_RC_TESTING: 'the TPM is self-testing: retry shortly',
  TPM_RC_LOCKOUT: 'the TPM is in dictionary-attack lockout',
};

export function defaultHint(name: string): string | undefined {
  return HINTS[name];
}

/** The TPM answered a command with a non-zero response code. → 500 */
export class TpmError extends SkrError {
  readonly rc: number;
  readonly rcName: string;
  readonly command: string;
  readonly decoded: DecodedRc;
  readonly hint?: string;

  constructor(command: string, rc: number, opts: { hint?: string; context?: string } = {}) {
    const d = decodeRc(rc);
    const where = d.parameter ? ` (parameter ${d.parameter})` : d.handle ? ` (handle ${d.handle})` : d.session ? ` (session ${d.session})` : '';
    const hint = opts.hint ?? defaultHint(d.name);
    const ctx = opts.context ? ` ${opts.context}` : '';
    super('ERR_TPM_RC', `${command}${ctx}: ${d.name}${where} [rc 0x${d.rc.toString(16)}]${hint ? `: ${hint}` : ''}`);
    this.rc = d.rc;
    this.rcName = d.name;
    this.command = command;
    this.decoded = d;
    if (hint !== undefined) this.hint = hint;
  }

  /** Same error with advice that only the caller can give (e.g. "AK certificate not provisioned yet"). */
  withHint(hint: string, context?: string): TpmError {
    return new TpmError(this.command, this.rc, { hint, ...(context !== undefined ? { context } : {}) });
  }

  is(name: string): boolean {
    return this.rcName === name;
  }
}

/** The TPM could not be reached, went away mid-command, or timed out. → 500 */
export class TpmTransportError extends DeviceError {
  constructor(message: string, opts?: { errno?: string; cause?: unknown }) {
    super('ERR_TPM_TRANSPORT', message, opts);
  }
}

/** A response that is not a well-formed answer to the command (truncated, oversized, inconsistent). → 500 */
export class TpmResponseError extends DeviceError {
  constructor(message: string, cause?: unknown) {
    super('ERR_TPM_RESPONSE', message, { cause });
  }
}
