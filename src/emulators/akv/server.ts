/**
 * Key Vault / Managed HSM emulator over HTTPS on loopback. Speaks enough of the data-plane API for
 * secure key release (create, import, get, list versions, release) that the official
 * @azure/keyvault-keys KeyClient and the sidecar work against it unchanged: bearer challenge,
 * api-version gate, the service's error shapes, RS256 release JWS with an x5c chain to the local CA.
 */
import { closeServer, listenLoopback, readRequestBody, refuseForeignRequest } from '../http-util';
import { hostGuardPolicy, type HostGuardSettings } from '../../common/host-guard';
import { randomUUID, type KeyObject } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as https from 'node:https';
import { createReleaseSigner } from './release-signer';
import type { IssuedCertificate } from '../../asn1/x509';
import { SkrError } from '../../common/errors';
import type { FetchLike } from '../../common/http';
import { createHttpsFetch } from '../../common/https-fetch';
import { loopbackServerTls } from '../ca';
import { verifyAccessToken } from '../imds/tokens';
import { checkApiVersion } from './api-version';
import { badParameter, VaultHttpError } from './errors';
import type { Flavour } from './keys';
import { createKey, getKey, importKey, listKeyVersions, releaseKey, type VaultContext } from './operations';
import { KeyStore } from './store';
import { FaultInjector, handleFaultAdmin, serveGenericFault, tamperJwsSignature, WRONG_HOST } from '../faults';

export const MAX_BODY_BYTES = 1024 * 1024;

export const RESOURCES: Record<Flavour, string> = {
  vault: 'https://vault.azure.net',
  hsm: 'https://managedhsm.azure.net',
};

const RELEASE_ACTIONS: Record<Flavour, string> = {
  vault: 'Microsoft.KeyVault/vaults/keys/release/action',
  hsm: 'Microsoft.KeyVault/managedHsm/keys/release/action',
};
/** The data action of reading a key (the access-policy `get` key permission). */
const READ_ACTIONS: Record<Flavour, string> = {
  vault: 'Microsoft.KeyVault/vaults/keys/read',
  hsm: 'Microsoft.KeyVault/managedHsm/keys/read/action',
};

export interface VaultEmulatorOptions {
  flavour: Flavour;
  /** The local CA: it issues the TLS certificate and the release-signing certificate. */
  ca: IssuedCertificate;
  port?: number;
  /** Where keys persist (one JSON file per key under `keys/`). */
  stateDir: string;
  /** The access-token issuer (the IMDS emulator): its key and `iss`. */
  accessTokens: { publicKey: KeyObject; issuer: string };
  /** Tenant for the 401 challenge; default: taken from the access-token issuer. */
  tenantId?: string;
  /** Object ids allowed to release; default: every authenticated principal. */
  releasePrincipals?: string[];
  /** Fetch for MAA OpenID metadata/JWKS; default: HTTPS trusting the system roots and the local CA. */
  authorityFetch?: FetchLike;
  now?: () => Date;
  /** Extra Host names / Origins served besides loopback (default none; see src/common/host-guard.ts). */
  hostGuard?: HostGuardSettings;
}

export interface VaultEmulator {
  /** `https://127.0.0.1:<port>` */
  url: string;
  /** `127.0.0.1:<port>` */
  endpoint: string;
  flavour: Flavour;
  close(): Promise<void>;
  /** Fault injection (routes `release`, `get`, `create`, `import`, `versions`). */
  faults: FaultInjector;
  grantRelease(oid: string): void;
  revokeRelease(oid: string): void;
  /** Take away (or give back) a principal's permission to read keys (GET a key, list its versions); default: granted. */
  revokeRead(oid: string): void;
  grantRead(oid: string): void;
}

/** The tenant id in `https://sts.windows.net/<tenant>/` or `https://login.microsoftonline.com/<tenant>/v2.0`. */
export function tenantOfIssuer(issuer: string): string {
  try {
    const seg = new URL(issuer).pathname.split('/').filter(Boolean)[0];
    if (seg) return seg;
  } catch {
    // fall through
  }
  return 'common';
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    'x-ms-request-id': randomUUID(),
    'x-ms-keyvault-service-version': 'skr-sidecar-emulator',
    ...headers,
  });
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return readRequestBody(req, MAX_BODY_BYTES, () => new VaultHttpError(413, 'RequestTooLarge', `The request body exceeds ${MAX_BODY_BYTES} bytes.`));
}

function parseJsonBody(buf: Buffer): Record<string, unknown> {
  if (buf.length === 0) throw badParameter('The request body is empty: a JSON object is required.');
  let v: unknown;
  try {
    v = JSON.parse(buf.toString('utf8'));
  } catch {
    throw badParameter('The request body is not valid JSON.');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badParameter('The request body must be a JSON object.');
  return v as Record<string, unknown>;
}

type Route =
  | { op: 'create'; name: string }
  | { op: 'import'; name: string }
  | { op: 'get'; name: string; version?: string }
  | { op: 'versions'; name: string }
  | { op: 'release'; name: string; version?: string };

function route(method: string, pathname: string): Route | undefined {
  const parts = pathname.split('/').slice(1).map(decodeURIComponent);
  if (parts.length > 2 && parts[parts.length - 1] === '') parts.pop();
  if (parts[0] !== 'keys' || !parts[1]) return undefined;
  const [, name, a, b] = parts;
  if (parts.length === 2) return method === 'PUT' ? { op: 'import', name } : method === 'GET' ? { op: 'get', name } : undefined;
  if (parts.length === 3) {
    if (a === 'create' && method === 'POST') return { op: 'create', name };
    if (a === 'release' && method === 'POST') return { op: 'release', name };
    if (a === 'versions' && method === 'GET') return { op: 'versions', name };
    if (method === 'GET') return { op: 'get', name, version: a };
    return undefined;
  }
  if (parts.length === 4 && b === 'release' && method === 'POST') return { op: 'release', name, version: a };
  return undefined;
}

export async function startVaultEmulator(opts: VaultEmulatorOptions): Promise<VaultEmulator> {
  const flavour = opts.flavour;
  const resource = RESOURCES[flavour];
  const tenant = opts.tenantId ?? tenantOfIssuer(opts.accessTokens.issuer);
  const challenge = `Bearer authorization="https://login.microsoftonline.com/${tenant}", resource="${resource}"`;
  const allowAll = opts.releasePrincipals === undefined;
  const allowed = new Set(opts.releasePrincipals ?? []);
  const revoked = new Set<string>();
  const readRevoked = new Set<string>();
  const now = opts.now ?? (() => new Date());
  const guard = hostGuardPolicy(opts.hostGuard);
  const ownFetch = opts.authorityFetch ? undefined : createHttpsFetch({ extraCaPem: [opts.ca.certPem] });
  const signer = createReleaseSigner(opts.ca, { dns: ['localhost'], ip: ['127.0.0.1'] });
  // baseUrl is known once the server listens (port 0 picks the port).
  const ctx: VaultContext = {
    flavour,
    baseUrl: '',
    store: new KeyStore(opts.stateDir),
    signer,
    authorityFetch: opts.authorityFetch ?? (ownFetch as FetchLike),
    now,
  };

  const faults = new FaultInjector();
  let wrongHostSigner: ReturnType<typeof createReleaseSigner> | undefined;

  const unauthorized = (message: string) =>
    new VaultHttpError(401, 'Unauthorized', message, undefined, { 'www-authenticate': challenge });

  async function authenticate(req: IncomingMessage): Promise<Record<string, unknown>> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!m) throw unauthorized('AKV10000: Request is missing a Bearer or PoP token.');
    try {
      return (await verifyAccessToken(m[1], {
        publicKey: opts.accessTokens.publicKey,
        issuer: opts.accessTokens.issuer,
        audience: [resource, `${resource}/`],
        now: now(),
      })) as Record<string, unknown>;
    } catch (err) {
      throw unauthorized(`AKV10022: Invalid access token: ${(err as Error).message}`);
    }
  }

  function mayRelease(oid: string): boolean {
    return !revoked.has(oid) && (allowAll || allowed.has(oid));
  }

  function forbidden(claims: Record<string, unknown>, name: string, action: string): VaultHttpError {
    const caller = `appid=${String(claims.appid ?? '')};oid=${String(claims.oid ?? '')};iss=${String(claims.iss ?? '')}`;
    return new VaultHttpError(
      403,
      'Forbidden',
      'Caller is not authorized to perform action on resource.\r\n' +
        'If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n' +
        `Caller: ${caller}\r\nAction: '${action}'\r\nResource: '/keys/${name}'\r\n` +
        'Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null\r\n',
      { code: 'ForbiddenByRbac' },
    );
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const method = (req.method ?? 'GET').toUpperCase();
    // Read the body first so a rejected request never leaves unread data on a kept-alive socket.
    const raw = await readBody(req);
    const claims = await authenticate(req);
    const apiVersion = checkApiVersion(url.searchParams.get('api-version'));
    const r = route(method, url.pathname);
    if (!r) throw new VaultHttpError(404, 'NotFound', `No operation ${method} ${url.pathname}.`);
    const fault = faults.take(r.op);
    if (fault && serveGenericFault(fault, res, (status) => ({ error: { code: status === 429 ? 'Throttled' : 'InternalError', message: `Injected fault: HTTP ${status}.` } }))) return;
    switch (r.op) {
      case 'create':
        return send(res, 200, createKey(ctx, r.name, parseJsonBody(raw)));
      case 'import':
        return send(res, 200, importKey(ctx, r.name, parseJsonBody(raw)));
      case 'get':
        if (readRevoked.has(String(claims.oid ?? ''))) throw forbidden(claims, r.name, READ_ACTIONS[flavour]);
        return send(res, 200, getKey(ctx, r.name, r.version));
      case 'versions':
        if (readRevoked.has(String(claims.oid ?? ''))) throw forbidden(claims, r.name, READ_ACTIONS[flavour]);
        return send(res, 200, listKeyVersions(ctx, r.name));
      case 'release': {
        if (!mayRelease(String(claims.oid ?? ''))) throw forbidden(claims, r.name, RELEASE_ACTIONS[flavour]);
        if (fault?.kind === 'non-exportable') throw badParameter(`The key ${ctx.baseUrl}/keys/${r.name} is not exportable and cannot be released.`);
        let releaseCtx = ctx;
        if (fault?.kind === 'wrong-host-x5c') {
          wrongHostSigner ??= createReleaseSigner(opts.ca, { dns: [WRONG_HOST] });
          releaseCtx = { ...ctx, signer: wrongHostSigner };
        }
        const released = await releaseKey(releaseCtx, r.name, r.version, parseJsonBody(raw), apiVersion);
        return send(res, 200, fault?.kind === 'tampered-jws' ? { value: tamperJwsSignature(released.value) } : released);
      }
    }
  }

  const server = https.createServer(loopbackServerTls(opts.ca), (req, res) => {
    if (refuseForeignRequest(req, res, guard, (code, message) => ({ error: { code, message } }))) return;
    if (handleFaultAdmin(req, res, faults)) return;
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof VaultHttpError) return send(res, err.status, err.body(), err.headers);
      if (err instanceof SkrError && err.status < 500) return send(res, 400, badParameter(err.message).body());
      send(res, 500, { error: { code: 'InternalError', message: (err as Error).message ?? 'internal error' } });
    });
  });

  const port = await listenLoopback(server, opts.port);
  const endpoint = `127.0.0.1:${port}`;
  const url = `https://${endpoint}`;
  ctx.baseUrl = url;

  return {
    url,
    endpoint,
    flavour,
    faults,
    grantRelease(oid: string) {
      revoked.delete(oid);
      allowed.add(oid);
    },
    revokeRelease(oid: string) {
      allowed.delete(oid);
      revoked.add(oid);
    },
    revokeRead(oid: string) {
      readRevoked.add(oid);
    },
    grantRead(oid: string) {
      readRevoked.delete(oid);
    },
    close: () => {
      ownFetch?.destroy();
      return closeServer(server);
    },
  };
}
