/**
 * A minimal key provider client over grpc-js and our codec, for `skr demo` and the bench: UnWrapKey
 * with an annotation packet, as ocicrypt calls it.
 */
import * as grpc from '@grpc/grpc-js';
import { decodeStdBase64, unwrapInput } from './envelope';
import { decodeMessage, encodeMessage, type Schema } from './wire';

const WRAP_IN: Schema = { 1: ['key_provider_key_wrap_protocol_input', 'bytes'] };
const WRAP_OUT: Schema = { 1: ['key_provider_key_wrap_protocol_output', 'bytes'] };

export class KeyProviderCallError extends Error {
  constructor(readonly grpcCode: grpc.status, readonly details: string) {
    super(`${grpc.status[grpcCode] ?? grpcCode}: ${details}`);
  }
}

export class KeyProviderClient {
  private readonly client: grpc.Client;

  constructor(readonly target: string, readonly pkg: 'keyprovider' | 'key_provider' = 'keyprovider') {
    this.client = new grpc.Client(target, grpc.credentials.createInsecure());
  }

  /** The layer options the packet wraps, released and unwrapped by the key provider. */
  unwrapKey(packet: Buffer, deadlineMs = 60_000): Promise<Buffer> {
    const request = encodeMessage({ key_provider_key_wrap_protocol_input: unwrapInput(packet) }, WRAP_IN);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        `/${this.pkg}.KeyProviderService/UnWrapKey`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        request,
        new grpc.Metadata(),
        { deadline: Date.now() + deadlineMs },
        (err, body) => {
          if (err) return reject(new KeyProviderCallError(err.code, err.details));
          const d = decodeMessage(body as Buffer, WRAP_OUT);
          if (!d.ok) return reject(d.error);
          try {
            const out = JSON.parse((d.fields.key_provider_key_wrap_protocol_output as Buffer).toString('utf8')) as { keyunwrapresults?: { optsdata?: unknown } };
            const opts = typeof out.keyunwrapresults?.optsdata === 'string' ? decodeStdBase64(out.keyunwrapresults.optsdata) : undefined;
            if (!opts) return reject(new Error('the key provider answered without keyunwrapresults.optsdata'));
            resolve(opts);
          } catch {
            reject(new Error('the key provider answered with something that is not JSON'));
          }
        },
      );
    });
  }

  close(): void {
    this.client.close();
  }
}
