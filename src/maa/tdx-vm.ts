/**
 * MAA's platform endpoint for Intel TDX VMs (MAA REST "Attest Tdx Vm"):
 *
 *   POST /attest/TdxVm?api-version=2025-06-01
 *   { "quote": base64url(TD quote), "runtimeData": { "data": base64url(bytes), "dataType": "JSON" | "Binary" }, "nonce"? }
 *
 * MAA checks that the first 32 bytes of the quote's REPORTDATA are sha256 of the decoded runtime data. On an Azure
 * TDX CVM the paravisor binds the HCL report's runtime claims there, so the runtime data is exactly those claim
 * bytes (JSON); the caller's own data reaches the token through the claims' `user-data`. Built by the sidecar and
 * parsed by the MAA emulator, so both sides share one definition.
 */
import { decodeBase64Strict } from '../common/bytes';
import { InvalidInputError } from '../common/errors';
import { MAX_QUOTE_BYTES } from '../tdx/quote';

export const TDX_VM_API_VERSION = '2025-06-01';
/** The api-versions that have /attest/TdxVm. */
export const TDX_VM_API_VERSIONS: readonly string[] = ['2023-04-01-preview', '2025-06-01'];
const MAX_RUNTIME_DATA = 16 * 1024;

export interface TdxVmRequestInput {
  quote: Buffer;
  runtimeData: Buffer;
  dataType: 'JSON' | 'Binary';
}

export function serializeTdxVmRequest(i: TdxVmRequestInput): string {
  return JSON.stringify({ quote: i.quote.toString('base64url'), runtimeData: { data: i.runtimeData.toString('base64url'), dataType: i.dataType } });
}

function bad(path: string, message: string): InvalidInputError {
  return new InvalidInputError('ERR_MAA_REQUEST', `TdxVm request ${path}: ${message}`);
}

function bytes(v: unknown, path: string, max: number): Buffer {
  if (typeof v !== 'string' || v.length === 0) throw bad(path, 'must be a non-empty base64url string');
  if (v.length > Math.ceil((max * 4) / 3) + 4) throw bad(path, `is longer than ${max} bytes`);
  const b = decodeBase64Strict(v);
  if (!b) throw bad(path, 'is not base64url');
  return b;
}

/** Parse and bound a TdxVm body (already JSON-parsed). */
export function parseTdxVmRequest(body: unknown): TdxVmRequestInput & { runtimeJson?: Record<string, unknown> } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw bad('body', 'must be a JSON object');
  const o = body as Record<string, unknown>;
  const quote = bytes(o.quote, 'quote', MAX_QUOTE_BYTES);
  const rd = o.runtimeData;
  if (typeof rd !== 'object' || rd === null || Array.isArray(rd)) throw bad('runtimeData', 'must be an object {data, dataType}');
  const r = rd as Record<string, unknown>;
  const runtimeData = bytes(r.data, 'runtimeData.data', MAX_RUNTIME_DATA);
  if (r.dataType !== 'JSON' && r.dataType !== 'Binary') throw bad('runtimeData.dataType', 'must be "JSON" or "Binary"');
  if (r.dataType === 'Binary') return { quote, runtimeData, dataType: 'Binary' };
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(runtimeData));
  } catch {
    throw bad('runtimeData.data', 'dataType is JSON but the data is not UTF-8 JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad('runtimeData.data', 'must be a JSON object');
  return { quote, runtimeData, dataType: 'JSON', runtimeJson: json as Record<string, unknown> };
}
