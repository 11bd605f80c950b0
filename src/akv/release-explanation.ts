/**
 * Why a vault refused a release, in a bounded JSON shape: the `explanation` of a 403 (issue 19). Key
 * Vault answers a denied release only with "Target environment attestation statement cannot be verified"
 * or "... does not meet key release policy requirements"; the sidecar reads the key's release policy
 * (GET the key: the `get` key permission) and evaluates it against the claims of the token it presented,
 * with the engine of `skr policy explain`. It lives on ReleaseRefusedError, so every front end (HTTP,
 * gRPC, the CLI) shows the same thing. Never the token, a key or a secret: claim values only, clipped.
 */
import { decodeJwt } from 'jose';
import { clip } from '../common/clip';
import { explainVerdict, verdictSummary, type ClosestBranch } from './policy-explain';
import type { ReleasePolicy } from './policy';

/** The key as the release diagnosis needs it (GET /keys/<name>[/<version>]). */
export type KeyPolicyRead =
  | { ok: true; keyId: string; exportable: boolean; policy?: ReleasePolicy }
  /** `forbidden`: the identity may not read the key (no `get` permission); `unreadable`: anything else. */
  | { ok: false; reason: 'forbidden' | 'not-found' | 'unreadable'; status?: number; detail: string };

export interface ReleaseExplanation {
  /** Whether the key's release policy could be read and evaluated. */
  policyRead: boolean;
  /** One line: the most likely cause. */
  summary: string;
  /** When read: whether the claims of the token the sidecar presented satisfy the policy. */
  claimsSatisfyPolicy?: boolean;
  tokenIssuer?: string | null;
  /** When read: the top-level `anyOf` branch closest to granting, with each failing claim (wants / has). */
  closestBranch?: ClosestBranch | null;
  hints: string[];
}

/** What to grant so the sidecar can read a key's release policy. */
export const GET_PERMISSION_FIX =
  'grant the identity the "get" key permission (access policy) or a role with keys/read (e.g. Key Vault Reader or Key Vault Crypto User; Managed HSM Crypto User)';

/** What usually fails, when the policy itself cannot be read. */
const UNREAD_POLICY_HINT =
  'check that the token satisfies the key\'s release policy (x-ms-sevsnpvm-hostdata = sha256 of the deployed ccePolicy on ACI, ' +
  'x-ms-isolation-tee.* claims on a confidential VM, the authority = this MAA endpoint): `skr policy explain` with the policy and an MAA token names the failing condition';

function claimsOf(maaToken: string): Record<string, unknown> | undefined {
  try {
    return decodeJwt(maaToken) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/**
 * The explanation of a 403 release: `read` is the key as GET returned it (or why not), `maaToken` the token
 * the vault was given, `vaultSays` the vault's own (clipped) code and message.
 */
export function explainRefusal(read: KeyPolicyRead, maaToken: string, vaultSays: string, now: () => number = Date.now): ReleaseExplanation {
  if (!read.ok) {
    const summary = read.reason === 'forbidden'
      ? `the sidecar may not read the key's release policy to say which condition failed (${clip(read.detail)}): ${GET_PERMISSION_FIX}`
      : `the key's release policy could not be read to say which condition failed: ${clip(read.detail)}`;
    return { policyRead: false, summary, hints: [UNREAD_POLICY_HINT] };
  }
  if (!read.exportable || read.policy === undefined) {
    return { policyRead: true, summary: 'the key is not exportable with a release policy: create or import it with --exportable and a release policy', hints: [] };
  }
  const claims = claimsOf(maaToken);
  if (claims === undefined) return { policyRead: true, summary: 'the token the sidecar presented is not a JWT', hints: [] };
  const verdict = explainVerdict(read.policy, claims);
  const base = { policyRead: true, claimsSatisfyPolicy: verdict.granted, tokenIssuer: verdict.tokenIssuer, closestBranch: verdict.closestBranch, hints: verdict.hints };
  if (!verdict.granted) return { ...base, summary: verdictSummary(verdict) };
  // The claims pass, so the vault objected to the token itself or to the caller.
  const exp = claims.exp;
  let summary: string;
  if (typeof exp === 'number' && exp * 1000 < now()) summary = 'the MAA token has expired';
  else if (/verif|signature|expired|statement/i.test(vaultSays)) {
    summary = "the token's claims satisfy the release policy, but the vault could not verify the MAA token itself (signature, expiry, or the authority's signing keys)";
  } else if (/rbac|authoriz|permission|not allowed/i.test(vaultSays)) {
    summary = 'the release policy grants this token, so the refusal is about the identity: check its release permission/role';
  } else {
    summary = "the token's claims satisfy the release policy: check that the vault can verify the MAA token (authority reachable, token not expired) and that the identity holds the release permission/role";
  }
  return { ...base, summary };
}
