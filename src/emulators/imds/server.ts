/**
 * IMDS emulator: the two Instance Metadata Service endpoints the sidecar uses, on plain HTTP at
 * 127.0.0.1 like the real service at 169.254.169.254:
 *   GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=<r>[&client_id=<id>|&object_id=<id>]
 *   GET /metadata/THIM/amd/certification
 *   POST /acc/tdquote {"report": base64url(TDREPORT)} → {"quote": base64url} (TDX CVMs, when a quoting
 *     enclave is given); like the real one it does not insist on `Metadata: true` (Microsoft's Python
 *     tools send none) and takes the report with or without base64 padding.
 * The first two need `Metadata: true`; without it IMDS answers 400 quickly, which is also what
 * @azure/identity's availability probe (no header, no query) relies on.
 */
import { closeServer, listenLoopback, refuseForeignRequest } from '../http-util';
import { hostGuardPolicy, type HostGuardSettings } from '../../common/host-guard';
import { createPublicKey, type KeyObject } from 'node:crypto';
import * as http from 'node:http';
import { InvalidInputError } from '../../common/errors';
import { decodeBase64Strict } from '../../common/bytes';
import { TDREPORT_SIZE } from '../../tdx/tdreport';
import { FaultInjector, handleFaultAdmin, serveGenericFault } from '../faults';
import { loadOrCreateIdentityState, loadOrCreateSigningKey } from './state';
import {
  issueAccessToken,
  jwksFor,
  stsIssuer,
  type AccessTokenPrincipal,
  type JsonWebKeySet,
} from './tokens';

export const IMDS_TOKEN_PATH = '/metadata/identity/oauth2/token';
export const IMDS_THIM_PATH = '/metadata/THIM/amd/certification';
export const IMDS_TDQUOTE_PATH = '/acc/tdquote';
/** A TDREPORT is 1024 bytes: its base64url in JSON is well under this. */
const MAX_TDQUOTE_REQUEST = 8 * 1024;

/** The error bodies IMDS returns (identity endpoint: OAuth-style; other metadata: a bare string). */
export const IMDS_ERRORS = {
  metadataHeader: { error: 'invalid_request', error_description: 'Required metadata header not specified' },
  apiVersion: { error: 'invalid_request', error_description: "Required query variable 'api-version' is missing" },
  resource: { error: 'invalid_request', error_description: 'Required audience parameter not specified' },
  identityNotFound: { error: 'invalid_request', error_description: 'Identity not found' },
  multipleIdentities: {
    error: 'invalid_request',
    error_description: 'Only one of client_id, object_id or msi_res_id may be specified',
  },
  metadataHeaderPlain: { error: 'Bad request. Required metadata header not specified' },
  notFound: { error: 'Not found' },
  methodNotAllowed: { error: 'Method not allowed' },
} as const;

export interface ImdsEmulatorOptions {
  /** Port on 127.0.0.1 (default 0: any free port). */
  port?: number;
  /** Tenant of the issued tokens (default: persisted in stateDir, else random). */
  tenantId?: string;
  /** Identities on this "VM"; the first is the system-assigned one (default: one generated). */
  principals?: AccessTokenPrincipal[];
  /** THIM JSON served at /metadata/THIM/amd/certification; 404 when absent. */
  thim?: () => object;
  /** The host's TD quoting enclave for POST /acc/tdquote (TDREPORT → quote; throws for a report it refuses); 404 when absent. */
  tdQuote?: (tdReport: Buffer) => Buffer;
  /** RS256 key that signs access tokens (default: persisted in stateDir, else generated). */
  signingKey?: KeyObject;
  /** Where the signing key and generated identities persist across runs. */
  stateDir?: string;
  /** Clock for token timestamps (tests). */
  now?: () => Date;
  /** Extra Host names / Origins served besides loopback (default none; see src/common/host-guard.ts). */
  hostGuard?: HostGuardSettings;
}

export interface ImdsEmulator {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** `https://sts.windows.net/<tenant>/`, the `iss` of every token. */
  issuer: string;
  tenantId: string;
  publicKey: KeyObject;
  jwks: JsonWebKeySet;
  principals: AccessTokenPrincipal[];
  defaultPrincipal: AccessTokenPrincipal;
  /** Fault injection (routes `token`, `thim`, `tdquote`). */
  faults: FaultInjector;
  /** Every access token issued, for tests that check no token reaches a log. */
  issuedTokens: string[];
  close(): Promise<void>;
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function validatePrincipals(principals: AccessTokenPrincipal[]): AccessTokenPrincipal[] {
  if (!principals.length) throw new InvalidInputError('ERR_IMDS_PRINCIPALS', 'IMDS emulator: principals must not be empty');
  for (const p of principals) {
    if (!p.clientId || !p.objectId) {
      throw new InvalidInputError('ERR_IMDS_PRINCIPALS', 'IMDS emulator: every principal needs clientId and objectId');
    }
  }
  return principals.map((p) => ({ clientId: p.clientId, objectId: p.objectId }));
}

export async function startImdsEmulator(opts: ImdsEmulatorOptions = {}): Promise<ImdsEmulator> {
  const signingKey = opts.signingKey ?? loadOrCreateSigningKey(opts.stateDir);
  if (signingKey.type !== 'private' || signingKey.asymmetricKeyType !== 'rsa') {
    throw new InvalidInputError('ERR_IMDS_KEY', 'IMDS emulator: signingKey must be an RSA private key');
  }
  const publicKey = createPublicKey(signingKey);
  const jwks = await jwksFor(publicKey);
  const signer = { privateKey: signingKey, kid: jwks.keys[0].kid };
  // Generated tenant/identities persist only when the caller did not fix them.
  const stored = opts.tenantId && opts.principals ? undefined : loadOrCreateIdentityState(opts.stateDir);
  const tenantId = opts.tenantId ?? stored!.tenantId;
  const principals = validatePrincipals(opts.principals ?? stored!.principals);
  const now = opts.now ?? (() => new Date());
  const guard = hostGuardPolicy(opts.hostGuard);

  const lookup = (q: URLSearchParams): AccessTokenPrincipal | 'multiple' | undefined => {
    const given = ['client_id', 'object_id', 'msi_res_id', 'mi_res_id'].filter((k) => q.get(k));
    if (given.length > 1) return 'multiple';
    if (!given.length) return principals[0];
    const value = q.get(given[0])!.toLowerCase();
    if (given[0] === 'client_id') return principals.find((p) => p.clientId.toLowerCase() === value);
    if (given[0] === 'object_id') return principals.find((p) => p.objectId.toLowerCase() === value);
    return undefined; // the emulated identities have no ARM resource ids
  };

  const faults = new FaultInjector();
  const issuedTokens: string[] = [];

  const tokenEndpoint = async (q: URLSearchParams, res: http.ServerResponse): Promise<void> => {
    if (!q.get('api-version')) return send(res, 400, IMDS_ERRORS.apiVersion);
    const resource = q.get('resource');
    if (!resource) return send(res, 400, IMDS_ERRORS.resource);
    const principal = lookup(q);
    if (principal === 'multiple') return send(res, 400, IMDS_ERRORS.multipleIdentities);
    if (!principal) return send(res, 400, IMDS_ERRORS.identityNotFound);
    const issued = await issueAccessToken({ signer, tenantId, principal, resource, now: now() });
    issuedTokens.push(issued.token);
    const lifetime = String(issued.expiresOn - issued.issuedAt);
    // IMDS sends every number as a string.
    send(res, 200, {
      access_token: issued.token,
      client_id: principal.clientId,
      expires_in: lifetime,
      expires_on: String(issued.expiresOn),
      ext_expires_in: lifetime,
      not_before: String(issued.issuedAt),
      resource,
      token_type: 'Bearer',
    });
  };

  const tdQuoteEndpoint = (res: http.ServerResponse, body: Buffer): void => {
    if (!opts.tdQuote) return send(res, 404, IMDS_ERRORS.notFound);
    let report: Buffer | undefined;
    try {
      const o = JSON.parse(body.toString('utf8')) as { report?: unknown };
      if (typeof o?.report === 'string') report = decodeBase64Strict(o.report);
    } catch {
      report = undefined;
    }
    if (!report || report.length !== TDREPORT_SIZE) return send(res, 400, { error: 'Bad request. "report" must be the base64url of a 1024-byte TDREPORT' });
    let quote: Buffer;
    try {
      quote = opts.tdQuote(report);
    } catch {
      // The quoting enclave refuses a report it cannot verify (not this machine's, or altered).
      return send(res, 400, { error: 'Bad request. The quoting enclave refused the report' });
    }
    return send(res, 200, { quote: quote.toString('base64url') });
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse, body?: Buffer): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname === IMDS_TDQUOTE_PATH) {
      if (req.method !== 'POST') return send(res, 405, IMDS_ERRORS.methodNotAllowed);
      const fault = faults.take('tdquote');
      if (fault && serveGenericFault(fault, res, (status) => ({ error: `injected fault: HTTP ${status}` }))) return;
      if (!body) return send(res, 413, { error: 'Request body too large' });
      return tdQuoteEndpoint(res, body);
    }
    const known = url.pathname === IMDS_TOKEN_PATH || url.pathname === IMDS_THIM_PATH;
    if (!known) return send(res, 404, IMDS_ERRORS.notFound);
    if (req.method !== 'GET') return send(res, 405, IMDS_ERRORS.methodNotAllowed);
    const fault = faults.take(url.pathname === IMDS_TOKEN_PATH ? 'token' : 'thim');
    if (fault && serveGenericFault(fault, res, (status) => ({ error: 'server_error', error_description: `injected fault: HTTP ${status}` }))) return;
    const hasHeader = req.headers['metadata'] === 'true';
    if (url.pathname === IMDS_TOKEN_PATH) {
      if (!hasHeader) return send(res, 400, IMDS_ERRORS.metadataHeader);
      return tokenEndpoint(url.searchParams, res);
    }
    if (!hasHeader) return send(res, 400, IMDS_ERRORS.metadataHeaderPlain);
    if (!opts.thim) return send(res, 404, IMDS_ERRORS.notFound);
    return send(res, 200, opts.thim());
  };

  const server = http.createServer((req, res) => {
    if (refuseForeignRequest(req, res, guard, (error, message) => ({ error, error_description: message }))) return;
    if (handleFaultAdmin(req, res, faults)) return;
    const fail = (err: unknown) => {
      if (!res.headersSent) send(res, 500, { error: 'internal_error', error_description: (err as Error).message });
      else res.destroy();
    };
    if (req.method === 'POST' && (req.url ?? '').split('?')[0] === IMDS_TDQUOTE_PATH) {
      // The one endpoint with a body: read it, bounded (undefined when too large).
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= MAX_TDQUOTE_REQUEST) chunks.push(c);
      });
      req.on('end', () => handle(req, res, size <= MAX_TDQUOTE_REQUEST ? Buffer.concat(chunks) : undefined).catch(fail));
      req.on('error', () => res.destroy());
      return;
    }
    // Drain any body: IMDS GETs carry none, and an unread body would stall keep-alive.
    req.resume();
    handle(req, res).catch(fail);
  });
  const port = await listenLoopback(server, opts.port);

  return {
    url: `http://127.0.0.1:${port}`,
    issuer: stsIssuer(tenantId),
    tenantId,
    publicKey,
    jwks,
    principals,
    defaultPrincipal: principals[0],
    faults,
    issuedTokens,
    close: () => closeServer(server),
  };
}

