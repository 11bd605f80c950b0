/**
 * Size and shape checks on the caller's endpoint names and kid, before any allowlist or upstream
 * sees them: a 1 MB field gets a short 400, never an echo of itself.
 */
import { InvalidInputError } from '../common/errors';
import { checkEndpointName } from '../common/dns-name';

/** `name/version`: 127 + 1 + 64 characters at most in Key Vault. */
export const MAX_KID_CHARS = 200;

export function checkKidLength(kid: string): void {
  if (kid.length > MAX_KID_CHARS) throw new InvalidInputError('ERR_KID', `kid is longer than ${MAX_KID_CHARS} characters`);
}

/** maa_endpoint / akv_endpoint: bounded length, and a DNS name or IP literal as host (400 naming the field). */
export function checkEndpoints(fields: Record<string, string>): void {
  for (const [field, value] of Object.entries(fields)) checkEndpointName(field, value);
}
