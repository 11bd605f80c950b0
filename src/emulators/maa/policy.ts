/**
 * The attestation policy the emulator stands for. Real MAA evaluates a policy written in its claim-rule
 * language and reports its hash in `x-ms-policy-hash`; the emulator does not interpret policy text, it
 * hard-codes the default behaviour below and publishes the hash of this text so tokens carry a stable,
 * well-formed value (base64url SHA-256, as MAA writes it).
 */
import { createHash } from 'node:crypto';

export const DEFAULT_SEVSNPVM_POLICY = `version= 1.0;
authorizationrules
{
    => permit();
};
issuancerules
{
    [type=="x-ms-sevsnpvm-uvm-endorsement-verified", value==true] => issue(type="x-ms-compliance-status", value="azure-compliant-uvm");
};
`;

/** base64url(sha256(policy text)). */
export function policyHash(text: string = DEFAULT_SEVSNPVM_POLICY): string {
  return createHash('sha256').update(text, 'utf8').digest('base64url');
}
