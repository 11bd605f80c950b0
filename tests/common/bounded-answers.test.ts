/**
 * The outbound client and the bounded reader against malformed answers (issue 10 item 1): a bad
 * status line, an endless or oversized body, invalid UTF-8 become typed errors, never a throw from
 * a socket callback (which used to end the process). Collateral follows no redirect (item 5).
 */
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { PipelineRequest } from '@azure/core-rest-pipeline';
import { createPipelineRequest } from '@azure/core-rest-pipeline';
import { createSdkHttpClient } from '../../src/akv/sdk-http-client';
import { AmdKdsSource } from '../../src/certs/sources/amd-kds';
import { MalformedAnswerError, readBounded } from '../../src/common/bounded-body';
import { UpstreamError } from '../../src/common/errors';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { hostileCases, startHostileServer, type HostileServer } from '../hardening/hostile-upstream';

const caseNamed = (name: string) => {
  const c = hostileCases('{}').find((x) => x.name === name);
  if (!c) throw new Error(`no case ${name}`);
  return c;
};

describe('malformed answers through createHttpsFetch', () => {
  const fetch = createHttpsFetch({ keepAlive: false });
  const servers: HostileServer[] = [];
  afterAll(async () => {
    fetch.destroy();
    await Promise.all(servers.map((s) => s.close()));
  });
  const serve = async (name: string) => {
    const s = await startHostileServer([caseNamed(name)]);
    servers.push(s);
    return s;
  };

  it.each(['205 with a body', '999 Weird', 'control bytes in status text'])('%s: a typed error (or a usable Response), and the process lives', async (name) => {
    const s = await serve(name);
    const outcome: Error | { status: number; body: string } = await fetch(`${s.url}/x`).then(
      async (res) => ({ status: res.status, body: (await readBounded(res, { upstream: 'test', what: 'x' })).toString() }),
      (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
    );
    if (outcome instanceof Error) {
      expect(outcome).toBeInstanceOf(MalformedAnswerError);
      expect((outcome as MalformedAnswerError).status).toBe(502);
    } else {
      // 205 carries no body by definition; a status text is never needed.
      expect(outcome.status === 205 || outcome.status === 200).toBe(true);
      expect(outcome.body.length).toBeLessThanOrEqual(2);
    }
  });

  it.each(['endless chunked body', '100 MB declared, 1.5 MB sent', '2 MB body with its length', 'Content-Length longer than the body'])(
    '%s: UpstreamError ERR_UPSTREAM_MALFORMED from the reader',
    async (name) => {
      const s = await serve(name);
      const err = await fetch(`${s.url}/x`).then((res) => readBounded(res, { upstream: 'maa', what: 'GET x' })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as { code?: string }).code).toBe('ERR_UPSTREAM_MALFORMED');
      expect((err as Error).message.length).toBeLessThan(300);
    },
  );

  it('the Azure SDK client bounds bodies and refuses invalid UTF-8, naming its upstream', async () => {
    const client = createSdkHttpClient(fetch, { upstream: 'vault' });
    for (const name of ['endless close-delimited body', 'invalid UTF-8 body', '999 Weird']) {
      const s = await serve(name);
      const req: PipelineRequest = createPipelineRequest({ url: `${s.url}/keys/k/release`, method: 'POST' });
      const err = await client.sendRequest(req).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UpstreamError);
      expect(err).toMatchObject({ upstream: 'vault', code: 'ERR_UPSTREAM_MALFORMED', status: 502 });
    }
  });
});

describe('malformed answers through the lean request path (createHttpsFetch().request)', () => {
  const client = createHttpsFetch({ keepAlive: false });
  const servers: HostileServer[] = [];
  afterAll(async () => {
    client.destroy();
    await Promise.all(servers.map((s) => s.close()));
  });
  const ask = async (name: string, timeoutMs?: number): Promise<Error | { status: number; body: Buffer }> => {
    const s = await startHostileServer([caseNamed(name)]);
    servers.push(s);
    const init = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}', ...(timeoutMs !== undefined ? { timeoutMs } : {}) };
    return client.request(new URL(`${s.url}/keys/k/release`), init).then(
      async (a) => ({ status: a.status, body: await a.body() }),
      (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
    ).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
  };

  it.each(['999 Weird', 'status 099', 'two-digit status', 'LF-only line ends with a bad status', '100 Continue then 999'])('%s: refused as malformed or by the HTTP parser', async (name) => {
    const outcome = await ask(name);
    expect(outcome).toBeInstanceOf(Error);
  });

  it.each(['endless chunked body', 'endless close-delimited body', 'endless 500 error body', '100 MB declared, 1.5 MB sent', '2 MB body with its length'])(
    '%s: MalformedAnswerError (502) at the byte cap, never the whole body',
    async (name) => {
      const outcome = await ask(name);
      expect(outcome).toBeInstanceOf(MalformedAnswerError);
      expect((outcome as MalformedAnswerError).status).toBe(502);
      expect((outcome as Error).message).toMatch(/limit/);
    },
  );

  it.each(['Content-Length longer than the body', 'reset mid-body', 'chunked body cut off'])('%s: a cut-off body is MalformedAnswerError or a transport error', async (name) => {
    const outcome = await ask(name);
    expect(outcome).toBeInstanceOf(Error);
    if (outcome instanceof MalformedAnswerError) expect(outcome.message).toMatch(/cut off/);
  });

  it('a well-formed answer: status, headers and the whole body', async () => {
    const outcome = await ask('JSON null');
    expect(outcome).toEqual({ status: 200, body: Buffer.from('null') });
  });

  it('an upstream that never answers fails the attempt at timeoutMs with a TimeoutError', async () => {
    const held = new Set<net.Socket>();
    const silent = net.createServer((sock) => void held.add(sock));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const url = new URL(`http://127.0.0.1:${(silent.address() as AddressInfo).port}/x`);
      const err = await client.request(url, { method: 'GET', headers: {}, timeoutMs: 50 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ name: 'TimeoutError' });
    } finally {
      for (const sock of held) sock.destroy();
      await new Promise((r) => silent.close(r));
    }
  });
});

describe('collateral redirects', () => {
  it('follows no redirect (to http or another host), even through global fetch', async () => {
    let elsewhere = 0;
    const other = http.createServer((_q, r) => {
      elsewhere++;
      r.end('x');
    });
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const otherPort = (other.address() as AddressInfo).port;
    const kds = http.createServer((_q, r) => {
      r.writeHead(302, { location: `http://localhost:${otherPort}/vcek` }).end();
    });
    await new Promise<void>((r) => kds.listen(0, '127.0.0.1', r));
    try {
      const source = new AmdKdsSource({ baseUrl: `http://127.0.0.1:${(kds.address() as AddressInfo).port}`, retries: 0 });
      const err = await source.fetch({ product: 'Milan', chipId: Buffer.alloc(64, 1), tcb: 0n }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UpstreamError);
      expect((err as Error).message).toMatch(/answered 302 \(redirects are not followed\)/);
      expect(elsewhere).toBe(0);
    } finally {
      await new Promise((r) => kds.close(r));
      await new Promise((r) => other.close(r));
    }
  });
});
