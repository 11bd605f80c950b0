/** A scripted HTTPS server on 127.0.0.1 (local CA) that records requests: the MAA stand-in for client tests. */
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { createLocalCa, type IssuedCertificate } from '../../src/asn1/x509';
import { createHttpsFetch, type HttpsFetch } from '../../src/common/https-fetch';
import { loopbackServerTls } from '../../src/emulators/ca';

export interface Recorded {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface Reply {
  status: number;
  body?: string | object;
  headers?: Record<string, string>;
}

export type Handler = (req: Recorded) => Reply;

let ca: IssuedCertificate | undefined;
export function localCa(): IssuedCertificate {
  ca ??= createLocalCa();
  return ca;
}

export function trustingFetch(): HttpsFetch {
  return createHttpsFetch({ extraCaPem: [localCa().certPem], keepAlive: false });
}

export interface Loopback {
  endpoint: string;
  url: string;
  requests: Recorded[];
  handler: Handler;
  close(): Promise<void>;
}

export async function startLoopback(handler: Handler): Promise<Loopback> {
  const requests: Recorded[] = [];
  const state: Loopback = { endpoint: '', url: '', requests, handler, close: async () => undefined };
  const server = https.createServer(loopbackServerTls(localCa()), (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rec: Recorded = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      requests.push(rec);
      const reply = state.handler(rec);
      const body = reply.body === undefined ? '' : typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body);
      res.writeHead(reply.status, { 'content-type': typeof reply.body === 'object' ? 'application/json' : 'text/plain', ...reply.headers });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  state.endpoint = `127.0.0.1:${port}`;
  state.url = `https://127.0.0.1:${port}`;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}

/** A port that was just free: nothing listens there. */
export async function closedPort(): Promise<number> {
  const server = https.createServer(loopbackServerTls(localCa()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
