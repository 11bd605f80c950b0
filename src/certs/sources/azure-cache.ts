/**
 * Azure's certificate cache (the THIM front door for SEV-SNP VMs):
 *   {base}/{teeType=SevSnpVM}/certificates/{chipId hex}/{tcb hex}?api-version=2020-10-15-preview[&clientId=...]
 * The reference sidecar formats the TCB with strconv.FormatUint(tcb, 16) (no zero padding) and
 * treats the body as a PEM bundle (VCEK, ASK, ARK), reading the TCB from the VCEK; THIM-shaped JSON
 * is also accepted. Both answers become the same AmdCertChain.
 */
import { toHex } from '../../common/bytes';
import { splitPem } from '../pem';
import { parseThimCertificates, thimToChain } from '../thim';
import type { AmdCertChain, CollateralKey, CollateralSource } from '../types';
import { readVcekExtensions } from '../vcek';
import { getOk, HttpSourceOptions, maxAgeOf, parseUpstream, trimSlash } from './http';

export const AZURE_CACHE_BASE = 'https://global.acccache.azure.net';
export const AZURE_CACHE_API_VERSION = '2020-10-15-preview';

export interface AzureCacheSourceOptions extends HttpSourceOptions {
  /** Path segment before `/certificates`; default `SevSnpVM`. */
  teeType?: string;
  apiVersion?: string;
  clientId?: string;
}

export class AzureCacheSource implements CollateralSource {
  readonly name = 'azure-cache';
  constructor(private readonly opts: AzureCacheSourceOptions = {}) {}

  url(key: CollateralKey): string {
    const base = trimSlash(this.opts.baseUrl ?? AZURE_CACHE_BASE);
    const q = new URLSearchParams({ 'api-version': this.opts.apiVersion ?? AZURE_CACHE_API_VERSION });
    if (this.opts.clientId) q.set('clientId', this.opts.clientId);
    return `${base}/${this.opts.teeType ?? 'SevSnpVM'}/certificates/${toHex(key.chipId)}/${key.tcb.toString(16)}?${q.toString()}`;
  }

  async fetch(key: CollateralKey, signal?: AbortSignal): Promise<AmdCertChain> {
    const { body, headers } = await getOk(this.url(key), this.name, this.opts, {}, signal);
    const chain = parseUpstream(this.name, 'Azure cache certificates', () => {
      const text = body.toString('utf8');
      if (text.trimStart().startsWith('{')) return thimToChain(parseThimCertificates(text), this.name);
      const pems = splitPem(text, 'Azure cache bundle');
      if (pems.length !== 3) throw new Error(`expected VCEK, ASK and ARK, got ${pems.length} certificate(s)`);
      return { vcekPem: pems[0], chainPem: pems[1] + pems[2], tcbm: readVcekExtensions(pems[0]).tcbRaw, source: this.name };
    });
    const maxAge = maxAgeOf(headers);
    if (chain.cacheControlSeconds === undefined && maxAge !== undefined) chain.cacheControlSeconds = maxAge;
    return chain;
  }
}
