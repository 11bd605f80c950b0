/**
 * Keeps the attestation routes from undoing the kid allowlist. MAA copies JSON runtime data into the
 * token's `x-ms-runtime`, and Key Vault / Managed HSM wrap a released key to a key in
 * `x-ms-runtime.keys`. A workload that gets a token over runtime data holding its own JWKS (from
 * `/attest/maa`, or by taking `/attest/raw` / `/attest/combined` evidence to MAA itself) can therefore
 * release ANY key the identity may release, straight from the vault, and unwrap it itself: the kid
 * allowlist never sees that release.
 *
 * So, with a kid allowlist and unless the operator opts in, runtime data is refused when its top-level
 * object has a `keys` member holding anything at all. Deliberately broader than "an RSA JWK with
 * key_ops encrypt": which entries a vault accepts (kty, key_ops, use, alg) is the vault's rule and may
 * change, so any entry counts. Parser differences are closed too: the name is compared ignoring case
 * (and anything from a NUL on), and every occurrence of a repeated member is checked, not only the
 * one JSON.parse keeps. `/attest/maa` sends only strict JSON (anything else is a 400 first); evidence
 * leaves with the caller, whose MAA parser may be laxer, so there runtime data that is not strict
 * JSON is refused when it mentions `keys` at all.
 */
import { ForbiddenError } from './allowlist';
import { badRequest } from './http-errors';

export type AttestMaaKeys = 'allow' | 'refuse';

export const ATTEST_MAA_KEYS_SETTING = 'SKR_ATTEST_MAA_KEYS=allow (or SkrSideCarArgs.attest_maa_keys: "allow")';

/** `allow` / `refuse` (any case), undefined when unset; anything else is an Error naming `where`. */
export function parseAttestMaaKeys(raw: string | undefined, where: string): AttestMaaKeys | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  const v = raw.trim().toLowerCase();
  if (v === 'allow' || v === 'refuse') return v;
  throw new Error(`${where} "${raw.slice(0, 50)}" is not allow or refuse`);
}

const WS = new Set([' ', '\t', '\n', '\r']);

function skipWs(t: string, i: number): number {
  while (WS.has(t[i])) i++;
  return i;
}

/** Index just past the string literal starting at `i` (t[i] is the opening quote). */
function endOfString(t: string, i: number): number {
  let j = i + 1;
  while (t[j] !== '"') j += t[j] === '\\' ? 2 : 1;
  return j + 1;
}

/** Index just past the JSON value starting at `i`; iterative, so any nesting depth is fine. */
function endOfValue(t: string, i: number): number {
  if (t[i] === '"') return endOfString(t, i);
  if (t[i] !== '{' && t[i] !== '[') {
    let j = i;
    while (j < t.length && !WS.has(t[j]) && t[j] !== ',' && t[j] !== '}' && t[j] !== ']') j++;
    return j;
  }
  let depth = 0;
  let j = i;
  do {
    const c = t[j];
    if (c === '"') {
      j = endOfString(t, j);
      continue;
    }
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    j++;
  } while (depth > 0);
  return j;
}

/**
 * Every top-level member of a JSON object as (name, raw value text), repeats included, in order.
 * `text` must already be valid JSON (the caller parsed it); a non-object gives [].
 */
export function topLevelMembers(text: string): Array<{ name: string; raw: string }> {
  let i = skipWs(text, 0);
  if (text[i] !== '{') return [];
  const out: Array<{ name: string; raw: string }> = [];
  i = skipWs(text, i + 1);
  while (text[i] === '"') {
    const nameEnd = endOfString(text, i);
    const name = JSON.parse(text.slice(i, nameEnd)) as string;
    i = skipWs(text, skipWs(text, nameEnd) + 1); // past ':'
    const valueEnd = endOfValue(text, i);
    out.push({ name, raw: text.slice(i, valueEnd) });
    i = skipWs(text, valueEnd);
    if (text[i] !== ',') break;
    i = skipWs(text, i + 1);
  }
  return out;
}

function isKeysName(name: string): boolean {
  const n = name.split('\0')[0];
  return n.toLowerCase() === 'keys' || n.toUpperCase() === 'KEYS';
}

/** True when the runtime data (UTF-8 JSON) has a top-level `keys` member that is not null or []. */
export function holdsWrappingKeys(runtimeData: Buffer): boolean {
  let text: string;
  try {
    // The same decoding requireJson applies (BOM dropped, invalid UTF-8 refused).
    text = new TextDecoder('utf-8', { fatal: true }).decode(runtimeData);
    JSON.parse(text);
  } catch {
    // Never reached after requireJson; fail closed all the same.
    throw badRequest('runtime_data must be base64 of JSON text for MAA attestation', 'ERR_RUNTIME_DATA');
  }
  return topLevelMembers(text).some(({ name, raw }) => {
    if (!isKeysName(name)) return false;
    const v: unknown = JSON.parse(raw);
    return !(v === null || (Array.isArray(v) && v.length === 0));
  });
}

/**
 * For evidence the caller takes away (`/attest/raw`, `/attest/combined`): true when the runtime data
 * holds wrapping keys as JSON, or, when it is not strict JSON (a laxer parser may still read it: bad
 * UTF-8, comments, trailing commas), when it mentions `keys` in any case, `\uXXXX` escapes decoded.
 */
export function mayHoldWrappingKeys(runtimeData: Buffer): boolean {
  const text = new TextDecoder('utf-8').decode(runtimeData); // lax: BOM dropped, bad bytes replaced
  try {
    JSON.parse(text);
  } catch {
    const unescaped = text.replace(/\\u([0-9a-fA-F]{4})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
    return unescaped.toLowerCase().includes('keys') || unescaped.toUpperCase().includes('KEYS');
  }
  return holdsWrappingKeys(Buffer.from(text, 'utf8'));
}

/**
 * 403 naming the kid allowlist and the opt-in when the runtime data carries keys: `token` for
 * /attest/maa (strict JSON already checked), `evidence` for the routes whose evidence leaves with the caller.
 */
export function checkRuntimeKeys(runtimeData: Buffer, use: 'token' | 'evidence'): void {
  const refused = use === 'token' ? holdsWrappingKeys(runtimeData) : mayHoldWrappingKeys(runtimeData);
  if (!refused) return;
  const what = use === 'token' ? 'an MAA token over it' : 'evidence over it, taken to MAA,';
  throw new ForbiddenError(
    'ERR_RUNTIME_KEYS_REFUSED',
    `runtime_data has a top-level "keys" member (keys a vault could wrap a released key to): with a kid allowlist set ` +
      `(SKR_ALLOWED_KIDS or SkrSideCarArgs.allowlist.kid) it is refused, since ${what} would release keys outside the allowlist; ` +
      `set ${ATTEST_MAA_KEYS_SETTING} to permit it`,
  );
}
