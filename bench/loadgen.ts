/**
 * The load generator, run in its own process (forked by run.ts) so that generating load does not
 * share an event loop with the servers being measured. Closed loop: `concurrency` workers, each
 * sending its next request as soon as the previous one is answered, over keep-alive connections.
 * One "request" may be a sequence of steps (the release floor is an MAA call then a vault call).
 */
import * as http from 'node:http';
import * as https from 'node:https';
import * as tls from 'node:tls';
import { KeyProviderClient } from '../src/grpc/client';

export interface Step {
  /** An HTTP(S) URL; ignored for a gRPC step. */
  url: string;
  /** A gRPC UnWrapKey of this annotation packet (base64) at `target`, instead of an HTTP request. */
  grpcUnwrap?: { target: string; packetBase64: string };
  method: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
}

export interface Job {
  id: number;
  steps: Step[];
  concurrency: number;
  /** Run for this long... */
  durationMs?: number;
  /** ...or this many requests in total. */
  count?: number;
  /** Extra CA (PEM) for HTTPS steps. */
  caPem?: string;
  /** Run this long first on the same connections, without recording (added to durationMs). */
  warmupMs?: number;
}

export interface JobResult {
  id: number;
  ok: number;
  errors: number;
  errorSamples: string[];
  elapsedMs: number;
  /** Latency of every successful request, ms, sorted ascending. */
  latenciesMs: number[];
}

function send(step: Step, agents: { http: http.Agent; https: https.Agent }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(step.url);
    const isHttps = url.protocol === 'https:';
    const body = step.body === undefined ? undefined : Buffer.from(step.body, 'utf8');
    const headers: Record<string, string> = { ...(step.headers ?? {}) };
    if (body) headers['content-length'] = String(body.length);
    const req = (isHttps ? https : http).request(url, { method: step.method, headers, agent: isHttps ? agents.https : agents.http }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export async function runJob(job: Job): Promise<JobResult> {
  // A secure context, not a `ca` option: https.Agent would stringify the CA list per request.
  const secureContext = job.caPem ? tls.createSecureContext({ ca: [...tls.rootCertificates, job.caPem] }) : undefined;
  const agents = {
    http: new http.Agent({ keepAlive: true, maxSockets: job.concurrency }),
    https: new https.Agent({ keepAlive: true, maxSockets: job.concurrency, ...(secureContext ? { secureContext } : {}) }),
  };
  // One channel per job (HTTP/2: the workers' calls share its connection, as ocicrypt's would not
  // need to; a closed loop at concurrency 1 is one call at a time either way).
  const grpcTarget = job.steps.find((s) => s.grpcUnwrap)?.grpcUnwrap?.target;
  const grpcClient = grpcTarget ? new KeyProviderClient(grpcTarget) : undefined;
  const latencies: number[] = [];
  const errorSamples: string[] = [];
  let errors = 0;
  let started = 0;
  const warmupEnd = performance.now() + (job.warmupMs ?? 0);
  const t0 = warmupEnd;
  const deadline = job.durationMs !== undefined ? warmupEnd + job.durationMs : Infinity;
  const more = () => (job.count !== undefined ? started < job.count : performance.now() < deadline);

  const worker = async () => {
    while (more()) {
      const s = performance.now();
      const record = s >= warmupEnd;
      if (record || job.count !== undefined) started++;
      try {
        for (const step of job.steps) {
          if (step.grpcUnwrap && grpcClient) {
            await grpcClient.unwrapKey(Buffer.from(step.grpcUnwrap.packetBase64, 'base64'));
            continue;
          }
          const r = await send(step, agents);
          if (r.status < 200 || r.status >= 300) throw new Error(`HTTP ${r.status} from ${new URL(step.url).pathname}: ${r.body.slice(0, 200)}`);
        }
        if (record) latencies.push(performance.now() - s);
      } catch (e) {
        if (!record) continue;
        errors++;
        if (errorSamples.length < 5) errorSamples.push((e as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, worker));
  const elapsedMs = performance.now() - t0;
  agents.http.destroy();
  agents.https.destroy();
  grpcClient?.close();
  latencies.sort((a, b) => a - b);
  return { id: job.id, ok: latencies.length, errors, errorSamples, elapsedMs, latenciesMs: latencies };
}

if (require.main === module && process.send) {
  process.on('message', (job: Job) => {
    runJob(job).then(
      (r) => process.send?.(r),
      (e: unknown) => process.send?.({ id: job.id, ok: 0, errors: 1, errorSamples: [String(e)], elapsedMs: 0, latenciesMs: [] }),
    );
  });
}
