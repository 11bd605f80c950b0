/**
 * `skr serve --server-type grpc` (simulated platform) against hostile callers: malformed protobuf,
 * raw HTTP/2 frames no gRPC library would send, messages past the size limit, oversized fields,
 * slow clients that open a connection or a call and stall, callers without the shared secret. After
 * each, the server still answers. Reflection lists both package names.
 */
import * as fs from 'node:fs';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { loadServerConfig } from '../../src/server/config';
import { createLogger } from '../../src/server/logger';
import { startSidecar, type RunningSidecar } from '../../src/server/sidecar';
import { call, ocicryptUnwrapInput, unaryRaw, unwrap } from '../helpers/grpc';

const LIMIT = 64 * 1024;

async function start(extra: { apiSecret?: string } = {}): Promise<{ sidecar: RunningSidecar; dir: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-grpc-hostile-'));
  const base = loadServerConfig({ port: '0', simulate: true, serverType: 'grpc' }, {});
  const config = { ...base, limits: { ...base.limits, maxBodyBytes: LIMIT }, ...extra };
  const sidecar = await startSidecar({
    config,
    logger: createLogger({ silent: true }),
    securityContextDir: dir,
    grpcLimits: { idleTimeoutMs: 400, maxConnectionAgeMs: 800, maxConnectionAgeGraceMs: 400, handshakeTimeoutMs: 400 },
  });
  return { sidecar, dir };
}

/** One gRPC call over a raw HTTP/2 session: headers and DATA exactly as given. */
function rawCall(target: string, headers: http2.OutgoingHttpHeaders, data: Buffer): Promise<{ status?: number; grpcStatus?: string; message?: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${target}`);
    session.on('error', reject);
    const req = session.request({ ':method': 'POST', te: 'trailers', ...headers });
    const out: { status?: number; grpcStatus?: string; message?: string } = {};
    req.on('response', (h) => {
      out.status = Number(h[':status']);
      if (h['grpc-status'] !== undefined) out.grpcStatus = String(h['grpc-status']);
      if (h['grpc-message'] !== undefined) out.message = decodeURIComponent(String(h['grpc-message']));
    });
    req.on('trailers', (t) => {
      if (t['grpc-status'] !== undefined) out.grpcStatus = String(t['grpc-status']);
      if (t['grpc-message'] !== undefined) out.message = decodeURIComponent(String(t['grpc-message']));
    });
    req.on('data', () => undefined);
    req.on('close', () => {
      session.close();
      resolve(out);
    });
    req.end(data);
  });
}

const frame = (msg: Buffer, compressed = 0, claimed = msg.length) => {
  const h = Buffer.alloc(5);
  h[0] = compressed;
  h.writeUInt32BE(claimed, 1);
  return Buffer.concat([h, msg]);
};

describe('gRPC key provider under hostile input', () => {
  let sidecar: RunningSidecar;
  let dir: string;
  let target: string;
  beforeAll(async () => {
    ({ sidecar, dir } = await start());
    target = sidecar.grpc?.target as string;
  }, 30_000);
  afterAll(async () => {
    await sidecar?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  afterEach(async () => {
    // Whatever the test sent, the server still serves.
    expect(await call(target, 'keyprovider', 'SayHello', { name: 'still here' })).toEqual({ ok: true, value: { message: 'Hello still here' } });
  });

  it('serves gRPC only, on the port it was given (url grpc://127.0.0.1:PORT), no HTTP server', () => {
    expect(sidecar.serverType).toBe('grpc');
    expect(sidecar.server).toBeUndefined();
    expect(sidecar.url).toBe(`grpc://${target}`);
    expect(target).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it.each<[string, number[]]>([
    ['a truncated field', [0x0a, 0x10, 0x41]],
    ['field 1 with the wrong wire type', [0x08, 0x01]],
    ['a bad varint', [0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]],
  ])('malformed protobuf (%s): INVALID_ARGUMENT, not grpc-js\'s INTERNAL', async (_what, bytes) => {
    for (const m of ['/keyprovider.KeyProviderService/UnWrapKey', '/key_provider.KeyProviderService/SayHello']) {
      const r = await unaryRaw(target, m, Buffer.from(bytes));
      expect(r).toEqual({ ok: false, code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/^malformed protobuf message: /) });
    }
  });

  it('invalid UTF-8 in a string field: INVALID_ARGUMENT', async () => {
    const r = await unaryRaw(target, '/keyprovider.KeyProviderService/SayHello', Buffer.from([0x0a, 0x02, 0xc3, 0x28]));
    expect(r).toEqual({ ok: false, code: grpc.status.INVALID_ARGUMENT, details: 'malformed protobuf message: field 1 (name) is not valid UTF-8' });
  });

  it('a message past the size limit: RESOURCE_EXHAUSTED before any handler', async () => {
    const r = await unwrap(target, 'keyprovider', Buffer.alloc(LIMIT + 1, 0x20));
    expect(r).toMatchObject({ ok: false, code: grpc.status.RESOURCE_EXHAUSTED });
  });

  it('a SayHello name past 256 characters: INVALID_ARGUMENT that does not echo it', async () => {
    const r = await call(target, 'keyprovider', 'SayHello', { name: 'x'.repeat(10_000) });
    expect(r).toEqual({ ok: false, code: grpc.status.INVALID_ARGUMENT, details: 'name is longer than 256 characters' });
  });

  it('a huge annotation field value: INVALID_ARGUMENT, the message is bounded', async () => {
    const packet = JSON.stringify({ kid: 'k'.repeat(40_000), wrapped_data: 'AAAA', kms_endpoint: 'v.vault.azure.net', attester_endpoint: 'a.attest.azure.net' });
    const r = await unwrap(target, 'keyprovider', ocicryptUnwrapInput(packet));
    if (r.ok) throw new Error('accepted');
    expect(r.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(r.details).toBe('annotation packet: kid is longer than 300 characters');
  });

  it('wrong JSON types in the envelope: INVALID_ARGUMENT naming the field', async () => {
    const r = await unwrap(target, 'keyprovider', Buffer.from('{"op":"keyunwrap","keyunwrapparams":{"dc":{"Parameters":{"attestation-agent":[7]}},"annotation":"e30="}}'));
    expect(r).toEqual({ ok: false, code: grpc.status.INVALID_ARGUMENT, details: 'keyunwrapparams.dc.Parameters["attestation-agent"][0] is not a base64 string' });
  });

  it('GetReport/GetAttestationData with oversized or non-base64 input: INVALID_ARGUMENT', async () => {
    expect(await call(target, 'keyprovider', 'GetReport', { report_data_hex_string: 'a'.repeat(65 * 1024) })).toMatchObject({ ok: false, code: grpc.status.RESOURCE_EXHAUSTED });
    expect(await call(target, 'keyprovider', 'GetAttestationData', { b64_runtime_data_string: '%%' })).toEqual({
      ok: false,
      code: grpc.status.INVALID_ARGUMENT,
      details: 'b64_runtime_data_string is not standard base64',
    });
  });

  it('raw HTTP/2: a frame claiming more bytes than the limit, a compressed frame that does not inflate, a non-gRPC content type, an unknown method', async () => {
    const p = '/keyprovider.KeyProviderService/SayHello';
    const huge = await rawCall(target, { ':path': p, 'content-type': 'application/grpc' }, frame(Buffer.alloc(10), 0, 0x7fffffff));
    expect(huge.grpcStatus).toBe(String(grpc.status.RESOURCE_EXHAUSTED));
    const badGzip = await rawCall(target, { ':path': p, 'content-type': 'application/grpc', 'grpc-encoding': 'gzip' }, frame(Buffer.from('not gzip at all'), 1));
    expect(badGzip.grpcStatus).toBeDefined();
    expect(badGzip.grpcStatus).not.toBe(String(grpc.status.OK));
    const json = await rawCall(target, { ':path': p, 'content-type': 'application/json' }, Buffer.from('{"name":"x"}'));
    expect(json.status).toBe(415);
    const unknown = await rawCall(target, { ':path': '/keyprovider.KeyProviderService/Nope', 'content-type': 'application/grpc' }, frame(Buffer.alloc(0)));
    expect(unknown.grpcStatus).toBe(String(grpc.status.UNIMPLEMENTED));
  });

  const closedWithin = (write: string | undefined, ms: number) =>
    new Promise<boolean>((resolve) => {
      const [host, port] = target.split(':');
      const s = net.connect(Number(port), host);
      s.once('close', () => resolve(true));
      s.once('error', () => undefined);
      if (write !== undefined) s.write(write);
      setTimeout(() => {
        s.destroy();
        resolve(false);
      }, ms).unref();
    });

  it('a client that connects and sends nothing, or half the HTTP/2 preface, is disconnected after the handshake timeout', async () => {
    expect(await closedWithin(undefined, 10_000)).toBe(true);
    expect(await closedWithin('PRI * HTTP/2.0\r\n', 10_000)).toBe(true);
  });

  it('a client that does not speak HTTP/2 is disconnected at its first bytes', async () => {
    expect(await closedWithin('GET / HTTP/1.1\r\nHost: x\r\n\r\n', 10_000)).toBe(true);
  });

  it('a client that starts a call and never finishes its message loses the connection at the maximum age', async () => {
    const session = http2.connect(`http://${target}`);
    session.on('error', () => undefined);
    const req = session.request({ ':method': 'POST', ':path': '/keyprovider.KeyProviderService/UnWrapKey', 'content-type': 'application/grpc', te: 'trailers' });
    req.on('error', () => undefined);
    req.write(frame(Buffer.alloc(10), 0, 1000).subarray(0, 8));
    const ended = await new Promise<string>((resolve) => {
      req.on('trailers', (t) => resolve(`status ${String(t['grpc-status'])}`));
      req.on('close', () => resolve('closed'));
      session.on('goaway', () => resolve('goaway'));
      setTimeout(() => resolve('still open'), 20_000).unref();
    });
    expect(ended).not.toBe('still open');
    session.destroy();
  });

  it('reflection lists the service under both package names', async () => {
    const reflectionProto = require.resolve('@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto');
    const def = protoLoader.loadSync(reflectionProto, { keepCase: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } } };
    const client = new pkg.grpc.reflection.v1.ServerReflection(target, grpc.credentials.createInsecure());
    const services = await new Promise<string[]>((resolve, reject) => {
      const stream = client.ServerReflectionInfo();
      stream.on('data', (m: { list_services_response?: { service: { name: string }[] } }) => {
        resolve((m.list_services_response?.service ?? []).map((s) => s.name));
        stream.end();
      });
      stream.on('error', reject);
      stream.write({ list_services: '' });
    });
    client.close();
    expect(services).toEqual(expect.arrayContaining(['keyprovider.KeyProviderService', 'key_provider.KeyProviderService']));
  });
});

describe('gRPC key provider with SKR_API_SECRET', () => {
  const secret = 'a-shared-secret-of-32-characters';
  let sidecar: RunningSidecar;
  let dir: string;
  beforeAll(async () => {
    ({ sidecar, dir } = await start({ apiSecret: secret }));
  }, 30_000);
  afterAll(async () => {
    await sidecar?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('UnWrapKey without the secret: UNAUTHENTICATED; with it the call is served; SayHello stays open', async () => {
    const target = sidecar.grpc?.target as string;
    const input = ocicryptUnwrapInput('{}', 'other');
    expect(await unwrap(target, 'keyprovider', input)).toMatchObject({ ok: false, code: grpc.status.UNAUTHENTICATED });
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${secret}`);
    const r = await call(target, 'keyprovider', 'UnWrapKey', { key_provider_key_wrap_protocol_input: input }, { metadata: md });
    expect(r).toMatchObject({ ok: false, code: grpc.status.INVALID_ARGUMENT });
    expect((await call(target, 'keyprovider', 'SayHello', { name: 'a' })).ok).toBe(true);
  });
});
