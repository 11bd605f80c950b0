/**
 * THIM-shaped certificate bundles (`{vcekCert, certificateChain, tcbm, cacheControl}`) and the
 * confidential-ACI security context that carries one (`host-amd-cert-base64`), plus the security
 * policy and UVM endorsement that sit beside it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InvalidInputError } from '../common/errors';
import { decodeBase64Strict } from '../common/bytes';
import { splitPem } from './pem';
import type { ThimCertificates } from '../snp/evidence';
import type { AmdCertChain } from './types';

function badThim(msg: string): never {
  throw new InvalidInputError('ERR_THIM_FORMAT', `THIM certificates: ${msg}`);
}

/** Validate THIM JSON (text or already-parsed): every field a string, PEMs parse, tcbm 16 hex digits. */
export function parseThimCertificates(input: string | unknown): ThimCertificates {
  let obj: unknown = input;
  if (typeof input === 'string') {
    try {
      obj = JSON.parse(input);
    } catch {
      badThim('not valid JSON');
    }
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) badThim('not a JSON object');
  const o = obj as Record<string, unknown>;
  for (const k of ['vcekCert', 'certificateChain', 'tcbm'] as const) {
    if (typeof o[k] !== 'string' || (o[k] as string).length === 0) badThim(`"${k}" must be a non-empty string`);
  }
  if (o.cacheControl !== undefined && typeof o.cacheControl !== 'string') badThim('"cacheControl" must be a string');
  const vcekCert = o.vcekCert as string;
  const certificateChain = o.certificateChain as string;
  const tcbm = o.tcbm as string;
  if (splitPem(vcekCert, 'vcekCert').length !== 1) badThim('"vcekCert" must hold exactly one PEM certificate');
  if (splitPem(certificateChain, 'certificateChain').length !== 2) badThim('"certificateChain" must hold two PEM certificates (ASK, ARK)');
  if (!/^[0-9a-fA-F]{16}$/.test(tcbm)) badThim(`"tcbm" must be 16 hex digits, got "${tcbm}"`);
  const out: ThimCertificates = { vcekCert, certificateChain, tcbm };
  if (typeof o.cacheControl === 'string') {
    if (!/^\d+$/.test(o.cacheControl.trim())) badThim(`"cacheControl" must be decimal seconds, got "${o.cacheControl}"`);
    out.cacheControl = o.cacheControl;
  }
  return out;
}

/** THIM bundle → the chain shape the rest of the code uses. */
export function thimToChain(t: ThimCertificates, source: string): AmdCertChain {
  const chain: AmdCertChain = {
    vcekPem: splitPem(t.vcekCert, 'vcekCert')[0],
    chainPem: splitPem(t.certificateChain, 'certificateChain').join(''),
    tcbm: BigInt('0x' + t.tcbm),
    source,
  };
  if (t.cacheControl !== undefined) chain.cacheControlSeconds = Number(t.cacheControl.trim());
  return chain;
}

/** The inverse, for `/attest/combined` and the emulators. */
export function chainToThim(c: AmdCertChain): ThimCertificates {
  const out: ThimCertificates = { vcekCert: c.vcekPem, certificateChain: c.chainPem, tcbm: c.tcbm.toString(16).padStart(16, '0') };
  if (c.cacheControlSeconds !== undefined) out.cacheControl = String(c.cacheControlSeconds);
  return out;
}

/** `host-amd-cert-base64` / UVM_HOST_AMD_CERTIFICATE: base64 of THIM JSON. */
export function decodeHostAmdCert(b64: string, what = 'host-amd-cert-base64'): ThimCertificates {
  const raw = decodeBase64Strict(b64.replace(/\s+/g, ''));
  if (!raw) throw new InvalidInputError('ERR_THIM_FORMAT', `${what} is not valid base64`);
  try {
    return parseThimCertificates(raw.toString('utf8'));
  } catch (e) {
    if (e instanceof InvalidInputError) throw new InvalidInputError(e.code, `${what}: ${e.message}`, e);
    throw e;
  }
}

export const SECURITY_CONTEXT_FILES = {
  policy: 'security-policy-base64',
  hostAmdCert: 'host-amd-cert-base64',
  referenceInfo: 'reference-info-base64',
} as const;

/** Where Confidential AKS (kata) puts the security context when nothing else says. */
export const AKS_SECURITY_CONTEXT_DIR = '/opt/confidential-containers/share/kata-containers';

export interface SecurityContext {
  /** The directory used, when one exists. */
  dir?: string;
  /** Base64 of the Rego policy; sha256 of its decoding is HOST_DATA. */
  securityPolicyBase64?: string;
  hostAmdCert?: ThimCertificates;
  /** Where hostAmdCert came from. */
  hostAmdCertFrom?: 'file' | 'env';
  /** Base64 COSE_Sign1 UVM endorsement. */
  referenceInfoBase64?: string;
}

/** The environment variables the security context reads (the server's config collects them). */
export const SECURITY_CONTEXT_ENV = ['UVM_SECURITY_CONTEXT_DIR', 'UVM_SECURITY_POLICY', 'UVM_HOST_AMD_CERTIFICATE', 'UVM_REFERENCE_INFO'] as const;
export type SecurityContextEnv = Partial<Record<(typeof SECURITY_CONTEXT_ENV)[number], string>>;

export interface SecurityContextOptions {
  /** Use this directory (skips discovery). */
  dir?: string;
  /** The UVM_* variables to consult (from the server config); none when absent. */
  env?: SecurityContextEnv;
  /** Filesystem root searched for `security-context-*`; default `/` (injectable for tests). */
  root?: string;
  /** The AKS default directory; injectable for tests. */
  aksDefaultDir?: string;
}

/** $UVM_SECURITY_CONTEXT_DIR, else the first `security-context-*` directory at the root, else the AKS default. */
export function findSecurityContextDir(opts: SecurityContextOptions = {}): string {
  if (opts.dir) return opts.dir;
  const env = opts.env ?? {};
  if (env.UVM_SECURITY_CONTEXT_DIR) return env.UVM_SECURITY_CONTEXT_DIR;
  const root = opts.root ?? '/';
  let entries: fs.Dirent[] = [];
  try {
    entries = fs.readdirSync(root, { withFileTypes: true });
  } catch {
    // An unreadable root just means no ACI security context.
  }
  const hit = entries
    .filter((e) => e.isDirectory() && e.name.startsWith('security-context-'))
    .map((e) => e.name)
    .sort()[0];
  return hit ? path.join(root, hit) : opts.aksDefaultDir ?? AKS_SECURITY_CONTEXT_DIR;
}

function readTrimmed(file: string): string | undefined {
  try {
    const s = fs.readFileSync(file, 'utf8').trim();
    return s.length ? s : undefined;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new InvalidInputError('ERR_SECURITY_CONTEXT', `cannot read ${file}: ${(e as Error).message}`, e);
  }
}

/**
 * Read the security context: each file from the directory, falling back per item to the older
 * UVM_SECURITY_POLICY / UVM_HOST_AMD_CERTIFICATE / UVM_REFERENCE_INFO variables. A present but
 * malformed host certificate is an error (never silently ignored).
 */
export function readSecurityContext(opts: SecurityContextOptions = {}): SecurityContext {
  const env = opts.env ?? {};
  const dir = findSecurityContextDir(opts);
  const out: SecurityContext = {};
  const haveDir = fs.existsSync(dir);
  if (haveDir) out.dir = dir;
  const file = (name: string) => (haveDir ? readTrimmed(path.join(dir, name)) : undefined);
  const envVal = (name: keyof SecurityContextEnv) => {
    const v = env[name]?.trim();
    return v ? v : undefined;
  };

  const policy = file(SECURITY_CONTEXT_FILES.policy) ?? envVal('UVM_SECURITY_POLICY');
  if (policy !== undefined) out.securityPolicyBase64 = policy;
  const ref = file(SECURITY_CONTEXT_FILES.referenceInfo) ?? envVal('UVM_REFERENCE_INFO');
  if (ref !== undefined) out.referenceInfoBase64 = ref;
  const certFile = file(SECURITY_CONTEXT_FILES.hostAmdCert);
  if (certFile !== undefined) {
    out.hostAmdCert = decodeHostAmdCert(certFile, path.join(dir, SECURITY_CONTEXT_FILES.hostAmdCert));
    out.hostAmdCertFrom = 'file';
  } else {
    const certEnv = envVal('UVM_HOST_AMD_CERTIFICATE');
    if (certEnv !== undefined) {
      out.hostAmdCert = decodeHostAmdCert(certEnv, 'UVM_HOST_AMD_CERTIFICATE');
      out.hostAmdCertFrom = 'env';
    }
  }
  return out;
}
