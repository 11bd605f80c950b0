/**
 * Local Microsoft Azure Attestation emulator for the SevSnpVm (confidential container) flow, on
 * loopback HTTPS with a certificate from the local CA:
 *   POST /attest/SevSnpVm?api-version=2020-10-01|2022-08-01  → {"token": "<RS256 JWT>"}
 *   GET  /certs                                              → JWKS (kid, kty, x5c: as MAA, no n/e)
 *   GET  /.well-known/openid-configuration                   → issuer, jwks_uri, ...
 * Evidence is verified as the real service does (see verify-evidence.ts); refusals are 400 in MAA's
 * error shape with the failed check named first in the message.
 *
 * UVM endorsements: like real MAA, a request without `Endorsements` still gets a token, but without
 * `x-ms-compliance-status` (and without `x-ms-sevsnpvm-uvm-endorsement`), so release policies that require
 * `azure-compliant-uvm` refuse it. An endorsement that is sent must verify and match MEASUREMENT, or the
 * whole request is refused: the emulator never silently ignores bad evidence.
 * Emulator choices where MAA's behaviour is not public: the request's nonce is echoed as claim `nonce`
 * (decimal string); binary runtime data yields no `x-ms-runtime`; error codes are `InvalidParameter`
 * (evidence, malformed requests), `UnsupportedApiVersion`, `NotFound`, `MethodNotAllowed`.
 */
import { closeServer, listenLoopback, readRequestBody, refuseForeignRequest } from '../http-util';
import { hostGuardPolicy, type HostGuardSettings } from '../../common/host-guard';
import { createHash, randomBytes } from 'node:crypto';
import * as https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { SignJWT } from 'jose';
import type { IssuedCertificate } from '../../asn1/x509';
import { TrustStore } from '../../certs/roots';
import { InvalidInputError, VerificationError } from '../../common/errors';
import { MICROSOFT_UVM_ROOT_SHA256, normaliseFingerprint } from '../../cose/uvm-endorsement';
import { parseSevSnpVmRequest, ParsedSevSnpVmRequest } from '../../maa/request';
import { loopbackServerTls } from '../ca';
import { claimsFromReport, SEVSNPVM_CLAIM_NAMES } from './claims';
import { DEFAULT_SEVSNPVM_POLICY, policyHash } from './policy';
import { MaaEmulatorRefusal, MAA_UNSUPPORTED_API_VERSION } from './refusal';
import { createSigningKey, loadOrCreateSigningKey, MaaSigningKey } from './signing-key';
import { verifySevSnpVmEvidence } from './verify-evidence';
import { IntelTrustStore } from '../../tdx/roots';
import { answerAzureGuest, parseVtpmCaPems, tdxTeeClaims } from './azure-guest';
import { parseTdxVmRequest, TDX_VM_API_VERSIONS } from '../../maa/tdx-vm';
import { verifyTdQuote, type VerifiedTdQuote } from '../../tdx/verify';
import { FaultInjector, handleFaultAdmin, serveGenericFault, tamperJwsSignature, WRONG_AUTHORITY, type Fault } from '../faults';

export const SUPPORTED_API_VERSIONS: readonly string[] = ['2020-10-01', '2022-08-01'];
/** MAA tokens live 8 hours. */
export const TOKEN_LIFETIME_SECONDS = 8 * 3600;
/** Far above any real request (report + three certificates + one endorsement, base64 twice ≈ 40 KiB). */
export const MAX_BODY_BYTES = 1024 * 1024;

export interface MaaEmulatorOptions {
  /** Local CA that issues the emulator's TLS certificate. */
  ca: IssuedCertificate;
  /** Default 0 (any free port); always 127.0.0.1. */
  port?: number;
  /** Extra ARKs (PEM) trusted besides AMD's pinned ones, e.g. the simulator's test ARK. */
  trustedArkPem?: string[];
  /** Extra UVM signing roots (SHA-256 of the DER) trusted besides Microsoft's, e.g. the simulator's. */
  trustedUvmRootFingerprints?: string[];
  /** vTPM CA certificates (PEM) that AK certificates of /attest/AzureGuest must chain to, e.g. the test-only one. */
  trustedVtpmCaPem?: string[];
  /** Extra Intel roots (PEM) a TD quote may chain to besides Intel's pinned one, e.g. the TDX simulator's. */
  trustedIntelRootPem?: string[];
  /** Persist the RS256 signing key here (0600) so tokens verify across restarts. */
  stateDir?: string;
  now?: () => Date;
  /** Extra Host names / Origins served besides loopback (default none; see src/common/host-guard.ts). */
  hostGuard?: HostGuardSettings;
}

export interface MaaEmulator {
  /** https://127.0.0.1:<port> */
  url: string;
  /** 127.0.0.1:<port>, as the sidecar's requests carry it. */
  endpoint: string;
  /** The tokens' `iss` (= url). */
  issuer: string;
  /** The JWKS /certs serves. */
  jwks: { keys: MaaSigningKey['jwk'][] };
  signingKey: Pick<MaaSigningKey, 'kid' | 'publicKey' | 'certPem'>;
  /** Fault injection (routes `attest`, `certs`, `openid`). */
  faults: FaultInjector;
  /** Every token issued, for tests that check no token reaches a log. */
  issuedTokens: string[];
  close(): Promise<void>;
}

type Json = Record<string, unknown>;

function send(res: ServerResponse, status: number, body: Json): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  send(res, status, { error: { code, message } });
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return readRequestBody(req, MAX_BODY_BYTES, () => new MaaEmulatorRefusal('request-format', `request body exceeds ${MAX_BODY_BYTES} bytes`, { status: 413 }));
}

/**
 * JSON.parse turns a u64 nonce above 2^53 into an inexact double; quote the top-level literal first so
 * the request parser receives it exactly. (Base64 fields cannot contain `"nonce":`.)
 */
function parseBody(raw: Buffer): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch (e) {
    throw new MaaEmulatorRefusal('request-format', 'request body is not UTF-8', { cause: e });
  }
  const literals = text.match(/"nonce"\s*:\s*\d+/g);
  if (literals?.length === 1) text = text.replace(/("nonce"\s*:\s*)(\d+)/, '$1"$2"');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new MaaEmulatorRefusal('request-format', `request body is not JSON: ${(e as Error).message}`, { cause: e });
  }
}

/** MAA answers an api-version it does not serve (or none) with its own error code. */
function requireApiVersion(url: URL, supported: readonly string[]): void {
  const apiVersion = url.searchParams.get('api-version');
  if (apiVersion === null || !supported.includes(apiVersion)) {
    throw new MaaEmulatorRefusal('api-version', `api-version ${apiVersion === null ? 'is missing' : `"${apiVersion}" is not supported`}; supported: ${supported.join(', ')}`, {
      maaCode: MAA_UNSUPPORTED_API_VERSION,
    });
  }
}

export async function startMaaEmulator(opts: MaaEmulatorOptions): Promise<MaaEmulator> {
  const now = opts.now ?? (() => new Date());
  const guard = hostGuardPolicy(opts.hostGuard);
  const key = opts.stateDir !== undefined ? loadOrCreateSigningKey(opts.stateDir, now()) : createSigningKey(now());
  const amdTrust = new TrustStore({ extraRootsPem: opts.trustedArkPem ?? [] });
  const uvmRoots = [...new Set([MICROSOFT_UVM_ROOT_SHA256, ...(opts.trustedUvmRootFingerprints ?? []).map(normaliseFingerprint)])];
  const hash = policyHash(DEFAULT_SEVSNPVM_POLICY);
  const jwks = { keys: [key.jwk] };
  let origin = '';
  const faults = new FaultInjector();
  const issuedTokens: string[] = [];

  async function attest(req: IncomingMessage, url: URL, res: ServerResponse, fault?: Fault): Promise<void> {
    requireApiVersion(url, SUPPORTED_API_VERSIONS);
    const body = parseBody(await readBody(req));
    let parsed: ParsedSevSnpVmRequest;
    try {
      parsed = parseSevSnpVmRequest(body);
    } catch (e) {
      if (e instanceof InvalidInputError) throw new MaaEmulatorRefusal('request-format', e.message, { cause: e });
      throw e;
    }
    const at = now();
    const { verified, uvm } = verifySevSnpVmEvidence(parsed, { amd: amdTrust, uvmRootFingerprints: uvmRoots, now: at });
    const claims = claimsFromReport(verified.report, {
      product: verified.product,
      // x-ms-runtime carries JSON runtime data only; binary runtime data is bound through REPORT_DATA alone.
      ...(parsed.runtimeDataType === 'JSON' ? { runtime: parsed.runtimeJson } : {}),
      ...(uvm ? { uvmEndorsement: { launchMeasurement: uvm.launchMeasurement, guestSvn: uvm.guestSvn } } : {}),
      ...(parsed.nonce !== undefined ? { nonce: parsed.nonce } : {}),
      policyHash: hash,
    });
    await issueToken(res, claims, at, fault);
  }

  // expired-token: issued 9 h ago, so it expired an hour ago.
  const issuedAt = (at: Date, fault?: Fault): number => Math.floor(at.getTime() / 1000) - (fault?.kind === 'expired-token' ? TOKEN_LIFETIME_SECONDS + 3600 : 0);
  const issuerFor = (fault?: Fault): string => (fault?.kind === 'wrong-authority' ? WRONG_AUTHORITY : origin);

  /** Signs `claims` as this MAA's token issued at `at` (with the token faults applied), records it and answers it. */
  async function issueToken(res: ServerResponse, claims: Record<string, unknown>, at: Date, fault?: Fault): Promise<void> {
    const iat = issuedAt(at, fault);
    const issuer = issuerFor(fault);
    let token = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', jku: `${issuer}/certs`, kid: key.kid, typ: 'JWT' })
      .setIssuer(issuer)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + TOKEN_LIFETIME_SECONDS)
      .setJti(randomBytes(32).toString('hex'))
      .sign(key.privateKey);
    if (fault?.kind === 'tampered-jws') token = tamperJwsSignature(token);
    issuedTokens.push(token);
    send(res, 200, { token });
  }

  const vtpmCas = parseVtpmCaPems(opts.trustedVtpmCaPem ?? []);
  const intelTrust = new IntelTrustStore({ extraRootsPem: opts.trustedIntelRootPem ?? [] });

  /** POST /attest/AzureGuest (azure-guest.ts): same api-version, faults and signing key as SevSnpVm. */
  async function attestAzureGuest(req: IncomingMessage, url: URL, res: ServerResponse, fault?: Fault): Promise<void> {
    requireApiVersion(url, SUPPORTED_API_VERSIONS);
    const body = parseBody(await readBody(req));
    const at = now();
    const { token, jwt } = await answerAzureGuest(body, { amd: amdTrust, intel: intelTrust, vtpmCas, now: at }, {
      key,
      issuer: issuerFor(fault),
      iat: issuedAt(at, fault),
      lifetimeSeconds: TOKEN_LIFETIME_SECONDS,
      jti: randomBytes(32).toString('hex'),
      policyHash: hash,
      ...(fault?.kind === 'tampered-jws' ? { mutate: tamperJwsSignature } : {}),
    });
    issuedTokens.push(jwt);
    send(res, 200, { token });
  }

  /**
   * POST /attest/TdxVm (MAA's TDX platform endpoint): the TD quote verified with src/tdx (Intel's pinned root
   * plus trustedIntelRootPem), REPORTDATA[0:32] = sha256(runtimeData.data), then the TDX EAT profile's claims
   * at the top level with the JSON runtime data as x-ms-runtime. No vTPM, no envelope: a plain token.
   */
  async function attestTdxVm(req: IncomingMessage, url: URL, res: ServerResponse, fault?: Fault): Promise<void> {
    requireApiVersion(url, TDX_VM_API_VERSIONS);
    let parsed: ReturnType<typeof parseTdxVmRequest>;
    try {
      parsed = parseTdxVmRequest(parseBody(await readBody(req)));
    } catch (e) {
      if (e instanceof InvalidInputError) throw new MaaEmulatorRefusal('request-format', e.message, { cause: e });
      throw e;
    }
    const at = now();
    let verified: VerifiedTdQuote;
    try {
      verified = verifyTdQuote(parsed.quote, { trust: intelTrust, now: at });
      const expected = createHash('sha256').update(parsed.runtimeData).digest();
      if (!verified.quote.body.reportData.subarray(0, 32).equals(expected)) {
        throw new VerificationError('runtime-data-binding', 'runtime-data-binding: the quote\'s REPORTDATA[0:32] is not sha256(runtimeData.data)');
      }
    } catch (e) {
      if (e instanceof VerificationError) throw new MaaEmulatorRefusal(e.step, e.message, { cause: e });
      throw e;
    }
    const claims = tdxTeeClaims(verified, parsed.runtimeJson ?? {});
    if (!parsed.runtimeJson) delete claims['x-ms-runtime'];
    await issueToken(res, { ...claims, 'x-ms-policy-hash': hash, 'x-ms-ver': '1.0', eat_profile: 'https://aka.ms/maa-eat-profile-tdxvm', intuse: 'generic' }, at, fault);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', origin);
    // Azure routes are case-insensitive.
    const route = url.pathname.replace(/\/+$/, '').toLowerCase();
    const method = req.method ?? 'GET';
    const name = route === '/attest/sevsnpvm' || route === '/attest/azureguest' || route === '/attest/tdxvm' ? 'attest' : route === '/certs' ? 'certs' : route === '/.well-known/openid-configuration' ? 'openid' : 'other';
    const fault = faults.take(name);
    if (fault && serveGenericFault(fault, res, (status) => ({ error: { code: status === 429 ? 'TooManyRequests' : 'InternalServerError', message: `injected fault: HTTP ${status}` } }))) {
      req.resume();
      return;
    }
    try {
      if (route === '/attest/sevsnpvm') {
        if (method !== 'POST') return sendError(res, 405, 'MethodNotAllowed', `${method} is not allowed on ${url.pathname}; use POST`);
        return await attest(req, url, res, fault);
      }
      if (route === '/attest/tdxvm') {
        if (method !== 'POST') return sendError(res, 405, 'MethodNotAllowed', `${method} is not allowed on ${url.pathname}; use POST`);
        return await attestTdxVm(req, url, res, fault);
      }
      if (route === '/attest/azureguest') {
        if (method !== 'POST') return sendError(res, 405, 'MethodNotAllowed', `${method} is not allowed on ${url.pathname}; use POST`);
        return await attestAzureGuest(req, url, res, fault);
      }
      if (route === '/certs' || route === '/.well-known/openid-configuration') {
        if (method !== 'GET' && method !== 'HEAD') return sendError(res, 405, 'MethodNotAllowed', `${method} is not allowed on ${url.pathname}; use GET`);
        if (route === '/certs') return send(res, 200, jwks);
        return send(res, 200, {
          issuer: origin,
          jwks_uri: `${origin}/certs`,
          response_types_supported: ['token', 'none'],
          id_token_signing_alg_values_supported: ['RS256'],
          revocation_endpoint: `${origin}/revocations`,
          claims_supported: ['iss', 'iat', 'nbf', 'exp', 'jti', ...SEVSNPVM_CLAIM_NAMES],
        });
      }
      return sendError(res, 404, 'NotFound', `no route ${method} ${url.pathname}`);
    } catch (e) {
      if (e instanceof MaaEmulatorRefusal) return send(res, e.httpStatus, e.body());
      return sendError(res, 500, 'InternalServerError', `MAA emulator failed: ${(e as Error).message}`);
    }
  }

  const server = https.createServer(loopbackServerTls(opts.ca), (req, res) => {
    if (refuseForeignRequest(req, res, guard, (code, message) => ({ error: { code, message } }))) return;
    if (handleFaultAdmin(req, res, faults)) return;
    void handle(req, res);
  });
  const port = await listenLoopback(server, opts.port);
  origin = `https://127.0.0.1:${port}`;

  return {
    url: origin,
    endpoint: `127.0.0.1:${port}`,
    issuer: origin,
    jwks,
    signingKey: { kid: key.kid, publicKey: key.publicKey, certPem: key.certPem },
    faults,
    issuedTokens,
    close: () => closeServer(server),
  };
}
