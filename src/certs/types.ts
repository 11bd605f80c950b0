/**
 * Shapes shared by every collateral source and by verification. A chain is always carried as PEM
 * text (what THIM, KDS `cert_chain` and the `/attest/combined` endorsements use) plus metadata.
 */
import type { Product } from '../snp/tcb';

/** A VCEK (or VLEK) with its ASK/ASVK + ARK, as PEM. */
export interface AmdCertChain {
  /** PEM of the VCEK/VLEK. */
  vcekPem: string;
  /** PEM of the ASK then the ARK. */
  chainPem: string;
  /** TCB the VCEK was issued for (THIM `tcbm`, or read from the VCEK's extensions). */
  tcbm: bigint;
  /** Freshness for the cache, in seconds, when the source said. */
  cacheControlSeconds?: number;
  /** Where this came from: `security-context`, `env`, `local-thim`, `amd-kds`, `azure-cache`, `device`, `simulator`. */
  source: string;
}

/** What identifies the VCEK a report needs. */
export interface CollateralKey {
  product: Product;
  /** 64-byte CHIP_ID from the report (the KDS hwid). */
  chipId: Buffer;
  /** REPORTED_TCB from the report. */
  tcb: bigint;
}

export interface CollateralSource {
  /** Stable name used in logs, errors and `/status`. */
  readonly name: string;
  /** Fetch the chain for `key`. Sources that cannot choose (THIM, security context) ignore the key. */
  fetch(key: CollateralKey, signal?: AbortSignal): Promise<AmdCertChain>;
}

export type { FetchLike } from '../common/http';
