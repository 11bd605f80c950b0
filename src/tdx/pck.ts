/**
 * What the PCK certificate's Intel SGX extension (OID 1.2.840.113741.1.13.1) says about the platform: the
 * FMSPC (family-model-stepping-platform-CustomSKU, the key of Intel's TCB info) and the PCE id. Read only
 * after the chain is verified, and only to tell the operator which collateral would decide the TCB status
 * (not fetched here): malformed or absent → undefined, never a guess.
 */
import type { X509Certificate } from 'node:crypto';
import { childrenOf, decodeOid, decodeUnsignedInt, parseDer, Tag, type DerNode } from '../asn1/der';
import { certificateExtensions } from '../certs/vcek';

export const SGX_EXTENSIONS_OID = '1.2.840.113741.1.13.1';
const PCEID_OID = `${SGX_EXTENSIONS_OID}.3`;
const FMSPC_OID = `${SGX_EXTENSIONS_OID}.4`;
const TCB_OID = `${SGX_EXTENSIONS_OID}.2`;

export interface PckInfo {
  fmspc?: string;
  pceId?: string;
  /** The platform TCB the PCK certificate was issued for: SGX TCB components 1..16, PCESVN, CPUSVN. */
  tcb?: PckTcb;
}

export interface PckTcb {
  sgxComponents: number[];
  pceSvn: number;
  cpuSvn: string;
}

/** The TCB SEQUENCE: components .2.1-.2.16 and .2.17 PCESVN as INTEGERs, .2.18 CPUSVN as 16 bytes; all present or none. */
function tcbOf(node: DerNode): PckTcb | undefined {
  const comps: number[] = new Array<number>(16).fill(-1);
  let pceSvn = -1;
  let cpuSvn: string | undefined;
  for (const item of childrenOf(node, 'SGX TCB')) {
    const [oid, value] = childrenOf(item, 'SGX TCB component');
    if (oid?.tag !== Tag.OID || !value) return undefined;
    const id = decodeOid(oid.value);
    if (!id.startsWith(`${TCB_OID}.`)) continue;
    const n = Number(id.slice(TCB_OID.length + 1));
    if (n === 18) {
      if (value.tag !== Tag.OCTET_STRING || value.value.length !== 16) return undefined;
      cpuSvn = value.value.toString('hex');
      continue;
    }
    if (value.tag !== Tag.INTEGER || value.value.length > 3) return undefined;
    const v = Number(decodeUnsignedInt(value.value));
    if (n >= 1 && n <= 16) comps[n - 1] = v;
    else if (n === 17) pceSvn = v;
  }
  if (comps.some((c) => c < 0) || pceSvn < 0 || cpuSvn === undefined) return undefined;
  return { sgxComponents: comps, pceSvn, cpuSvn };
}

export function pckInfo(pck: X509Certificate): PckInfo {
  try {
    const ext = certificateExtensions(pck.raw).get(SGX_EXTENSIONS_OID);
    if (!ext) return {};
    const out: PckInfo = {};
    for (const item of childrenOf(parseDer(ext), 'SGX extensions')) {
      const [oid, value] = childrenOf(item, 'SGX extension');
      if (oid?.tag !== Tag.OID || !value) continue;
      const id = decodeOid(oid.value);
      if (id === FMSPC_OID && value.tag === Tag.OCTET_STRING && value.value.length === 6) out.fmspc = value.value.toString('hex');
      if (id === PCEID_OID && value.tag === Tag.OCTET_STRING && value.value.length === 2) out.pceId = value.value.toString('hex');
      if (id === TCB_OID && value.tag === Tag.SEQUENCE) {
        // A malformed TCB leaves the FMSPC readable; the TCB check then refuses for want of it.
        let tcb: PckTcb | undefined;
        try {
          tcb = tcbOf(value);
        } catch {
          tcb = undefined;
        }
        if (tcb) out.tcb = tcb;
      }
    }
    return out;
  } catch {
    return {};
  }
}

export const INTEL_PCS_TDX_BASE = 'https://api.trustedservices.intel.com/tdx/certification/v4';

/** Where Intel's TDX TCB info for an FMSPC is served (Intel PCS v4, or a cache with the same API). */
export function pcsTcbInfoUrl(fmspc: string, base = INTEL_PCS_TDX_BASE): string {
  return `${base.replace(/\/+$/, '')}/tcb?fmspc=${fmspc}`;
}

/** Where the TD quoting enclave's identity is served. */
export function pcsQeIdentityUrl(base = INTEL_PCS_TDX_BASE): string {
  return `${base.replace(/\/+$/, '')}/qe/identity`;
}
