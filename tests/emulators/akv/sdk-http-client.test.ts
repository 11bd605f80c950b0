/** createSdkHttpClient: the Azure pipeline's HttpClient contract on top of a FetchLike, on loopback. */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHttpHeaders, createPipelineRequest } from '@azure/core-rest-pipeline';
import { createHttpsFetch } from '../../../src/common/https-fetch';
import { createSdkHttpClient } from '../../../src/akv/sdk-http-client';

let server: http.Server;
let base: string;
const fetch = createHttpsFetch();
const client = createSdkHttpClient(fetch);
let seen: { method?: string; headers: http.IncomingHttpHeaders; body: string }[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      if (req.url === '/slow') return void setTimeout(() => res.end('late'), 5000).unref();
      res.writeHead(req.url === '/missing' ? 404 : 200, { 'Content-Type': 'text/plain', 'X-Ms-Request-Id': 'abc' });
      res.end(req.url === '/missing' ? 'no such thing' : 'hello');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterEach(() => {
  seen = [];
});

afterAll(async () => {
  fetch.destroy();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

test('sends method, headers and a string body; returns status, case-insensitive headers and text', async () => {
  const req = createPipelineRequest({
    url: `${base}/a`,
    method: 'PUT',
    headers: createHttpHeaders({ 'Content-Type': 'application/json', 'x-custom': 'v1' }),
    body: '{"a":1}',
  });
  const res = await client.sendRequest(req);
  expect(res.status).toBe(200);
  expect(res.bodyAsText).toBe('hello');
  expect(res.headers.get('x-ms-request-id')).toBe('abc');
  expect(res.headers.get('X-MS-REQUEST-ID')).toBe('abc');
  expect(res.headers.has('content-type')).toBe(true);
  expect(res.request).toBe(req);
  expect(seen[0]).toMatchObject({ method: 'PUT', body: '{"a":1}' });
  expect(seen[0].headers['x-custom']).toBe('v1');
  expect(seen[0].headers['content-type']).toBe('application/json');
});

test('Uint8Array bodies are sent byte for byte; error statuses come back as responses', async () => {
  const res = await client.sendRequest(
    createPipelineRequest({ url: `${base}/missing`, method: 'POST', body: new Uint8Array([0x68, 0x69]) }),
  );
  expect(res.status).toBe(404);
  expect(res.bodyAsText).toBe('no such thing');
  expect(seen[0].body).toBe('hi');
});

test('streamed responses when the status is listed', async () => {
  const req = createPipelineRequest({ url: `${base}/a`, method: 'GET', streamResponseStatusCodes: new Set([200]) });
  const res = await client.sendRequest(req);
  expect(res.bodyAsText).toBeUndefined();
  const chunks: Buffer[] = [];
  for await (const c of res.readableStreamBody!) chunks.push(Buffer.from(c as Uint8Array));
  expect(Buffer.concat(chunks).toString()).toBe('hello');
});

test('timeout and abort signal end the request with an AbortError', async () => {
  const timed = client.sendRequest(createPipelineRequest({ url: `${base}/slow`, method: 'GET', timeout: 100 }));
  await expect(timed).rejects.toMatchObject({ name: 'AbortError', message: expect.stringMatching(/timed out after 100 ms/) });
  const ac = new AbortController();
  const aborted = client.sendRequest(createPipelineRequest({ url: `${base}/slow`, method: 'GET', abortSignal: ac.signal }));
  setTimeout(() => ac.abort(), 50);
  await expect(aborted).rejects.toMatchObject({ name: 'AbortError' });
});

test('network errors keep their system code so the SDK retry policy recognises them', async () => {
  const closed = http.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  await expect(client.sendRequest(createPipelineRequest({ url: `http://127.0.0.1:${port}/`, method: 'GET' }))).rejects.toMatchObject({
    code: 'ECONNREFUSED',
  });
});
