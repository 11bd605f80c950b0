/**
 * Secure-key-release policy model and evaluator (PROTOCOLS §6). The vault emulator uses it to decide a
 * release; `skr policy explain` uses it to tell a user why a real vault said no.
 *
 * Grammar (Azure Key Vault "secure key release policy grammar", modeled on Azure Policy):
 *   policy    = { "version": "1.0.0" | "0.2", "anyOf": [authority, ...] }
 *   authority = { "authority": "<issuer URL>", "allOf" | "anyOf": [condition, ...] }
 *   condition = { "claim": "<name>", <operator>: <value> } | { "allOf": [...] } | { "anyOf": [...] }
 *
 * Where the published grammar is silent we chose, and document, the following:
 * - Keys are matched case-insensitively (the EBNF itself writes `anyof`/`allof`, real policies write
 *   `anyOf`/`allOf`) and normalised to camelCase; unknown keys are refused rather than ignored.
 * - String comparisons are exact (case-sensitive). Azure Policy's `equals` ignores case; Key Vault does
 *   not document it, so we fail closed and `explainPolicy` points out case-only differences.
 * - A string policy value matches a boolean/number claim by the claim's canonical string form, and a
 *   number/boolean policy value matches a string claim the same way (the reference writes `"0"`, `"false"`).
 * - Ordering operators compare numbers and numeric strings only; a policy value that is not numeric is
 *   refused at parse time, a non-numeric claim simply fails.
 * - Claims that are objects, arrays or null are incomparable: only `exists` can pass on them.
 * - Claim names: the literal top-level key wins; otherwise dots descend into nested objects (arrays are
 *   not indexed), so `x-ms-isolation-tee.x-ms-compliance-status` works for confidential-VM tokens.
 * - `exists` takes a boolean or the strings "true"/"false".
 * - Authorities must be https URLs and match the token's `iss` ignoring trailing slashes and the case of
 *   scheme and host.
 */
import { InvalidInputError } from '../common/errors';
import { b64url, decodeBase64Strict } from '../common/bytes';

export type ReleasePolicyVersion = '1.0.0' | '0.2';
export const RELEASE_POLICY_VERSIONS: readonly ReleasePolicyVersion[] = ['1.0.0', '0.2'];
export const RELEASE_POLICY_CONTENT_TYPE = 'application/json; charset=utf-8';

export type ClaimOperator = 'equals' | 'notEquals' | 'less' | 'lessOrEquals' | 'greater' | 'greaterOrEquals' | 'exists';
export const CLAIM_OPERATORS: readonly ClaimOperator[] = [
  'equals', 'notEquals', 'less', 'lessOrEquals', 'greater', 'greaterOrEquals', 'exists',
];
export type PolicyValue = string | number | boolean;
export type GroupKind = 'allOf' | 'anyOf';

/** `{ claim, <one operator>: value }`, JSON-shaped so it serialises back unchanged. */
export type ClaimCondition = { claim: string } & { [K in ClaimOperator]?: PolicyValue };
export type AllOfCondition = { allOf: PolicyCondition[] };
export type AnyOfCondition = { anyOf: PolicyCondition[] };
export type PolicyCondition = ClaimCondition | AllOfCondition | AnyOfCondition;
export type AuthorityRule = { authority: string; allOf?: PolicyCondition[]; anyOf?: PolicyCondition[] };
export interface ReleasePolicy {
  version: ReleasePolicyVersion;
  anyOf: AuthorityRule[];
}

export interface ConditionResult {
  /** Position of the condition in the policy, e.g. `anyOf[0].allOf[2]`. */
  path: string;
  claim: string;
  operator: string;
  expected: unknown;
  /** The token's value (undefined when absent). */
  actual: unknown;
  present: boolean;
  pass: boolean;
  /** Combinator of the group the condition sits in. */
  group?: GroupKind;
}

/** The evaluation tree of one authority's conditions (leaves are ConditionResults). */
export type ConditionNode =
  | ({ kind: 'claim' } & ConditionResult)
  | { kind: GroupKind; path: string; pass: boolean; children: ConditionNode[] };

export interface AuthorityEvaluation {
  authority: string;
  issuerMatches: boolean;
  granted: boolean;
  conditions: ConditionResult[];
  /** Same results as `conditions`, with the group structure kept. */
  tree: Extract<ConditionNode, { kind: GroupKind }>;
}

export interface PolicyEvaluation {
  granted: boolean;
  tokenIssuer?: string;
  authorities: AuthorityEvaluation[];
}

const MAX_DEPTH = 16;
const MAX_CONDITIONS = 1024;
const MAX_CLAIM_NAME = 512;

function policyError(path: string, message: string): InvalidInputError {
  return new InvalidInputError('ERR_RELEASE_POLICY', `release policy ${path || '(root)'}: ${message}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

/** Map an object's keys to their canonical spelling (case-insensitive), refusing unknown and duplicate keys. */
function canonicalKeys(obj: Record<string, unknown>, allowed: readonly string[], path: string): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [k, v] of Object.entries(obj)) {
    const canon = allowed.find((a) => a.toLowerCase() === k.toLowerCase());
    const at = path ? `${path}.${k}` : k;
    if (canon === undefined) throw policyError(at, `unknown key "${k}" (expected one of ${allowed.join(', ')})`);
    if (out.has(canon)) throw policyError(at, `duplicate key "${canon}" (keys are case-insensitive)`);
    out.set(canon, v);
  }
  return out;
}

const NUMERIC = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** A number, or a string that is a plain decimal number; undefined otherwise. */
export function numericValue(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'string' && NUMERIC.test(v.trim())) {
    const n = Number(v.trim());
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

function existsFlag(v: PolicyValue): boolean | undefined {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && /^(true|false)$/i.test(v)) return v.toLowerCase() === 'true';
  return undefined;
}

interface ParseState {
  count: number;
}

function parseConditions(v: unknown, path: string, depth: number, st: ParseState): PolicyCondition[] {
  if (!Array.isArray(v)) throw policyError(path, `must be an array of conditions, got ${describe(v)}`);
  if (v.length === 0) throw policyError(path, 'must hold at least one condition');
  if (depth > MAX_DEPTH) throw policyError(path, `nested deeper than ${MAX_DEPTH} levels`);
  return v.map((c, i) => parseCondition(c, `${path}[${i}]`, depth, st));
}

function parseCondition(v: unknown, path: string, depth: number, st: ParseState): PolicyCondition {
  if (!isPlainObject(v)) throw policyError(path, `a condition must be an object, got ${describe(v)}`);
  if (++st.count > MAX_CONDITIONS) throw policyError(path, `more than ${MAX_CONDITIONS} conditions`);
  const keys = canonicalKeys(v, ['claim', 'allOf', 'anyOf', ...CLAIM_OPERATORS], path);
  const groups = (['allOf', 'anyOf'] as const).filter((g) => keys.has(g));
  if (groups.length > 0) {
    if (keys.size !== 1) {
      throw policyError(path, `a group condition holds exactly one of allOf/anyOf and nothing else, got ${[...keys.keys()].join(', ')}`);
    }
    const g = groups[0];
    const conditions = parseConditions(keys.get(g), `${path}.${g}`, depth + 1, st);
    return g === 'allOf' ? { allOf: conditions } : { anyOf: conditions };
  }
  if (!keys.has('claim')) throw policyError(path, 'a condition needs "claim" with one operator, or "allOf"/"anyOf"');
  const claim = keys.get('claim');
  if (typeof claim !== 'string' || claim.length === 0) throw policyError(`${path}.claim`, `must be a non-empty string, got ${describe(claim)}`);
  if (claim.length > MAX_CLAIM_NAME) throw policyError(`${path}.claim`, `longer than ${MAX_CLAIM_NAME} characters`);
  if (claim.split('.').some((s) => s.length === 0)) throw policyError(`${path}.claim`, `"${claim}" has an empty dotted segment`);
  const ops = CLAIM_OPERATORS.filter((o) => keys.has(o));
  if (ops.length !== 1) {
    throw policyError(path, ops.length === 0
      ? `claim "${claim}" has no operator (one of ${CLAIM_OPERATORS.join(', ')})`
      : `claim "${claim}" has ${ops.length} operators (${ops.join(', ')}); exactly one is allowed`);
  }
  const op = ops[0];
  const value = keys.get(op);
  const at = `${path}.${op}`;
  if (typeof value !== 'string' && typeof value !== 'boolean' && !(typeof value === 'number' && Number.isFinite(value))) {
    throw policyError(at, `value must be a string, number or boolean, got ${describe(value)}`);
  }
  if (op === 'exists' && existsFlag(value) === undefined) throw policyError(at, `must be true or false, got ${describe(value)}`);
  if (ORDERING.has(op) && numericValue(value) === undefined) {
    throw policyError(at, `ordering operators need a number or numeric string, got ${describe(value)}`);
  }
  return { claim, [op]: value } as ClaimCondition;
}

function parseAuthority(v: unknown, path: string, st: ParseState): AuthorityRule {
  if (!isPlainObject(v)) throw policyError(path, `an authority entry must be an object, got ${describe(v)}`);
  const keys = canonicalKeys(v, ['authority', 'allOf', 'anyOf'], path);
  const authority = keys.get('authority');
  if (typeof authority !== 'string' || authority.length === 0) {
    throw policyError(`${path}.authority`, `must be a non-empty https URL, got ${describe(authority)}`);
  }
  if (normalizeAuthority(authority) === undefined) {
    throw policyError(`${path}.authority`, `"${authority}" is not an https URL (e.g. https://sharedeus2.eus2.attest.azure.net)`);
  }
  const groups = (['allOf', 'anyOf'] as const).filter((g) => keys.has(g));
  if (groups.length !== 1) {
    throw policyError(path, groups.length === 0 ? 'an authority needs "allOf" or "anyOf"' : 'an authority takes "allOf" or "anyOf", not both');
  }
  const g = groups[0];
  return { authority, [g]: parseConditions(keys.get(g), `${path}.${g}`, 1, st) };
}

/**
 * Parse and validate a release policy (JSON text, UTF-8 bytes, or an already-parsed value). Returns a
 * normalised copy; throws InvalidInputError('ERR_RELEASE_POLICY') naming the offending JSON path.
 */
export function parseReleasePolicy(input: string | Uint8Array | unknown): ReleasePolicy {
  let v: unknown = input;
  if (input instanceof Uint8Array) v = Buffer.from(input).toString('utf8');
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch (e) {
      throw new InvalidInputError('ERR_RELEASE_POLICY', `release policy is not valid JSON: ${(e as Error).message}`, e);
    }
  }
  if (!isPlainObject(v)) throw policyError('', `must be a JSON object, got ${describe(v)}`);
  const keys = canonicalKeys(v, ['version', 'anyOf', 'allOf'], '');
  const version = keys.get('version');
  if (typeof version !== 'string' || !(RELEASE_POLICY_VERSIONS as readonly string[]).includes(version)) {
    throw policyError('version', `must be one of ${RELEASE_POLICY_VERSIONS.map((x) => `"${x}"`).join(', ')}, got ${describe(version)}`);
  }
  if (keys.has('allOf')) throw policyError('allOf', 'the top level is an anyOf of authorities; allOf belongs inside an authority');
  const anyOf = keys.get('anyOf');
  if (!Array.isArray(anyOf)) throw policyError('anyOf', `must be an array of authorities, got ${describe(anyOf)}`);
  if (anyOf.length === 0) throw policyError('anyOf', 'must hold at least one authority');
  const st: ParseState = { count: 0 };
  return { version: version as ReleasePolicyVersion, anyOf: anyOf.map((a, i) => parseAuthority(a, `anyOf[${i}]`, st)) };
}

/**
 * Canonical form of an authority / issuer for comparison: `https://host[:port][/path]` with scheme and
 * host lowercased (URL does that) and trailing slashes dropped. undefined when not an https URL.
 */
export function normalizeAuthority(s: string): string | undefined {
  let u: URL;
  try {
    u = new URL(s.trim());
  } catch {
    return undefined;
  }
  if (u.protocol !== 'https:' || u.username || u.password || u.search || u.hash) return undefined;
  return `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
}

/** True when the token issuer is the policy authority (trailing slash and scheme/host case ignored). */
export function authorityMatches(authority: string, issuer: string | undefined): boolean {
  if (issuer === undefined) return false;
  const a = normalizeAuthority(authority);
  return a !== undefined && a === normalizeAuthority(issuer);
}

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

/**
 * Find a claim: the literal key first, then dotted descent into nested objects. Longer literal
 * prefixes are tried first, so keys that contain dots still resolve.
 */
export function lookupClaim(claims: unknown, name: string): { present: boolean; value?: unknown } {
  const segs = name.split('.');
  const walk = (node: unknown, from: number): { present: boolean; value?: unknown } => {
    if (!isPlainObject(node)) return { present: false };
    for (let end = segs.length; end > from; end--) {
      const key = segs.slice(from, end).join('.');
      if (!hasOwn(node, key)) continue;
      const value = node[key];
      if (end === segs.length) return { present: true, value };
      const r = walk(value, end);
      if (r.present) return r;
    }
    return { present: false };
  };
  return walk(claims, 0);
}

const ORDERING = new Set<ClaimOperator>(['less', 'lessOrEquals', 'greater', 'greaterOrEquals']);

function isScalar(v: unknown): v is string | number | boolean {
  return typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));
}

/** Canonical string of a scalar claim or policy value: "false", "0", "1.5". */
export function canonicalString(v: string | number | boolean): string {
  return typeof v === 'string' ? v : String(v);
}

/** Equality with the reference's string-form rule; undefined when the claim cannot be compared. */
export function claimEquals(expected: PolicyValue, actual: unknown): boolean | undefined {
  if (!isScalar(actual)) return undefined;
  if (typeof expected === typeof actual) return expected === actual;
  // Mixed types compare as strings only when one side is a string (boolean vs number never matches).
  if (typeof expected !== 'string' && typeof actual !== 'string') return false;
  return canonicalString(expected) === canonicalString(actual);
}

function compareNumbers(a: unknown, b: unknown): number | undefined {
  // Integers beyond 2^53 (e.g. TCB values written as strings) compare exactly as BigInt.
  const asInt = (v: unknown): bigint | undefined => {
    if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
    if (typeof v === 'string' && /^[+-]?\d+$/.test(v.trim())) return BigInt(v.trim());
    return undefined;
  };
  const ai = asInt(a);
  const bi = asInt(b);
  if (ai !== undefined && bi !== undefined) return ai < bi ? -1 : ai > bi ? 1 : 0;
  const an = numericValue(a);
  const bn = numericValue(b);
  if (an === undefined || bn === undefined) return undefined;
  return an < bn ? -1 : an > bn ? 1 : 0;
}

/** Apply one operator. `present` false means the claim is absent from the token. */
export function applyOperator(op: ClaimOperator, expected: PolicyValue, present: boolean, actual: unknown): boolean {
  if (op === 'exists') return existsFlag(expected) === present;
  if (!present) return false;
  switch (op) {
    case 'equals':
      return claimEquals(expected, actual) === true;
    case 'notEquals':
      return claimEquals(expected, actual) === false;
    default: {
      const c = compareNumbers(actual, expected);
      if (c === undefined) return false;
      if (op === 'less') return c < 0;
      if (op === 'lessOrEquals') return c <= 0;
      if (op === 'greater') return c > 0;
      return c >= 0;
    }
  }
}

function operatorOf(c: ClaimCondition): ClaimOperator {
  const op = CLAIM_OPERATORS.find((o) => hasOwn(c, o));
  // parseReleasePolicy guarantees one; a hand-built condition without one is a programming error.
  if (op === undefined) throw policyError('', `claim "${c.claim}" has no operator`);
  return op;
}

function evaluateCondition(c: PolicyCondition, path: string, claims: unknown, group: GroupKind): ConditionNode {
  if ('allOf' in c || 'anyOf' in c) {
    const kind: GroupKind = 'allOf' in c ? 'allOf' : 'anyOf';
    return evaluateGroup(kind, kind === 'allOf' ? (c as AllOfCondition).allOf : (c as AnyOfCondition).anyOf, `${path}.${kind}`, claims, path);
  }
  const op = operatorOf(c);
  const expected = c[op] as PolicyValue;
  const { present, value } = lookupClaim(claims, c.claim);
  return {
    kind: 'claim', path, claim: c.claim, operator: op, expected, actual: value, present,
    pass: applyOperator(op, expected, present, value), group,
  };
}

function evaluateGroup(kind: GroupKind, items: PolicyCondition[], itemsPath: string, claims: unknown, nodePath: string) {
  // No short-circuit: the explanation shows every condition.
  const children = items.map((c, i) => evaluateCondition(c, `${itemsPath}[${i}]`, claims, kind));
  const pass = kind === 'allOf' ? children.every((n) => n.pass) : children.some((n) => n.pass);
  return { kind, path: nodePath, pass, children };
}

function flatten(n: ConditionNode, out: ConditionResult[]): ConditionResult[] {
  if (n.kind === 'claim') {
    const leaf: ConditionResult = {
      path: n.path, claim: n.claim, operator: n.operator, expected: n.expected, actual: n.actual, present: n.present, pass: n.pass,
    };
    if (n.group !== undefined) leaf.group = n.group;
    out.push(leaf);
  } else {
    for (const c of n.children) flatten(c, out);
  }
  return out;
}

/**
 * Evaluate a parsed policy against verified token claims. Granted when some authority equals the
 * token's `iss` and its conditions hold. Never throws for any claims value.
 */
export function evaluateReleasePolicy(policy: ReleasePolicy, claims: Record<string, unknown>): PolicyEvaluation {
  const iss = isPlainObject(claims) && typeof claims.iss === 'string' ? claims.iss : undefined;
  const authorities = policy.anyOf.map((a, i): AuthorityEvaluation => {
    const kind: GroupKind = a.allOf !== undefined ? 'allOf' : 'anyOf';
    const tree = evaluateGroup(kind, a[kind] ?? [], `anyOf[${i}].${kind}`, claims, `anyOf[${i}]`);
    const issuerMatches = authorityMatches(a.authority, iss);
    return { authority: a.authority, issuerMatches, granted: issuerMatches && tree.pass, conditions: flatten(tree, []), tree };
  });
  const ev: PolicyEvaluation = { granted: authorities.some((a) => a.granted), authorities };
  if (iss !== undefined) ev.tokenIssuer = iss;
  return ev;
}

/** Leaf conditions that failed, in the authorities that could have granted (or all when none matches). */
export function failedConditions(ev: PolicyEvaluation): ConditionResult[] {
  const relevant = ev.authorities.some((a) => a.issuerMatches) ? ev.authorities.filter((a) => a.issuerMatches) : ev.authorities;
  return relevant.flatMap((a) => a.conditions.filter((c) => !c.pass));
}

/**
 * The reference importkey tool's shape: one top-level anyOf entry per group, each an allOf of equals
 * conditions under the same authority. `authority` may be a bare MAA host or an https URL.
 */
export function buildReleasePolicy(opts: { authority: string; anyOfGroups: { claim: string; equals: string }[][] }): ReleasePolicy {
  const authority = /^[a-z][a-z0-9+.-]*:\/\//i.test(opts.authority) ? opts.authority : `https://${opts.authority}`;
  return parseReleasePolicy({
    version: '1.0.0',
    anyOf: opts.anyOfGroups.map((g) => ({ authority, allOf: g.map((c) => ({ claim: c.claim, equals: c.equals })) })),
  });
}

/** The `release_policy` object of a key import: base64url of the policy JSON. */
export function encodeReleasePolicy(policy: ReleasePolicy): { contentType: typeof RELEASE_POLICY_CONTENT_TYPE; data: string } {
  return { contentType: RELEASE_POLICY_CONTENT_TYPE, data: b64url(JSON.stringify(parseReleasePolicy(policy))) };
}

/** Decode and validate a `release_policy` object (`data` base64url JSON; contentType, if any, must be JSON). */
export function decodeReleasePolicy(rp: { data: string; contentType?: string }): ReleasePolicy {
  if (!isPlainObject(rp) || typeof rp.data !== 'string') {
    throw new InvalidInputError('ERR_RELEASE_POLICY', 'release_policy.data must be a base64url string');
  }
  if (rp.contentType !== undefined && !/^application\/json\b/i.test(String(rp.contentType).trim())) {
    throw new InvalidInputError('ERR_RELEASE_POLICY', `release_policy.contentType "${String(rp.contentType)}" is not application/json`);
  }
  const bytes = decodeBase64Strict(rp.data);
  if (bytes === undefined) throw new InvalidInputError('ERR_RELEASE_POLICY', 'release_policy.data is not base64url');
  return parseReleasePolicy(bytes);
}
