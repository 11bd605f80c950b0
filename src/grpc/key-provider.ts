/**
 * What each KeyProviderService method does, free of gRPC: UnWrapKey releases the annotation's key
 * through the same ReleaseGate as POST /key/release (allowlists, kid allowlist, slots, deadline,
 * audit line) and undoes RSA-OAEP-SHA256; WrapKey wraps to a key info file; GetReport and
 * GetAttestationData are the reference's report calls over the AttestationService.
 */
import { constants, createPrivateKey, privateDecrypt, type JsonWebKey, type KeyObject } from 'node:crypto';
import { quote } from '../common/clip';
import { InvalidInputError, SkrError } from '../common/errors';
import { wipe } from '../common/bytes';
import { reportDataFor } from '../snp/report';
import type { AttestationService } from '../server/attestation';
import { withDeadline, type ReleaseGate } from '../server/release-gate';
import { decodeStdBase64, parseAnnotationPacket, parseUnwrapInput, parseWrapInput, unwrapOutput, wrapOutput } from './envelope';
import { wrapWithKeyInfo } from './key-info';

/** SayHello echoes at most this much of the caller's name. */
export const MAX_HELLO_NAME_CHARS = 256;
/** GetReport hashes the caller's string; GetAttestationData's runtime data is what /attest/combined takes. */
export const MAX_REPORT_INPUT_CHARS = 64 * 1024;

const JWK_PRIVATE_FIELDS = ['d', 'p', 'q', 'dp', 'dq', 'qi'] as const;

export interface KeyProviderDeps {
  gate: ReleaseGate;
  attestation: AttestationService;
}

export class KeyProvider {
  constructor(private readonly deps: KeyProviderDeps) {}

  sayHello(name: string): string {
    if (name.length > MAX_HELLO_NAME_CHARS) throw new InvalidInputError('ERR_FIELD_TYPE', `name is longer than ${MAX_HELLO_NAME_CHARS} characters`);
    return `Hello ${name}`;
  }

  /** The envelope's annotation → release → RSA-OAEP-SHA256 → `{"keyunwrapresults":{"optsdata":…}}` (a Buffer the caller wipes once sent). */
  async unwrapKey(input: Buffer): Promise<Buffer> {
    const packet = parseAnnotationPacket(parseUnwrapInput(input));
    return this.deps.gate.release(
      { maaEndpoint: packet.attesterEndpoint, akvEndpoint: packet.kmsEndpoint, kid: packet.kid, api: 'grpc' },
      ({ jwk }) => {
        const key = rsaPrivateKey(jwk as JsonWebKey, packet.kid);
        let opts: Buffer | undefined;
        try {
          opts = privateDecrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, packet.wrappedData);
        } catch {
          // How the decryption failed is not said: it is an oracle on the key.
          throw new InvalidInputError('ERR_UNWRAP', `wrapped_data does not unwrap with key ${quote(packet.kid, 80)} (RSA-OAEP-SHA256): the packet was wrapped to another key`);
        }
        try {
          return unwrapOutput(opts);
        } finally {
          wipe(opts);
        }
      },
    );
  }

  wrapKey(input: Buffer): Buffer {
    const { keyPath, optsData } = parseWrapInput(input);
    try {
      return wrapOutput(wrapWithKeyInfo(optsData, keyPath));
    } finally {
      wipe(optsData);
    }
  }

  /** The SNP report whose REPORT_DATA is sha256 of the hex string's own UTF-8 bytes, as the reference computes it. */
  async getReport(reportDataHex: string): Promise<string> {
    this.snpOnly('GetReport');
    if (reportDataHex.length > MAX_REPORT_INPUT_CHARS) throw new InvalidInputError('ERR_REPORT_DATA', `report_data_hex_string is longer than ${MAX_REPORT_INPUT_CHARS} characters`);
    // The reference hashes the string, not the bytes it spells: clients depend on that binding.
    const r = await withDeadline(this.deps.gate.deadlineMs, () => this.deps.attestation.rawReport(reportDataFor(Buffer.from(reportDataHex, 'utf8'))));
    return r.report.toString('hex');
  }

  async getAttestationData(runtimeDataB64: string): Promise<{ endorsed_tcb: string; certs: string; attestation_report: string; uvm_reference_info: string }> {
    this.snpOnly('GetAttestationData');
    if (runtimeDataB64.length > MAX_REPORT_INPUT_CHARS) throw new InvalidInputError('ERR_RUNTIME_DATA', `b64_runtime_data_string is longer than ${MAX_REPORT_INPUT_CHARS} characters`);
    const data = decodeStdBase64(runtimeDataB64);
    if (!data) throw new InvalidInputError('ERR_RUNTIME_DATA', 'b64_runtime_data_string is not standard base64');
    const c = await withDeadline(this.deps.gate.deadlineMs, () => this.deps.attestation.combined(reportDataFor(data)));
    // snpOnly keeps CVMs out; a platform without an AMD chain (TDX) must not get here either.
    if (!c.chain) throw new SkrError('ERR_NOT_SUPPORTED', 'GetAttestationData serves an SEV-SNP report with its AMD chain; this platform has none');
    const pem = c.chain.vcekPem.endsWith('\n') ? c.chain.vcekPem + c.chain.chainPem : `${c.chain.vcekPem}\n${c.chain.chainPem}`;
    return {
      endorsed_tcb: c.chain.tcbm.toString(16).padStart(16, '0'),
      certs: Buffer.from(pem, 'utf8').toString('base64'),
      attestation_report: c.report.toString('base64'),
      uvm_reference_info: c.uvmEndorsementsBase64,
    };
  }

  /** The report calls return a bare SNP report: on an Azure CVM its REPORT_DATA binds the HCL claims, not the caller's data. */
  private snpOnly(method: string): void {
    if (this.deps.attestation.platform === 'azure-cvm') {
      throw new SkrError('ERR_NOT_SUPPORTED', `${method} serves the SEV-SNP report of a container group; on an Azure confidential VM use the HTTP API's /attest/raw or /attest/combined, which carry the HCL report`);
    }
  }
}

/** The released JWK as an RSA private key; its private fields are dropped from the object once imported. */
function rsaPrivateKey(jwk: JsonWebKey, kid: string): KeyObject {
  try {
    if (jwk.kty !== 'RSA' || typeof jwk.d !== 'string') {
      throw new InvalidInputError('ERR_KEY_TYPE', `key ${quote(kid, 80)} is a ${typeof jwk.kty === 'string' ? quote(jwk.kty, 10) : 'non-RSA'} key; the key provider unwraps with an RSA private key`);
    }
    try {
      return createPrivateKey({ key: jwk, format: 'jwk' });
    } catch {
      throw new InvalidInputError('ERR_KEY_TYPE', `key ${quote(kid, 80)} is not a usable RSA private key`);
    }
  } finally {
    for (const f of JWK_PRIVATE_FIELDS) delete (jwk as Record<string, unknown>)[f];
  }
}
