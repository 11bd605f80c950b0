/**
 * The sidecar's express app: routes, body handling and error mapping. It knows nothing about
 * devices or crypto; it calls an AttestationService.
 */
import express, { type Express } from 'express';
import { reportDataFor } from '../snp/report';
import type { AttestationService, KeyReleaseService } from './attestation';
import { badRequest, errorHandler, HttpError } from './http-errors';
import type { Logger } from './logger';
import { jsonBody, requireJson, requiredString, runtimeData } from './request';

export const BODY_LIMIT = '1mb';

export interface AppDeps {
  attestation: AttestationService;
  release: KeyReleaseService;
  logger: Logger;
  /** False until start-up work (device probe, collateral) is done. */
  isReady?: () => boolean;
}

export function createApp(deps: AppDeps): Express {
  const { attestation, logger } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Any Content-Type: parse as text, then JSON ourselves.
  app.use(express.text({ type: () => true, limit: BODY_LIMIT }));

  app.get('/status', (_req, res) => {
    if (deps.isReady && !deps.isReady()) {
      res.status(503).json({ message: 'Status NOT OK' });
      return;
    }
    res.json({ message: 'Status OK' });
  });

  app.post('/attest/raw', async (req, res) => {
    const data = runtimeData(jsonBody(req));
    const report = await attestation.rawReport(reportDataFor(data));
    res.json({ report: report.toString('hex') });
  });

  app.post('/attest/combined', async (req, res) => {
    const data = runtimeData(jsonBody(req));
    const c = await attestation.combined(reportDataFor(data));
    res.json({
      endorsed_tcb: c.chain.tcbm.toString(16).padStart(16, '0'),
      endorsements: Buffer.from(joinPem(c.chain.vcekPem, c.chain.chainPem), 'utf8').toString('base64'),
      evidence: c.report.toString('base64'),
      uvm_endorsements: c.uvmEndorsementsBase64,
    });
  });

  app.post('/attest/maa', async (req, res) => {
    const body = jsonBody(req);
    const endpoint = requiredString(body, 'maa_endpoint');
    const data = runtimeData(body);
    requireJson(data, 'runtime_data');
    res.json({ token: await attestation.maaToken(endpoint.trim(), data) });
  });

  app.post('/key/release', async (req, res) => {
    const body = jsonBody(req);
    const maaEndpoint = requiredString(body, 'maa_endpoint').trim();
    const akvEndpoint = requiredString(body, 'akv_endpoint').trim();
    const kid = requiredString(body, 'kid').trim();
    const token = body.access_token;
    if (token !== undefined && token !== null && typeof token !== 'string') throw badRequest('access_token must be a string', 'ERR_FIELD_TYPE');
    const accessToken = typeof token === 'string' && token.trim() !== '' ? token.trim() : undefined;
    const released = await deps.release.release({ maaEndpoint, akvEndpoint, kid, ...(accessToken ? { accessToken } : {}) });
    res.json({ key: JSON.stringify(released.jwk) });
  });

  app.use((req, _res, next) => {
    next(new HttpError(404, 'ERR_NOT_FOUND', `no route ${req.method} ${req.path}`));
  });
  app.use(errorHandler(logger));
  return app;
}

function joinPem(a: string, b: string): string {
  const first = a.endsWith('\n') ? a : a + '\n';
  return first + b;
}
