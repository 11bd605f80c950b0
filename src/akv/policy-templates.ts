/**
 * Release-policy templates for `skr import-key --policy-template`: the claim groups of a platform's
 * documented policy, under the config's authority (the regional shared MAA, or the one given).
 *
 * azure-cvm: Azure confidential VMs attest through MAA's guest attestation, whose token nests the SNP
 * claims under `x-ms-isolation-tee` (CVM-PROTOCOL §6); a policy with the top-level names never matches.
 * As Azure's default CVM release policy, it admits both CPU vendors: `sevsnpvm` (AMD SEV-SNP) or `tdxvm`
 * (Intel TDX), each with the compliant-CVM status (one group per vendor: groups are alternatives).
 */
import { InvalidInputError } from '../common/errors';

export const POLICY_TEMPLATES = {
  'azure-cvm': [
    [
      { claim: 'x-ms-isolation-tee.x-ms-attestation-type', equals: 'sevsnpvm' },
      { claim: 'x-ms-isolation-tee.x-ms-compliance-status', equals: 'azure-compliant-cvm' },
    ],
    [
      { claim: 'x-ms-isolation-tee.x-ms-attestation-type', equals: 'tdxvm' },
      { claim: 'x-ms-isolation-tee.x-ms-compliance-status', equals: 'azure-compliant-cvm' },
    ],
  ],
} as const satisfies Record<string, readonly (readonly { claim: string; equals: string }[])[]>;

export type PolicyTemplateName = keyof typeof POLICY_TEMPLATES;

/**
 * The import config (parsed JSON) with the template's claims. A config that brings its own claims is
 * refused: which of the two was meant cannot be guessed.
 */
export function applyPolicyTemplate(config: unknown, name: string): unknown {
  if (!Object.prototype.hasOwnProperty.call(POLICY_TEMPLATES, name)) {
    throw new InvalidInputError('ERR_IMPORT_CONFIG', `policy template "${name.slice(0, 64)}" is not one of ${Object.keys(POLICY_TEMPLATES).join(', ')}`);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) return config;
  const c = config as Record<string, unknown>;
  if (c.claims !== undefined) {
    throw new InvalidInputError('ERR_IMPORT_CONFIG', `importkey config has "claims" and --policy-template ${name} was given: drop one of them`);
  }
  const groups = POLICY_TEMPLATES[name as PolicyTemplateName];
  return { ...c, claims: groups.map((g) => g.map((x) => ({ ...x }))) };
}
