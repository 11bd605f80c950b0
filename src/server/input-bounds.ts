/**
 * Size checks on the caller's kid before any allowlist or upstream sees it: a 1 MB field gets a
 * short 400, never an echo of itself. (Endpoint names are bounded and checked where they are
 * parsed, src/common/endpoint.ts.)
 */
import { InvalidInputError } from '../common/errors';

/** `name/version`: 127 + 1 + 64 characters at most in Key Vault. */
export const MAX_KID_CHARS = 200;

export function checkKidLength(kid: string): void {
  if (kid.length > MAX_KID_CHARS) throw new InvalidInputError('ERR_KID', `kid is longer than ${MAX_KID_CHARS} characters`);
}
