/**
 * The sidecar's express app: routes, body handling and error mapping. It knows nothing about
 * devices or crypto; it calls an AttestationService and a KeyReleaseService.
 *
 * Order of work for the upstream-facing routes: validate the body (400) → allowlists (403) → a
 * release slot (429) → the work itself, under one deadline (504) that every upstream call shares.
 * Nothing leaves the box for an endpoint that is not allowlisted.
 */
import express, { type Express, type Request } from 'express';
import { parseEndpoint } from '../common/endpoint';
import { reportDataFor } from '../snp/report';
import type { EndpointAllowlist, KidAllowlist } from './allowlist';
import type { AttestationService, KeyReleaseService } from './attestation';
import { hostGuardPolicy, type HostGuardPolicy } from '../common/host-guard';
import { callerGuard, hostGuard } from './guard';
import { checkRuntimeKeys, type AttestMaaKeys } from './runtime-keys';
import { badRequest, errorHandler, HttpError } from './http-errors';
import type { Semaphore } from './limits';
import type { Logger } from './logger';
import { PROMETHEUS_CONTENT_TYPE } from './metrics';
import { UpstreamHealth, type SidecarMetrics } from './observe';
import { DeadlineError, outcomeOf, ReleaseGate, withDeadline } from './release-gate';
import { jsonBody, requireJson, requiredString, runtimeData } from './request';
import { DEFAULT_LIMITS } from './config';

/** Default request body limit (config.limits.maxBodyBytes). */
export const BODY_LIMIT = DEFAULT_LIMITS.maxBodyBytes;

export interface AppDeps {
  attestation: AttestationService;
  release: KeyReleaseService;
  logger: Logger;
  /** False until start-up work (device probe, collateral) is done. */
  isReady?: () => boolean;
  /** True once shutdown began: answers carry `Connection: close`. */
  isClosing?: () => boolean;
  maaAllowlist?: EndpointAllowlist;
  akvAllowlist?: EndpointAllowlist;
  kidAllowlist?: KidAllowlist;
  /** With a kid allowlist, whether the attestation routes serve runtime data holding keys (default refuse; runtime-keys.ts). */
  attestMaaKeys?: AttestMaaKeys;
  /** Host names and Origins served besides loopback (default: loopback names, no Origin). */
  hostGuard?: HostGuardPolicy;
  apiSecret?: string;
  /** Deadline for one request's upstream work. */
  deadlineMs?: number;
  /** Slots for /attest/maa and /key/release; beyond them 429. */
  releaseSlots?: Semaphore;
  maxJsonDepth?: number;
  /** Request body size limit in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  metrics?: SidecarMetrics;
  health?: UpstreamHealth;
  /** The release path shared with the gRPC key provider; built from the fields above when absent. */
  gate?: ReleaseGate;
}

/** Routes by name, for metric labels (never the raw path: a scanner must not mint new series). */
const ROUTES = new Set(['GET /status', 'GET /metrics', 'POST /attest/raw', 'POST /attest/combined', 'POST /attest/maa', 'POST /key/release']);

function routeLabel(req: Request): string {
  const r = `${req.method} ${req.path}`;
  return ROUTES.has(r) ? r : 'other';
}

export { DeadlineError, outcomeOf };

export function createApp(deps: AppDeps): Express {
  const { attestation, logger } = deps;
  const gate =
    deps.gate ??
    new ReleaseGate({
      release: deps.release,
      logger,
      ...(deps.metrics ? { metrics: deps.metrics } : {}),
      ...(deps.maaAllowlist ? { maaAllowlist: deps.maaAllowlist } : {}),
      ...(deps.akvAllowlist ? { akvAllowlist: deps.akvAllowlist } : {}),
      ...(deps.kidAllowlist ? { kidAllowlist: deps.kidAllowlist } : {}),
      ...(deps.deadlineMs !== undefined ? { deadlineMs: deps.deadlineMs } : {}),
      ...(deps.releaseSlots ? { releaseSlots: deps.releaseSlots } : {}),
    });
  const { metrics, maaAllow, deadlineMs, slots } = gate;
  const health = deps.health ?? new UpstreamHealth();
  const maxDepth = deps.maxJsonDepth ?? DEFAULT_LIMITS.maxJsonDepth;
  const body = (req: Request) => jsonBody(req, maxDepth);

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', false);

  app.use((req, res, next) => {
    const t0 = performance.now();
    res.once('finish', () => {
      const labels = { route: routeLabel(req), outcome: outcomeOf(res.statusCode) };
      metrics.requests.inc({ ...labels, status: String(res.statusCode) });
      metrics.requestSeconds.observe(labels, (performance.now() - t0) / 1000);
    });
    if (deps.isClosing?.()) res.set('connection', 'close');
    next();
  });
  app.use(hostGuard(deps.hostGuard ?? hostGuardPolicy(), (reason) => metrics.refusals.inc({ reason })));
  app.use(callerGuard({ apiSecret: deps.apiSecret, onRefused: (reason) => metrics.refusals.inc({ reason }) }));
  // Any Content-Type: parse as text, then JSON ourselves.
  app.use(express.text({ type: () => true, limit: deps.maxBodyBytes ?? BODY_LIMIT }));

  app.get('/status', (_req, res) => {
    if (deps.isReady && !deps.isReady()) {
      res.status(503).json({ message: 'Status NOT OK' });
      return;
    }
    const upstreams = health.snapshot();
    // "message" is what reference clients read; details appear once an upstream has been used.
    const platform = { ...(attestation.platform ? { platform: attestation.platform } : {}), ...(attestation.tee ? { tee: attestation.tee } : {}) };
    // A CVM's TPM that stopped answering leaves the sidecar unable to serve anything: not OK until it answers again.
    if (upstreams.tpm && !upstreams.tpm.healthy) {
      res.status(503).json({ message: 'Status NOT OK', ...platform, details: { evidence: attestation.describe(), upstreams } });
      return;
    }
    res.json(Object.keys(upstreams).length ? { message: 'Status OK', ...platform, details: { evidence: attestation.describe(), upstreams } } : { message: 'Status OK', ...platform });
  });

  app.get('/metrics', (_req, res) => {
    res.set('content-type', PROMETHEUS_CONTENT_TYPE).send(metrics.registry.render());
  });

  const refuse = (e: unknown, reason: string): never => gate.refuse(e, reason);
  /** With a kid allowlist, no route may bind caller-chosen wrapping keys (see runtime-keys.ts). */
  const guardRuntimeKeys = (data: Buffer, use: 'token' | 'evidence'): void => {
    if (!deps.kidAllowlist || deps.attestMaaKeys === 'allow') return;
    try {
      checkRuntimeKeys(data, use);
    } catch (e) {
      refuse(e, 'runtime_keys');
    }
  };

  app.post('/attest/raw', async (req, res) => {
    const data = runtimeData(body(req));
    guardRuntimeKeys(data, 'evidence');
    const r = await withDeadline(deadlineMs, () => attestation.rawReport(reportDataFor(data)));
    // Azure TDX CVM: the TD quote and the HCL report (its TDREPORT is what the quote signs), both hex.
    if (r.tdQuote) {
      res.json({ td_quote: r.tdQuote.toString('hex'), hcl_report: (r.hclReport ?? Buffer.alloc(0)).toString('hex') });
      return;
    }
    // Azure CVM: the HCL report too (its claims' user-data is sha256(runtime_data) + zeros; REPORT_DATA = sha256(claims)).
    res.json({ report: r.report.toString('hex'), ...(r.hclReport ? { hcl_report: r.hclReport.toString('hex') } : {}) });
  });

  app.post('/attest/combined', async (req, res) => {
    const data = runtimeData(body(req));
    guardRuntimeKeys(data, 'evidence');
    const c = await withDeadline(deadlineMs, () => attestation.combined(reportDataFor(data)));
    if (c.tdQuote || !c.chain) {
      // Azure TDX CVM: the TD quote (its PCK chain inside) and the HCL report, both base64.
      res.json({ td_quote: (c.tdQuote ?? Buffer.alloc(0)).toString('base64'), hcl_evidence: (c.hclReport ?? Buffer.alloc(0)).toString('base64'), uvm_endorsements: c.uvmEndorsementsBase64 });
      return;
    }
    res.json({
      endorsed_tcb: c.chain.tcbm.toString(16).padStart(16, '0'),
      endorsements: Buffer.from(joinPem(c.chain.vcekPem, c.chain.chainPem), 'utf8').toString('base64'),
      evidence: c.report.toString('base64'),
      ...(c.hclReport ? { hcl_evidence: c.hclReport.toString('base64') } : {}),
      uvm_endorsements: c.uvmEndorsementsBase64,
    });
  });

  app.post('/attest/maa', async (req, res) => {
    const b = body(req);
    const raw = requiredString(b, 'maa_endpoint');
    const data = runtimeData(b);
    requireJson(data, 'runtime_data');
    // Parsed once (400 for anything but an https DNS name or IP literal, naming the field): the
    // allowlist approves and MAA dials this value.
    const endpoint = parseEndpoint('maa', raw);
    // Optional: "TdxVm" asks for MAA's TDX platform endpoint on a TDX CVM (default: the platform's own).
    const apiRaw = b.maa_api;
    if (apiRaw !== undefined && apiRaw !== null && apiRaw !== 'TdxVm' && apiRaw !== 'default') {
      throw badRequest('maa_api must be "default" or "TdxVm"', typeof apiRaw === 'string' ? 'ERR_BAD_REQUEST' : 'ERR_FIELD_TYPE');
    }
    const api = apiRaw === 'TdxVm' ? 'TdxVm' : 'default';
    guardRuntimeKeys(data, 'token');
    try {
      maaAllow.check(endpoint);
    } catch (e) {
      refuse(e, 'maa_endpoint');
    }
    // The deadline covers the wait for a slot as well as the work.
    const token = await withDeadline(deadlineMs, (signal) => slots.run(() => attestation.maaToken(endpoint, data, signal, { api }), signal));
    res.json({ token });
  });

  app.post('/key/release', async (req, res) => {
    const b = body(req);
    const maaEndpoint = requiredString(b, 'maa_endpoint');
    const akvEndpoint = requiredString(b, 'akv_endpoint');
    const kid = requiredString(b, 'kid');
    const token = b.access_token;
    if (token !== undefined && token !== null && typeof token !== 'string') throw badRequest('access_token must be a string', 'ERR_FIELD_TYPE');
    const accessToken = typeof token === 'string' && token.trim() !== '' ? token.trim() : undefined;
    await gate.release({ maaEndpoint, akvEndpoint, kid, ...(accessToken ? { accessToken } : {}) }, (released) => {
      res.json({ key: JSON.stringify(released.jwk) });
    });
  });

  app.use((req, _res, next) => {
    next(new HttpError('ERR_NOT_FOUND', `no route ${req.method} ${req.path.slice(0, 200)}`));
  });
  app.use(errorHandler(logger));
  return app;
}

function joinPem(a: string, b: string): string {
  const first = a.endsWith('\n') ? a : a + '\n';
  return first + b;
}
