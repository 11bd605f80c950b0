/**
 * A gRPC client for tests that is not our server's code: grpc-js's generic unary call with raw
 * bytes (so a test can send any bytes at all), and messages encoded and decoded by protobufjs from
 * the .proto files (an independent codec to check ours against). Envelopes are built as ocicrypt's
 * Go client marshals them (tests/grpc/fixtures pins the bytes).
 */
import * as grpc from '@grpc/grpc-js';
import type { PackageDefinition } from '@grpc/proto-loader';
import { loadProtoDefinitions } from '../../src/grpc/server';

let defs: PackageDefinition | undefined;

function methodDef(pkg: string, method: string): grpc.MethodDefinition<object, object> {
  defs ??= loadProtoDefinitions();
  const svc = defs[`${pkg}.KeyProviderService`] as unknown as Record<string, grpc.MethodDefinition<object, object>>;
  if (!svc?.[method]) throw new Error(`no ${pkg}.KeyProviderService/${method}`);
  return svc[method];
}

/** protobufjs's encoding of a request. */
export function encodeRequest(pkg: string, method: string, value: object): Buffer {
  return methodDef(pkg, method).requestSerialize(value);
}

/** protobufjs's decoding of an answer. */
export function decodeResponse<T = Record<string, unknown>>(pkg: string, method: string, body: Buffer): T {
  return methodDef(pkg, method).responseDeserialize(body) as T;
}

export type UnaryFailure = { ok: false; code: grpc.status; details: string; explanation?: unknown };
export type UnaryResult = { ok: true; body: Buffer } | UnaryFailure;

/** One unary call with raw request bytes. */
export function unaryRaw(target: string, path: string, body: Buffer, opts: { metadata?: grpc.Metadata; deadlineMs?: number } = {}): Promise<UnaryResult> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': -1 });
  return new Promise<UnaryResult>((resolve) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      opts.metadata ?? new grpc.Metadata(),
      { deadline: Date.now() + (opts.deadlineMs ?? 30_000) },
      (err, value) => {
        client.close();
        if (err) {
          // A refused release's explanation travels in the skr-explanation-bin trailer.
          const ex = err.metadata?.get('skr-explanation-bin')[0];
          resolve({ ok: false, code: err.code, details: err.details, ...(ex !== undefined ? { explanation: JSON.parse(ex.toString()) as unknown } : {}) });
        } else resolve({ ok: true, body: value as Buffer });
      },
    );
  });
}

/** A call as a typed client makes it: protobufjs encodes the request and decodes the answer. */
export async function call<T = Record<string, unknown>>(target: string, pkg: string, method: string, request: object, opts: { metadata?: grpc.Metadata } = {}): Promise<{ ok: true; value: T } | UnaryFailure> {
  const r = await unaryRaw(target, `/${pkg}.KeyProviderService/${method}`, encodeRequest(pkg, method, request), opts);
  return r.ok ? { ok: true, value: decodeResponse<T>(pkg, method, r.body) } : r;
}

const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64');

/** UnwrapKey's input as ocicrypt marshals it (`dc.Parameters` with the one attestation-agent entry). */
export function ocicryptUnwrapInput(packet: Buffer | string, agent = 'skr'): Buffer {
  return Buffer.from(
    `{"op":"keyunwrap","keywrapparams":{"ec":null,"optsdata":null},"keyunwrapparams":{"dc":{"Parameters":{"attestation-agent":["${b64(agent)}"]}},"annotation":"${b64(packet)}"}}`,
  );
}

/** WrapKeys' input as ocicrypt marshals it. */
export function ocicryptWrapInput(agentParam: string, optsData: Buffer | string): Buffer {
  return Buffer.from(
    `{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"attestation-agent":["${b64(agentParam)}"]},"DecryptConfig":{"Parameters":null}},"optsdata":"${b64(optsData)}"},"keyunwrapparams":{"dc":null,"annotation":null}}`,
  );
}

export async function unwrap(target: string, pkg: string, input: Buffer): Promise<{ ok: true; output: Record<string, unknown> } | UnaryFailure> {
  const r = await call<{ key_provider_key_wrap_protocol_output: Buffer }>(target, pkg, 'UnWrapKey', { key_provider_key_wrap_protocol_input: input });
  return r.ok ? { ok: true, output: JSON.parse(r.value.key_provider_key_wrap_protocol_output.toString('utf8')) as Record<string, unknown> } : r;
}
