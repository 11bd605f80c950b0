/**
 * The gRPC key provider: KeyProviderService served under both package names (`keyprovider`, what
 * ocicrypt, image-rs and the reference before v2.11 call; `key_provider`, the reference since),
 * plus gRPC server reflection. Messages go through our own codec (wire.ts), so a malformed message
 * is INVALID_ARGUMENT, not grpc-js's INTERNAL; errors map to status codes through the same code →
 * HTTP status table as the HTTP API (grpc-status.ts), with the same bounded, redacted messages.
 *
 * Bounds: one message at most `maxMessageBytes` either way, a limited number of streams per
 * connection, idle connections closed, every connection closed after a maximum age (a client that
 * never finishes its request cannot hold one), a connection must open with the HTTP/2 preface
 * within a few seconds, loopback peers only unless SKR_GRPC_HOST opens it.
 */
import * as net from 'node:net';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { SkrError } from '../common/errors';
import { clip } from '../common/clip';
import { ReleaseRefusedError } from '../akv/vault-release';
import { describeErrorChain } from '../common/redact';
import { ConfigError } from '../common/errors';
import { isLoopbackAddress, secretMatches } from '../server/guard';
import { describe, MAX_ERROR_MESSAGE_CHARS, statusOf } from '../server/http-errors';
import type { Logger } from '../server/logger';
import type { SidecarMetrics } from '../server/observe';
import { outcomeOf } from '../server/release-gate';
import { grpcCodeOf } from './grpc-status';
import type { KeyProvider } from './key-provider';
import { decodeMessage, encodeMessage, type Decoded, type Schema } from './wire';

/** Package names the service is registered under (same handlers). */
export const PACKAGES = ['keyprovider', 'key_provider'] as const;
export const SERVICE = 'KeyProviderService';
export const PROTO_DIR = path.join(__dirname, 'proto');

const WRAP_IN: Schema = { 1: ['key_provider_key_wrap_protocol_input', 'bytes'] };
const WRAP_OUT: Schema = { 1: ['key_provider_key_wrap_protocol_output', 'bytes'] };
const REPORT_IN: Schema = { 1: ['report_data_hex_string', 'string'] };
const REPORT_OUT: Schema = { 1: ['report_hex_string', 'string'] };
const ATTEST_IN: Schema = { 1: ['b64_runtime_data_string', 'string'] };
const ATTEST_OUT: Schema = { 1: ['endorsed_tcb', 'string'], 2: ['certs', 'string'], 3: ['attestation_report', 'string'], 4: ['uvm_reference_info', 'string'] };
const HELLO_IN: Schema = { 1: ['name', 'string'] };
const HELLO_OUT: Schema = { 1: ['message', 'string'] };

type Fields = Record<string, Buffer | string>;

interface Method {
  request: Schema;
  response: Schema;
  handle(kp: KeyProvider, req: Fields): Promise<Fields> | Fields;
  /** The answer holds secret bytes: wiped once serialised. */
  secretResponse?: boolean;
}

const METHODS: Record<string, Method> = {
  WrapKey: { request: WRAP_IN, response: WRAP_OUT, handle: (kp, r) => ({ key_provider_key_wrap_protocol_output: kp.wrapKey(r.key_provider_key_wrap_protocol_input as Buffer) }) },
  UnWrapKey: {
    request: WRAP_IN,
    response: WRAP_OUT,
    secretResponse: true,
    handle: async (kp, r) => ({ key_provider_key_wrap_protocol_output: await kp.unwrapKey(r.key_provider_key_wrap_protocol_input as Buffer) }),
  },
  GetReport: { request: REPORT_IN, response: REPORT_OUT, handle: async (kp, r) => ({ report_hex_string: await kp.getReport(r.report_data_hex_string as string) }) },
  GetAttestationData: { request: ATTEST_IN, response: ATTEST_OUT, handle: (kp, r) => kp.getAttestationData(r.b64_runtime_data_string as string) },
  SayHello: { request: HELLO_IN, response: HELLO_OUT, handle: (kp, r) => ({ message: kp.sayHello(r.name as string) }) },
};

export interface GrpcLimits {
  /** Largest message received or sent (bytes). */
  maxMessageBytes: number;
  /** Concurrent calls on one connection. */
  maxConcurrentStreams: number;
  /** A connection without calls is closed after this. */
  idleTimeoutMs: number;
  /** Every connection is closed after this (plus `maxConnectionAgeGraceMs` for calls still running). */
  maxConnectionAgeMs: number;
  maxConnectionAgeGraceMs: number;
  /** Time for a new connection to send the HTTP/2 preface. */
  handshakeTimeoutMs: number;
  /** Open connections at once; beyond it new ones are closed at once. */
  maxConnections: number;
}

export const DEFAULT_GRPC_LIMITS: Readonly<GrpcLimits> = Object.freeze({
  maxMessageBytes: 1024 * 1024,
  maxConcurrentStreams: 32,
  idleTimeoutMs: 60_000,
  maxConnectionAgeMs: 5 * 60_000,
  maxConnectionAgeGraceMs: 70_000,
  handshakeTimeoutMs: 10_000,
  maxConnections: 256,
});

export interface GrpcServerOptions {
  keyProvider: KeyProvider;
  logger: Logger;
  metrics: SidecarMetrics;
  host: string;
  port: number;
  limits?: Partial<GrpcLimits>;
  /** When set, every call but SayHello needs metadata `authorization: Bearer <secret>` (SKR_API_SECRET). */
  apiSecret?: string;
}

export interface RunningGrpc {
  server: grpc.Server;
  port: number;
  /** `host:port`, what a client dials (and ocicrypt's key-provider config names). */
  target: string;
  /** Stop accepting, let calls finish for up to `graceMs`, then cut them. */
  close(graceMs: number): Promise<void>;
}

/** What every HTTP/2 client sends first (RFC 9113 §3.4). */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * Hand the socket on once its first bytes are the HTTP/2 client preface; a socket that sends
 * something else, or not all of it within `timeoutMs`, is closed. The bytes read are put back.
 */
function awaitPreface(socket: net.Socket, timeoutMs: number, then: () => void): void {
  let got = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  timer.unref();
  const onData = (chunk: Buffer) => {
    got = Buffer.concat([got, chunk]);
    const n = Math.min(got.length, PREFACE.length);
    if (!got.subarray(0, n).equals(PREFACE.subarray(0, n))) {
      clearTimeout(timer);
      socket.destroy();
      return;
    }
    if (got.length < PREFACE.length) return;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.pause();
    socket.unshift(got);
    then();
  };
  socket.on('data', onData);
}

/** Trailer carrying a refused release's explanation: the JSON object the HTTP 403 carries as `explanation`. */
export const EXPLANATION_TRAILER = 'skr-explanation-bin';

function grpcError(err: unknown): Partial<grpc.StatusObject> {
  if (err instanceof ReleaseRefusedError && err.explanation) {
    // Bounded at its source (release-explanation.ts), as in the HTTP answer.
    const metadata = new grpc.Metadata();
    metadata.set(EXPLANATION_TRAILER, Buffer.from(JSON.stringify(err.explanation), 'utf8'));
    return { code: grpcCodeOf(statusOf(err)), details: describe(err), metadata };
  }
  if (err instanceof SkrError) return { code: grpcCodeOf(statusOf(err)), details: describe(err) };
  return { code: grpc.status.INTERNAL, details: 'internal error' };
}

function definition(pkg: string, onCall: (name: string, m: Method) => grpc.handleUnaryCall<Decoded, Fields>): { def: grpc.ServiceDefinition; impl: grpc.UntypedServiceImplementation } {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const impl: grpc.UntypedServiceImplementation = {};
  for (const [name, m] of Object.entries(METHODS)) {
    def[name] = {
      path: `/${pkg}.${SERVICE}/${name}`,
      requestStream: false,
      responseStream: false,
      // Never throws: a malformed message reaches the handler as an error (INVALID_ARGUMENT there).
      requestDeserialize: (buf: Buffer) => decodeMessage(buf, m.request),
      requestSerialize: (v: Fields) => encodeMessage(v, m.request),
      responseSerialize: (v: Fields) => {
        const out = encodeMessage(v, m.response);
        if (m.secretResponse) for (const b of Object.values(v)) if (Buffer.isBuffer(b)) b.fill(0);
        return out;
      },
      responseDeserialize: (buf: Buffer) => decodeMessage(buf, m.response),
    } as grpc.MethodDefinition<unknown, unknown>;
    impl[name] = onCall(name, m) as grpc.UntypedHandleCall;
  }
  return { def: def as grpc.ServiceDefinition, impl };
}

/** Package definitions of both .proto files, for reflection (and tests that check our codec against protobufjs). */
export function loadProtoDefinitions(): protoLoader.PackageDefinition {
  return protoLoader.loadSync(
    PACKAGES.map((p) => path.join(PROTO_DIR, `${p}.proto`)),
    { keepCase: true, longs: String, enums: String, defaults: true },
  );
}

export async function startGrpcServer(opts: GrpcServerOptions): Promise<RunningGrpc> {
  const limits = { ...DEFAULT_GRPC_LIMITS, ...opts.limits };
  const { logger, metrics } = opts;
  const loopbackOnly = isLoopbackAddress(opts.host);
  const server = new grpc.Server({
    'grpc.max_receive_message_length': limits.maxMessageBytes,
    'grpc.max_send_message_length': limits.maxMessageBytes,
    'grpc.max_concurrent_streams': limits.maxConcurrentStreams,
    'grpc.max_connection_idle_ms': limits.idleTimeoutMs,
    'grpc.max_connection_age_ms': limits.maxConnectionAgeMs,
    'grpc.max_connection_age_grace_ms': limits.maxConnectionAgeGraceMs,
  });

  const onCall =
    (name: string, m: Method): grpc.handleUnaryCall<Decoded, Fields> =>
    (call, callback) => {
      const t0 = performance.now();
      const finish = (err: unknown, value?: Fields) => {
        const status = err === undefined ? 200 : statusOf(err);
        const e = err === undefined ? undefined : grpcError(err);
        const code = e?.code ?? grpc.status.OK;
        const outcome = outcomeOf(status);
        metrics.grpcRequests.inc({ method: name, code: grpc.status[code] ?? String(code), outcome });
        metrics.grpcRequestSeconds.observe({ method: name, outcome }, (performance.now() - t0) / 1000);
        if (e) {
          const detail = !(err instanceof SkrError) ? { detail: err instanceof Error ? `${err.name}: ${clip(describeErrorChain(err), MAX_ERROR_MESSAGE_CHARS)}` : typeof err } : {};
          logger.log(status >= 500 ? 'error' : 'warn', 'grpc call failed', {
            method: name,
            grpcStatus: grpc.status[code],
            code: err instanceof SkrError ? err.code : 'ERR_INTERNAL',
            error: e.details,
            ...detail,
          });
          callback(e as grpc.ServiceError);
        } else callback(null, value);
      };
      try {
        if (opts.apiSecret && name !== 'SayHello') {
          const auth = call.metadata.get('authorization')[0];
          const mm = typeof auth === 'string' ? /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(auth) : null;
          if (!mm || !secretMatches(mm[1], opts.apiSecret)) {
            metrics.refusals.inc({ reason: 'auth' });
            throw new SkrError('ERR_UNAUTHORIZED', 'this sidecar requires metadata "authorization: Bearer <secret>" (SKR_API_SECRET)');
          }
        }
        const req = call.request;
        if (!req.ok) throw req.error;
        Promise.resolve()
          .then(() => m.handle(opts.keyProvider, req.fields))
          .then(
            (v) => finish(undefined, v),
            (err: unknown) => finish(err),
          );
      } catch (err) {
        finish(err);
      }
    };

  for (const pkg of PACKAGES) {
    const { def, impl } = definition(pkg, onCall);
    server.addService(def, impl);
  }
  new ReflectionService(loadProtoDefinitions()).addToServer(server);

  // Our own listener hands connections to grpc-js: we decide who connects (loopback peers, a
  // connection cap) and how long a connection may take to say it speaks HTTP/2 at all.
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const sockets = new Set<net.Socket>();
  const listener = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    if (loopbackOnly && !isLoopbackAddress(socket.remoteAddress)) {
      metrics.refusals.inc({ reason: 'peer' });
      socket.destroy();
      return;
    }
    awaitPreface(socket, limits.handshakeTimeoutMs, () => injector.injectConnection(socket));
  });
  listener.maxConnections = limits.maxConnections;
  const port = await new Promise<number>((resolve, reject) => {
    listener.once('error', (e: NodeJS.ErrnoException) => reject(new ConfigError(`cannot listen on ${opts.host}:${opts.port} (gRPC): ${e.code ?? clip(e.message, 200)}`, e)));
    listener.listen(opts.port, opts.host, () => resolve((listener.address() as net.AddressInfo).port));
  });
  const target = `${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${port}`;
  let closing: Promise<void> | undefined;
  const close = (graceMs: number) =>
    (closing ??= new Promise<void>((resolve) => {
      listener.close();
      // GOAWAY to every session: calls running may finish within the grace period, then all is cut.
      injector.drain(graceMs);
      const done = () => {
        injector.destroy();
        server.forceShutdown();
        for (const s of sockets) s.destroy();
        resolve();
      };
      if (sockets.size === 0) return done();
      const force = setTimeout(done, graceMs);
      force.unref();
      const poll = setInterval(() => {
        if (sockets.size > 0) return;
        clearInterval(poll);
        clearTimeout(force);
        done();
      }, 20);
      poll.unref();
    }));
  return { server, port, target, close };
}
