/**
 * Intel's TDX collateral (PCS v4): the TCB info for an FMSPC and the TD quoting enclave's identity. Each
 * is a JSON body `{"tcbInfo"|"enclaveIdentity": {...}, "signature": "<hex r‖s>"}` whose signature is
 * ECDSA P-256/SHA-256 over the exact bytes of the inner JSON value as served (never re-serialised), by
 * the "Intel SGX TCB Signing" certificate of the issuer chain header, which must chain to the pinned
 * Intel SGX Root CA. Every refusal names its step:
 *
 *   tcb-info-chain / qe-identity-chain          issuer chain: signing cert ← pinned root, validity
 *   tcb-info-signature / qe-identity-signature  the signing cert's key signs the inner JSON bytes
 *   tcb-info-format / qe-identity-format        the fields this verifier reads are present and typed
 *   tcb-info-expired / qe-identity-expired      issueDate ≤ now ≤ nextUpdate
 */
import { verify as cryptoVerify, type X509Certificate } from 'node:crypto';
import { certificateFromDer } from '../asn1/certificate';
import { pemCertificatesToDer } from '../certs/pem';
import { clip } from '../common/clip';
import { VerificationError } from '../common/errors';
import { fingerprint256, type IntelTrustStore } from './roots';

/** A body as served plus the issuer chain (PEM, already URL-decoded). */
export interface SignedCollateral {
  body: string;
  issuerChainPem: string;
}

export interface TdxCollateral {
  tcbInfo: SignedCollateral;
  qeIdentity: SignedCollateral;
  /** Where it came from (a URL, a file, `cache`), for the verdict. */
  source?: string;
}

/** Collateral documents are a few tens of KB; the bound for files and answers. */
export const MAX_COLLATERAL_DOC_BYTES = 512 * 1024;

export interface TcbComponentsLevel {
  sgxComponents: number[];
  pceSvn: number;
  tdxComponents: number[];
  tcbDate: string;
  tcbStatus: string;
  advisoryIds: string[];
}

export interface TdxModuleIdentity {
  id: string;
  mrSigner: Buffer;
  attributes: Buffer;
  attributesMask: Buffer;
  tcbLevels: { isvSvn: number; tcbDate: string; tcbStatus: string; advisoryIds: string[] }[];
}

export interface TdxTcbInfo {
  issueDate: Date;
  nextUpdate: Date;
  fmspc: string;
  pceId: string;
  tcbEvaluationDataNumber: number;
  tdxModule?: { mrSigner: Buffer; attributes: Buffer; attributesMask: Buffer };
  tdxModuleIdentities: TdxModuleIdentity[];
  tcbLevels: TcbComponentsLevel[];
}

export interface TdQeIdentity {
  issueDate: Date;
  nextUpdate: Date;
  tcbEvaluationDataNumber: number;
  miscSelect: Buffer;
  miscSelectMask: Buffer;
  attributes: Buffer;
  attributesMask: Buffer;
  mrSigner: Buffer;
  isvProdId: number;
  tcbLevels: { isvSvn: number; tcbDate: string; tcbStatus: string; advisoryIds: string[] }[];
}

type Kind = 'tcb-info' | 'qe-identity';

function fail(step: string, message: string, cause?: unknown): never {
  throw new VerificationError(step, `${step}: ${message}`, cause);
}

const cn = (c: X509Certificate) => /CN=([^\n]*)/.exec(c.subject)?.[1] ?? c.subject.replace(/\n/g, ', ');

/**
 * The exact source text of member `key` of the top-level JSON object in `text` (already known to parse).
 * A scanner over strings and nesting only: the signature covers these bytes, not a re-serialisation.
 * A key present twice gives undefined (which copy a JSON parser keeps is not what was signed).
 */
export function rawMember(text: string, key: string): string | undefined {
  let depth = 0;
  let i = 0;
  let valueStart = -1;
  let expectKey = false;
  let pendingKey: string | undefined;
  let found: string | undefined;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        pendingKey = JSON.parse(text.slice(i, j + 1)) as string;
        expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (c === '{' || c === '[') {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (c === '}' || c === ']') {
      depth--;
      if (depth === 1 && valueStart >= 0) {
        if (found !== undefined) return undefined;
        found = text.slice(valueStart, i + 1);
        valueStart = -1;
      }
    } else if (depth === 1 && c === ':' && pendingKey === key) {
      let j = i + 1;
      while (/\s/.test(text[j] ?? '')) j++;
      if (text[j] !== '{') return undefined;
      valueStart = j;
      pendingKey = undefined;
      i = j;
      continue;
    } else if (depth === 1 && c === ',') {
      expectKey = true;
      pendingKey = undefined;
    }
    i++;
  }
  return found;
}

/** Issuer chain: "Intel SGX TCB Signing" ← pinned root; the signing certificate's key. */
export function verifyIssuerChain(kind: Kind, pem: string, trust: IntelTrustStore, now: Date): X509Certificate {
  const step = `${kind}-chain`;
  let certs: X509Certificate[];
  try {
    certs = pemCertificatesToDer(pem, `${kind} issuer chain`).map((d, i) => certificateFromDer(d, `${kind} issuer chain certificate ${i + 1}`));
  } catch (e) {
    return fail(step, (e as Error).message, e);
  }
  if (certs.length !== 2) fail(step, `expected 2 certificates (TCB signing, root), got ${certs.length}`);
  const [signer, root] = certs;
  if (trust.labelOf(root) === undefined) fail(step, `root "${cn(root)}" (sha256 ${fingerprint256(root)}) is not pinned; ${trust.describe()}`);
  if (!root.checkIssued(root) || !root.verify(root.publicKey)) fail(step, `root "${cn(root)}" is not self-signed`);
  if (!signer.checkIssued(root) || !signer.verify(root.publicKey)) fail(step, `"${cn(signer)}" is not signed by "${cn(root)}"`);
  for (const [c, role] of [[root, 'root'], [signer, 'TCB signing certificate']] as const) {
    const from = new Date(c.validFrom);
    const to = new Date(c.validTo);
    if (!(from <= now && now <= to)) fail(step, `${role} "${cn(c)}" is not valid at ${now.toISOString()} (${c.validFrom} .. ${c.validTo})`);
  }
  const k = signer.publicKey;
  if (k.asymmetricKeyType !== 'ec' || k.asymmetricKeyDetails?.namedCurve !== 'prime256v1') fail(step, `"${cn(signer)}" does not hold an EC P-256 key`);
  return signer;
}

/** Parse the body, check the signature over the inner value's exact bytes; the inner value, parsed. */
function verifiedInner(kind: Kind, doc: SignedCollateral, trust: IntelTrustStore, now: Date): Record<string, unknown> {
  const member = kind === 'tcb-info' ? 'tcbInfo' : 'enclaveIdentity';
  const format = `${kind}-format`;
  if (doc.body.length > MAX_COLLATERAL_DOC_BYTES) fail(format, `body of ${doc.body.length} bytes exceeds ${MAX_COLLATERAL_DOC_BYTES}`);
  let outer: unknown;
  try {
    outer = JSON.parse(doc.body);
  } catch {
    return fail(format, 'body is not JSON');
  }
  if (typeof outer !== 'object' || outer === null || Array.isArray(outer)) fail(format, 'body is not a JSON object');
  const o = outer as Record<string, unknown>;
  const sigHex = o['signature'];
  if (typeof sigHex !== 'string' || !/^[0-9a-fA-F]{128}$/.test(sigHex)) fail(format, '"signature" is not 64 bytes of hex (r‖s)');
  const raw = rawMember(doc.body, member);
  if (raw === undefined || typeof o[member] !== 'object' || o[member] === null) fail(format, `no single "${member}" object`);
  const signer = verifyIssuerChain(kind, doc.issuerChainPem, trust, now);
  let ok = false;
  try {
    ok = cryptoVerify('sha256', Buffer.from(raw, 'utf8'), { key: signer.publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(sigHex, 'hex'));
  } catch {
    ok = false;
  }
  if (!ok) fail(`${kind}-signature`, `the signature does not verify over "${member}" with "${cn(signer)}"`);
  // What was signed is what is read.
  return JSON.parse(raw as string) as Record<string, unknown>;
}

/** Field readers: a missing or mistyped field is a refusal at `step` naming it (value clipped). */
function reader(step: string, o: Record<string, unknown>, where: string) {
  const bad = (k: string, what: string): never => fail(step, `${where}.${k} is not ${what}${o[k] === undefined ? ' (absent)' : ` (${clip(JSON.stringify(o[k]) ?? '')})`}`);
  return {
    str: (k: string): string => (typeof o[k] === 'string' ? (o[k] as string) : bad(k, 'a string')),
    int: (k: string): number => (Number.isInteger(o[k]) && (o[k] as number) >= 0 ? (o[k] as number) : bad(k, 'a non-negative integer')),
    hex: (k: string, len: number): Buffer => (typeof o[k] === 'string' && new RegExp(`^[0-9a-fA-F]{${len * 2}}$`).test(o[k] as string) ? Buffer.from(o[k] as string, 'hex') : bad(k, `${len} bytes of hex`)),
    date: (k: string): Date => {
      const d = typeof o[k] === 'string' ? new Date(o[k] as string) : undefined;
      return d && !Number.isNaN(d.getTime()) ? d : bad(k, 'a date');
    },
    arr: (k: string): Record<string, unknown>[] => (Array.isArray(o[k]) && (o[k] as unknown[]).every((x) => typeof x === 'object' && x !== null) ? (o[k] as Record<string, unknown>[]) : bad(k, 'an array of objects')),
    obj: (k: string): Record<string, unknown> => (typeof o[k] === 'object' && o[k] !== null && !Array.isArray(o[k]) ? (o[k] as Record<string, unknown>) : bad(k, 'an object')),
    has: (k: string): boolean => o[k] !== undefined,
  };
}

function advisories(step: string, o: Record<string, unknown>, where: string): string[] {
  const a = o['advisoryIDs'];
  if (a === undefined) return [];
  if (!Array.isArray(a) || !a.every((x) => typeof x === 'string')) fail(step, `${where}.advisoryIDs is not an array of strings`);
  return a as string[];
}

function svns(step: string, list: Record<string, unknown>[], where: string): number[] {
  if (list.length !== 16) fail(step, `${where} has ${list.length} components, expected 16`);
  return list.map((c, i) => reader(step, c, `${where}[${i}]`).int('svn'));
}

function checkDates(kind: Kind, issueDate: Date, nextUpdate: Date, now: Date): void {
  if (now < issueDate) fail(`${kind}-expired`, `issued ${issueDate.toISOString()}, after ${now.toISOString()}`);
  if (now > nextUpdate) fail(`${kind}-expired`, `nextUpdate ${nextUpdate.toISOString()} has passed (now ${now.toISOString()}): fetch fresh collateral`);
}

export function verifyTdxTcbInfo(doc: SignedCollateral, trust: IntelTrustStore, now: Date): TdxTcbInfo {
  const step = 'tcb-info-format';
  const r = reader(step, verifiedInner('tcb-info', doc, trust, now), 'tcbInfo');
  if (r.str('id') !== 'TDX') fail(step, `tcbInfo.id is "${clip(r.str('id'))}", expected "TDX"`);
  if (r.int('version') !== 3) fail(step, `tcbInfo.version is ${r.int('version')}, expected 3`);
  const levels = r.arr('tcbLevels').map((l, i): TcbComponentsLevel => {
    const lr = reader(step, l, `tcbLevels[${i}]`);
    const tcb = reader(step, lr.obj('tcb'), `tcbLevels[${i}].tcb`);
    return {
      sgxComponents: svns(step, tcb.arr('sgxtcbcomponents'), `tcbLevels[${i}].tcb.sgxtcbcomponents`),
      pceSvn: tcb.int('pcesvn'),
      tdxComponents: svns(step, tcb.arr('tdxtcbcomponents'), `tcbLevels[${i}].tcb.tdxtcbcomponents`),
      tcbDate: lr.str('tcbDate'),
      tcbStatus: lr.str('tcbStatus'),
      advisoryIds: advisories(step, l, `tcbLevels[${i}]`),
    };
  });
  const moduleLevels = (lr: ReturnType<typeof reader>, where: string) =>
    lr.arr('tcbLevels').map((l, i) => {
      const x = reader(step, l, `${where}.tcbLevels[${i}]`);
      return { isvSvn: reader(step, x.obj('tcb'), `${where}.tcbLevels[${i}].tcb`).int('isvsvn'), tcbDate: x.str('tcbDate'), tcbStatus: x.str('tcbStatus'), advisoryIds: advisories(step, l, `${where}.tcbLevels[${i}]`) };
    });
  let tdxModule: TdxTcbInfo['tdxModule'];
  if (r.has('tdxModule')) {
    const m = reader(step, r.obj('tdxModule'), 'tdxModule');
    tdxModule = { mrSigner: m.hex('mrsigner', 48), attributes: m.hex('attributes', 8), attributesMask: m.hex('attributesMask', 8) };
  }
  const identities = r.has('tdxModuleIdentities')
    ? r.arr('tdxModuleIdentities').map((x, i) => {
        const m = reader(step, x, `tdxModuleIdentities[${i}]`);
        return { id: m.str('id'), mrSigner: m.hex('mrsigner', 48), attributes: m.hex('attributes', 8), attributesMask: m.hex('attributesMask', 8), tcbLevels: moduleLevels(m, `tdxModuleIdentities[${i}]`) };
      })
    : [];
  const info: TdxTcbInfo = {
    issueDate: r.date('issueDate'),
    nextUpdate: r.date('nextUpdate'),
    fmspc: r.hex('fmspc', 6).toString('hex'),
    pceId: r.hex('pceId', 2).toString('hex'),
    tcbEvaluationDataNumber: r.int('tcbEvaluationDataNumber'),
    ...(tdxModule ? { tdxModule } : {}),
    tdxModuleIdentities: identities,
    tcbLevels: levels,
  };
  checkDates('tcb-info', info.issueDate, info.nextUpdate, now);
  return info;
}

export function verifyTdQeIdentity(doc: SignedCollateral, trust: IntelTrustStore, now: Date): TdQeIdentity {
  const step = 'qe-identity-format';
  const r = reader(step, verifiedInner('qe-identity', doc, trust, now), 'enclaveIdentity');
  if (r.str('id') !== 'TD_QE') fail(step, `enclaveIdentity.id is "${clip(r.str('id'))}", expected "TD_QE"`);
  if (r.int('version') !== 2) fail(step, `enclaveIdentity.version is ${r.int('version')}, expected 2`);
  const id: TdQeIdentity = {
    issueDate: r.date('issueDate'),
    nextUpdate: r.date('nextUpdate'),
    tcbEvaluationDataNumber: r.int('tcbEvaluationDataNumber'),
    miscSelect: r.hex('miscselect', 4),
    miscSelectMask: r.hex('miscselectMask', 4),
    attributes: r.hex('attributes', 16),
    attributesMask: r.hex('attributesMask', 16),
    mrSigner: r.hex('mrsigner', 32),
    isvProdId: r.int('isvprodid'),
    tcbLevels: r.arr('tcbLevels').map((l, i) => {
      const x = reader(step, l, `tcbLevels[${i}]`);
      return { isvSvn: reader(step, x.obj('tcb'), `tcbLevels[${i}].tcb`).int('isvsvn'), tcbDate: x.str('tcbDate'), tcbStatus: x.str('tcbStatus'), advisoryIds: advisories(step, l, `tcbLevels[${i}]`) };
    }),
  };
  checkDates('qe-identity', id.issueDate, id.nextUpdate, now);
  return id;
}
