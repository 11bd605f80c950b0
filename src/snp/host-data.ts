/** HOST_DATA for a confidential ACI group: sha256 of the decoded `ccePolicy`. */
import { createHash } from 'node:crypto';
import { decodeBase64Strict } from '../common/bytes';
import { InvalidInputError } from '../common/errors';

/** Decode a base64 `ccePolicy` (whitespace and line breaks allowed, as files and ARM values carry them). */
export function decodeCcePolicy(base64Text: string): Buffer {
  const compact = base64Text.replace(/\s+/g, '');
  if (compact === '') throw new InvalidInputError('ERR_POLICY_EMPTY', 'the security policy is empty');
  const bytes = decodeBase64Strict(compact);
  if (!bytes) throw new InvalidInputError('ERR_POLICY_BASE64', 'the security policy is not base64 (expected the ARM ccePolicy value)');
  return bytes;
}

/** sha256 hex of the decoded policy: the value release policies pin as `x-ms-sevsnpvm-hostdata`. */
export function policyDigest(base64Text: string): string {
  return createHash('sha256').update(decodeCcePolicy(base64Text)).digest('hex');
}
