/**
 * What the PCK certificate's Intel SGX extension (OID 1.2.840.113741.1.13.1) says about the platform: the
 * FMSPC (family-model-stepping-platform-CustomSKU, the key of Intel's TCB info) and the PCE id. Read only
 * after the chain is verified, and only to tell the operator which collateral would decide the TCB status
 * (not fetched here): malformed or absent → undefined, never a guess.
 */
import type { X509Certificate } from 'node:crypto';
import { childrenOf, decodeOid, parseDer, Tag } from '../asn1/der';
import { certificateExtensions } from '../certs/vcek';

export const SGX_EXTENSIONS_OID = '1.2.840.113741.1.13.1';
const PCEID_OID = `${SGX_EXTENSIONS_OID}.3`;
const FMSPC_OID = `${SGX_EXTENSIONS_OID}.4`;

export interface PckInfo {
  fmspc?: string;
  pceId?: string;
}

export function pckInfo(pck: X509Certificate): PckInfo {
  try {
    const ext = certificateExtensions(pck.raw).get(SGX_EXTENSIONS_OID);
    if (!ext) return {};
    const out: PckInfo = {};
    for (const item of childrenOf(parseDer(ext), 'SGX extensions')) {
      const [oid, value] = childrenOf(item, 'SGX extension');
      if (oid?.tag !== Tag.OID || value?.tag !== Tag.OCTET_STRING) continue;
      const id = decodeOid(oid.value);
      if (id === FMSPC_OID && value.value.length === 6) out.fmspc = value.value.toString('hex');
      if (id === PCEID_OID && value.value.length === 2) out.pceId = value.value.toString('hex');
    }
    return out;
  } catch {
    return {};
  }
}

/** Where Intel's TDX TCB info for an FMSPC is served (Intel PCS v4). */
export function pcsTcbInfoUrl(fmspc: string): string {
  return `https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=${fmspc}`;
}
