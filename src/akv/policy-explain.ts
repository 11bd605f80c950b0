/**
 * Human explanation of a release-policy decision: a PASS/FAIL line per condition with the token's value,
 * plus hints for the mistakes that usually cause a denied release.
 */
import {
  applyOperator, evaluateReleasePolicy, lookupClaim,
  type ClaimOperator, type ConditionNode, type ConditionResult, type PolicyValue, type ReleasePolicy,
} from './policy';

export interface PolicyExplanation {
  granted: boolean;
  lines: string[];
  hints: string[];
}

const TEE_PREFIX = 'x-ms-isolation-tee.';
const HOSTDATA = 'x-ms-sevsnpvm-hostdata';

function show(v: unknown): string {
  if (v === undefined) return '<missing>';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

function leafLine(c: ConditionResult, indent: string): string {
  return `${indent}${c.pass ? 'PASS' : 'FAIL'}  ${c.path}  ${c.claim} ${c.operator} ${show(c.expected)}  (token: ${show(c.actual)})`;
}

function treeLines(n: ConditionNode, indent: string, out: string[]): void {
  if (n.kind === 'claim') {
    out.push(leafLine(n, indent));
    return;
  }
  out.push(`${indent}${n.pass ? 'PASS' : 'FAIL'}  ${n.path}  ${n.kind} of ${n.children.length}`);
  for (const c of n.children) treeLines(c, `${indent}  `, out);
}

function hostParts(s: string): { scheme: string; host: string; port: string; path: string } | undefined {
  try {
    const u = new URL(s.trim());
    return { scheme: u.protocol, host: u.hostname, port: u.port, path: u.pathname.replace(/\/+$/, '') };
  } catch {
    return undefined;
  }
}

/** Failed leaves that actually decide a failed group (a failed leaf under a passing anyOf does not). */
function blockingLeaves(n: ConditionNode): ConditionResult[] {
  if (n.pass) return [];
  if (n.kind === 'claim') return [n];
  return n.children.flatMap(blockingLeaves);
}

/** Why an authority differs from the token issuer, in the user's terms. */
function authorityHint(authority: string, issuer: string): string | undefined {
  const a = hostParts(authority);
  const i = hostParts(issuer);
  if (a === undefined || i === undefined) return `authority "${authority}" does not match the token issuer "${issuer}"`;
  if (a.scheme !== i.scheme) return `authority "${authority}" uses ${a.scheme} but the token issuer "${issuer}" uses ${i.scheme}`;
  if (a.host === i.host && a.port !== i.port) {
    return `authority "${authority}" differs from the token issuer "${issuer}" only in the port`;
  }
  if (a.host === i.host && a.path !== i.path) {
    return `authority "${authority}" differs from the token issuer "${issuer}" only in the path; MAA issuers are bare origins`;
  }
  if (a.host !== i.host) {
    const al = a.host.split('.');
    const il = i.host.split('.');
    // Same service domain (e.g. attest.azure.net), different instance/region labels.
    const sameSuffix = al.length === il.length && al.length > 2 && al.slice(-3).join('.') === il.slice(-3).join('.');
    if (sameSuffix) {
      return `the token was issued by ${i.host} but the policy trusts ${a.host}: the issuer differs only in host/region. ` +
        'Point the sidecar at the MAA endpoint the policy names (maa_endpoint), or add that authority to the policy';
    }
    return `the token issuer "${issuer}" is not the policy authority "${authority}"`;
  }
  return undefined;
}

/**
 * Which kind of MAA token this is, from its top-level `x-ms-attestation-type`: an Azure confidential VM token
 * (`azurevm`, SEV-SNP or TDX claims nested under x-ms-isolation-tee) or a container/SEV-SNP VM token (`sevsnpvm`,
 * SEV-SNP claims at the top level).
 */
function tokenPlatform(claims: Record<string, unknown>): 'cvm' | 'container' | undefined {
  const t = claims['x-ms-attestation-type'];
  return t === 'azurevm' ? 'cvm' : t === 'sevsnpvm' ? 'container' : undefined;
}

/** The CVM token's TEE, from the nested `x-ms-isolation-tee.x-ms-attestation-type` (Azure CVMs: SEV-SNP or TDX). */
function cvmTee(claims: Record<string, unknown>): 'sevsnpvm' | 'tdxvm' | undefined {
  const t = lookupClaim(claims, `${TEE_PREFIX}x-ms-attestation-type`);
  return t.present && (t.value === 'sevsnpvm' || t.value === 'tdxvm') ? t.value : undefined;
}

const TEE_NAME = { sevsnpvm: 'SEV-SNP', tdxvm: 'TDX' } as const;
/** What each TEE's claims look like in a CVM token (MAA's TDX EAT profile; CVM-PROTOCOL §6 for SEV-SNP). */
const TEE_EXAMPLES = { sevsnpvm: 'x-ms-sevsnpvm-* (e.g. x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable)', tdxvm: 'tdx_* (e.g. x-ms-isolation-tee.tdx_mrtd, tdx_mrseam, tdx_td_attributes_debug)' } as const;

/**
 * A condition for the other CPU vendor: the policy admits only SEV-SNP (or only TDX) CVMs, or names a claim
 * that only the other vendor's tokens carry.
 */
function vendorHint(c: ConditionResult, claims: Record<string, unknown>): string | undefined {
  const tee = cvmTee(claims);
  if (!tee) return undefined;
  const other = tee === 'tdxvm' ? 'sevsnpvm' : 'tdxvm';
  if (c.claim === `${TEE_PREFIX}x-ms-attestation-type` && c.operator === 'equals' && c.expected === other) {
    return `this token is from a ${TEE_NAME[tee]} confidential VM ("${tee}") and this condition admits only ` +
      `"${other}" (${TEE_NAME[other]}): add a group for "${tee}" (\`skr import-key --policy-template azure-cvm\` admits both, as Azure's default CVM policy does)`;
  }
  const bare = c.claim.startsWith(TEE_PREFIX) ? c.claim.slice(TEE_PREFIX.length) : c.claim;
  const isOtherClaim = other === 'sevsnpvm' ? bare.startsWith('x-ms-sevsnpvm-') : bare.startsWith('tdx_');
  if (!c.present && isOtherClaim) {
    return `claim "${c.claim}" is a ${TEE_NAME[other]} claim, but this token is from a ${TEE_NAME[tee]} confidential VM ("${tee}"), ` +
      `whose TEE claims are ${TEE_EXAMPLES[tee]}`;
  }
  return undefined;
}

/**
 * A failed condition whose claim the token carries under the other name (with or without the
 * x-ms-isolation-tee. prefix). Suggests the other name only when it would satisfy the condition, and in the
 * token's own terms: a CVM token is never told to drop the prefix as if it were a container token.
 */
function nestingHint(c: ConditionResult, claims: Record<string, unknown>): string | undefined {
  const nested = c.claim.startsWith(TEE_PREFIX);
  const other = nested ? c.claim.slice(TEE_PREFIX.length) : `${TEE_PREFIX}${c.claim}`;
  const r = lookupClaim(claims, other);
  if (!r.present) return undefined;
  const platform = tokenPlatform(claims);
  // operator and expected come from the evaluated policy, so they are a valid pair.
  if (!applyOperator(c.operator as ClaimOperator, c.expected as PolicyValue, true, r.value)) {
    // Both names fail: say so plainly rather than steer towards a name that would not help either.
    if (c.present) return undefined;
    return `claim "${c.claim}" is absent; the token has "${other}" (${show(r.value)}), but that would not satisfy ` +
      `${c.operator} ${show(c.expected)} either`;
  }
  // A nested claim the token has, with another value, is the policy's choice of value, not of name.
  if (c.present && (nested || platform !== 'cvm')) return undefined;
  if (nested) {
    if (platform === 'cvm') {
      return `claim "${c.claim}" is absent from this Azure confidential VM token's x-ms-isolation-tee; "${other}" is one of ` +
        `the VM's top-level claims (${show(r.value)}): use "${other}"`;
    }
    if (platform === 'container') {
      return `claim "${c.claim}" is absent but "${other}" is at the top level of the token (${show(r.value)}): ` +
        'container (ACI) tokens carry the SEV-SNP claims at the top level; drop the "x-ms-isolation-tee." prefix';
    }
    return `claim "${c.claim}" is absent but "${other}" is at the top level of the token (${show(r.value)}): use "${other}"`;
  }
  if (c.present) {
    // Only CVM tokens reach here: the top-level claim exists with the VM's value, the TEE's one is nested.
    return `in this Azure confidential VM token the top-level "${c.claim}" is ${show(c.actual)} (the VM); the ${TEE_NAME[cvmTee(claims) ?? 'sevsnpvm']} ` +
      `claim is "${other}" (${show(r.value)}): use "${other}"`;
  }
  return `claim "${c.claim}" is absent but "${other}" exists (${show(r.value)}): confidential-VM tokens nest the ` +
    `TEE's claims (SEV-SNP or TDX) under x-ms-isolation-tee; use "${other}"`;
}

function valueHints(c: ConditionResult, claims: Record<string, unknown>): string[] {
  const hints: string[] = [];
  const nestHint = nestingHint(c, claims);
  if (nestHint) hints.push(nestHint);
  const vendor = nestHint ? undefined : vendorHint(c, claims);
  if (vendor) hints.push(vendor);
  if (!c.present && !nestHint && !vendor && c.operator !== 'exists') {
    const root = c.claim.split('.')[0].toLowerCase();
    const similar = Object.keys(claims).find((k) => k.toLowerCase() === root && k !== c.claim.split('.')[0]);
    if (similar !== undefined) hints.push(`claim "${c.claim}" is absent; claim names are case-sensitive and the token has "${similar}"`);
  }
  if (!c.present) return hints;
  const expected = typeof c.expected === 'string' ? c.expected : undefined;
  const actual = c.actual;
  if (c.claim.endsWith(HOSTDATA) && c.operator === 'equals') {
    hints.push(`hostdata mismatch: the token carries ${show(actual)} (sha256 of the deployed ccePolicy) but the policy expects ` +
      `${show(c.expected)}; the policy was probably built from an outdated ccePolicy. Re-run \`skr policy digest\` on the ` +
      'deployed ccePolicy and update the key\'s release policy');
  } else if (c.operator === 'equals' && expected !== undefined && typeof actual === 'string' &&
      expected.toLowerCase() === actual.toLowerCase()) {
    hints.push(`${c.claim}: ${show(c.expected)} and the token's ${show(actual)} differ only in letter case; comparisons are case-sensitive`);
  } else if (c.operator === 'equals' && expected !== undefined && typeof actual === 'boolean' &&
      expected.toLowerCase() === String(actual)) {
    hints.push(`${c.claim}: booleans compare as "true"/"false" in lower case; write ${show(String(actual))}`);
  }
  if (c.claim.endsWith('x-ms-compliance-status') && typeof actual === 'string') {
    if (c.expected === 'azure-compliant-cvm' && actual === 'azure-compliant-uvm') {
      hints.push('"azure-compliant-cvm" is the confidential-VM status; container groups attest as "azure-compliant-uvm"');
    } else if (c.expected === 'azure-compliant-uvm' && actual === 'azure-compliant-cvm') {
      hints.push('"azure-compliant-uvm" is the container-group status; confidential VMs attest as "azure-compliant-cvm"');
    }
  }
  if (['less', 'lessOrEquals', 'greater', 'greaterOrEquals'].includes(c.operator) &&
      typeof actual !== 'number' && !(typeof actual === 'string' && /^[+-]?\d/.test(actual.trim()))) {
    hints.push(`${c.claim}: ${c.operator} compares numbers, but the token holds ${show(actual)}`);
  }
  return hints;
}

/** Why no authority could match the token's issuer (nothing when one matches). */
function issuerHints(ev: ReturnType<typeof evaluateReleasePolicy>): string[] {
  if (ev.tokenIssuer === undefined) return ['the token has no "iss" claim, so no authority can match'];
  if (ev.authorities.some((a) => a.issuerMatches)) return [];
  const issuer = ev.tokenIssuer;
  return ev.authorities.map((a) => authorityHint(a.authority, issuer)).filter((h): h is string => h !== undefined);
}

/**
 * Evaluate and explain. `lines` is a table of every authority and condition; `hints` name likely
 * causes for a denial (empty when granted).
 */
export function explainPolicy(policy: ReleasePolicy, claims: Record<string, unknown>): PolicyExplanation {
  const ev = evaluateReleasePolicy(policy, claims);
  const safeClaims = typeof claims === 'object' && claims !== null && !Array.isArray(claims) ? claims : {};
  const lines: string[] = [`token issuer: ${ev.tokenIssuer ?? '<missing iss claim>'}`];
  for (const [i, a] of ev.authorities.entries()) {
    lines.push(`authority anyOf[${i}] ${a.authority}: ${a.issuerMatches ? 'issuer matches' : 'issuer differs'}` +
      `, conditions ${a.tree.pass ? 'PASS' : 'FAIL'} => ${a.granted ? 'GRANTED' : 'not granted'}`);
    for (const c of a.tree.children) treeLines(c, '  ', lines);
  }
  const winner = ev.authorities.findIndex((a) => a.granted);
  lines.push(ev.granted ? `result: GRANTED by anyOf[${winner}]` : 'result: DENIED');

  const hints: string[] = [];
  if (!ev.granted) {
    const matching = ev.authorities.filter((a) => a.issuerMatches);
    hints.push(...issuerHints(ev));
    const relevant = matching.length > 0 ? matching : ev.authorities;
    for (const a of relevant) for (const c of blockingLeaves(a.tree)) hints.push(...valueHints(c, safeClaims));
  }
  return { granted: ev.granted, lines, hints: [...new Set(hints)] };
}

/** Caps of a PolicyVerdict: it goes into a 403 body, so its size must not follow the policy's or the token's. */
export const VERDICT_LIMITS = { failing: 10, hints: 6, valueChars: 200, hintChars: 400 } as const;

/** One failing condition of the closest branch: what the policy wants and what the token has. */
export interface FailingClaim {
  /** Position in the policy, e.g. `anyOf[0].allOf[1]`. */
  path: string;
  claim: string;
  operator: string;
  /** The policy's value. */
  wants: PolicyValue;
  /** Whether the token has the claim at all. */
  present: boolean;
  /** The token's value when present: numbers and booleans as they are, strings clipped, objects and arrays by kind only. */
  has?: string | number | boolean;
}

/** The top-level `anyOf` entry (authority) closest to granting, and why it did not. */
export interface ClosestBranch {
  /** Index in the policy's top-level `anyOf`. */
  index: number;
  authority: string;
  /** Whether the authority is the token's issuer. */
  issuerMatches: boolean;
  /** Conditions that decide this branch's failure (empty when its conditions hold). */
  failing: FailingClaim[];
  /** Failing conditions left out beyond VERDICT_LIMITS.failing. */
  omitted: number;
}

/** A release policy evaluated against a token's claims, in a bounded JSON shape (the 403 `explanation`). */
export interface PolicyVerdict {
  /** Whether the claims satisfy the policy. */
  granted: boolean;
  tokenIssuer: string | null;
  closestBranch: ClosestBranch | null;
  /** Likely causes, in the user's terms (top-level vs `x-ms-isolation-tee.` names, letter case, issuer). */
  hints: string[];
}

function tokenValue(v: unknown): string | number | boolean {
  if (typeof v === 'number' || typeof v === 'boolean') return v;
  if (typeof v === 'string') return clipText(v, VERDICT_LIMITS.valueChars);
  return v === null ? '<null>' : Array.isArray(v) ? '<array>' : '<object>';
}

function clipText(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/**
 * The closest branch: among the authorities that match the token's issuer (all of them when none does),
 * the one with the fewest deciding failures; the first on a tie (a granting one when granted).
 */
export function explainVerdict(policy: ReleasePolicy, claims: Record<string, unknown>): PolicyVerdict {
  const ev = evaluateReleasePolicy(policy, claims);
  const safeClaims = typeof claims === 'object' && claims !== null && !Array.isArray(claims) ? claims : {};
  const indexed = ev.authorities.map((a, index) => ({ a, index, blocking: blockingLeaves(a.tree) }));
  const matching = indexed.filter((x) => x.a.issuerMatches);
  const candidates = matching.length > 0 ? matching : indexed;
  const best = candidates.reduce<(typeof indexed)[number] | undefined>((b, x) => {
    if (b === undefined) return x;
    if (x.a.granted !== b.a.granted) return x.a.granted ? x : b;
    return x.blocking.length < b.blocking.length ? x : b;
  }, undefined);

  const hints: string[] = [];
  if (!ev.granted) {
    hints.push(...issuerHints(ev));
    if (best) for (const c of best.blocking) hints.push(...valueHints(c, safeClaims));
  }
  const failing = (best?.blocking ?? []).slice(0, VERDICT_LIMITS.failing).map((c): FailingClaim => ({
    path: c.path,
    claim: clipText(c.claim, VERDICT_LIMITS.valueChars),
    operator: c.operator,
    wants: typeof c.expected === 'string' ? clipText(c.expected, VERDICT_LIMITS.valueChars) : (c.expected as PolicyValue),
    present: c.present,
    ...(c.present ? { has: tokenValue(c.actual) } : {}),
  }));
  return {
    granted: ev.granted,
    tokenIssuer: ev.tokenIssuer === undefined ? null : clipText(ev.tokenIssuer, VERDICT_LIMITS.valueChars),
    closestBranch: best
      ? {
        index: best.index,
        authority: clipText(best.a.authority, VERDICT_LIMITS.valueChars),
        issuerMatches: best.a.issuerMatches,
        failing,
        omitted: best.blocking.length - failing.length,
      }
      : null,
    hints: [...new Set(hints)].slice(0, VERDICT_LIMITS.hints).map((h) => clipText(h, VERDICT_LIMITS.hintChars)),
  };
}

/** One line for a message: the failing conditions of a verdict with the token's values. */
export function verdictSummary(v: PolicyVerdict): string {
  if (v.granted) return "the token's claims satisfy the release policy";
  const b = v.closestBranch;
  if (b === null) return 'the release policy has no authority';
  if (!b.issuerMatches) return `no authority in the release policy matches the token issuer ${v.tokenIssuer ?? '(none)'}`;
  const parts = b.failing.map((f) => `${f.claim} ${f.operator} ${JSON.stringify(f.wants)} (token has ${f.present ? JSON.stringify(f.has) : 'no such claim'})`);
  return `release policy conditions not met (anyOf[${b.index}]): ${parts.join('; ')}${b.omitted ? `; and ${b.omitted} more` : ''}`;
}
