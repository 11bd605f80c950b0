/**
 * AMD's Key Distribution Service. VCEK (DER) at
 *   {base}/vcek/v1/{product}/{hwid}?blSPL=NN&teeSPL=NN&snpSPL=NN&ucodeSPL=NN
 * (Turin: hwid = first 8 bytes of CHIP_ID, and fmcSPL=NN first), ASK+ARK (PEM) at
 *   {base}/vcek/v1/{product}/cert_chain.
 * SPLs are zero-padded to two digits as AMD's spec examples and virtee/snpguest do (KDS also takes
 * unpadded ones, which go-sev-guest sends). KDS rate-limits hard, so the chain is memoised per
 * product here and VCEKs are cached by CollateralCache above this.
 */
import { certificateFromDer } from '../../asn1/certificate';
import { toHex } from '../../common/bytes';
import { decodeTcb, Product } from '../../snp/tcb';
import { derToPem, looksLikePem, pemCertificatesToDer, splitPem } from '../pem';
import type { AmdCertChain, CollateralKey, CollateralSource } from '../types';
import { readVcekExtensions } from '../vcek';
import { getOk, HttpSourceOptions, maxAgeOf, parseUpstream, trimSlash } from './http';

export const AMD_KDS_BASE = 'https://kdsintf.amd.com';

export interface AmdKdsSourceOptions extends HttpSourceOptions {
  /** Path under the base; default `/vcek/v1`. */
  pathPrefix?: string;
  /** Force a product line instead of the one the key carries (the reference's `tee_type`). */
  product?: Product;
}

const spl = (n: number | undefined) => String(n ?? 0).padStart(2, '0');

/** The VCEK URL for a key, exactly as KDS expects it. */
export function kdsVcekUrl(base: string, product: Product, chipId: Buffer, tcb: bigint): string {
  const t = decodeTcb(tcb, product);
  if (product === 'Turin') {
    const hwid = toHex(chipId.subarray(0, 8));
    return `${base}/${product}/${hwid}?fmcSPL=${spl(t.fmc)}&blSPL=${spl(t.bootloader)}&teeSPL=${spl(t.tee)}&snpSPL=${spl(t.snp)}&ucodeSPL=${spl(t.microcode)}`;
  }
  return `${base}/${product}/${toHex(chipId)}?blSPL=${spl(t.bootloader)}&teeSPL=${spl(t.tee)}&snpSPL=${spl(t.snp)}&ucodeSPL=${spl(t.microcode)}`;
}

export class AmdKdsSource implements CollateralSource {
  readonly name = 'amd-kds';
  /** Base including the path prefix, e.g. `https://kdsintf.amd.com/vcek/v1`. */
  readonly base: string;
  private readonly chains = new Map<Product, Promise<string>>();

  constructor(private readonly opts: AmdKdsSourceOptions = {}) {
    this.base = `${trimSlash(opts.baseUrl ?? AMD_KDS_BASE)}${trimSlash(opts.pathPrefix ?? '/vcek/v1')}`;
  }

  vcekUrl(key: CollateralKey): string {
    return kdsVcekUrl(this.base, this.opts.product ?? key.product, key.chipId, key.tcb);
  }

  chainUrl(product: Product): string {
    return `${this.base}/${product}/cert_chain`;
  }

  private certChain(product: Product, signal?: AbortSignal): Promise<string> {
    let p = this.chains.get(product);
    if (!p) {
      p = (async () => {
        const { body } = await getOk(this.chainUrl(product), this.name, this.opts, {}, signal);
        return parseUpstream(this.name, 'KDS cert_chain', () => {
          const pems = splitPem(body.toString('utf8'), 'KDS cert_chain');
          if (pems.length !== 2) throw new Error(`expected ASK and ARK, got ${pems.length} certificate(s)`);
          return pems.join('');
        });
      })();
      this.chains.set(product, p);
      // Only successes are remembered; a failure is retried on the next call.
      p.catch(() => this.chains.delete(product));
    }
    return p;
  }

  async fetch(key: CollateralKey, signal?: AbortSignal): Promise<AmdCertChain> {
    const product = this.opts.product ?? key.product;
    const [vcek, chainPem] = await Promise.all([
      getOk(this.vcekUrl(key), this.name, this.opts, {}, signal),
      this.certChain(product, signal),
    ]);
    return parseUpstream(this.name, 'KDS VCEK', () => {
      // KDS serves DER; accept PEM too so mirrors and emulators may choose.
      const der = looksLikePem(vcek.body) ? pemCertificatesToDer(vcek.body.toString('latin1'), 'KDS VCEK')[0] : vcek.body;
      if (!der) throw new Error('no certificate in the response');
      certificateFromDer(der, 'KDS VCEK'); // throws on a non-certificate
      const chain: AmdCertChain = { vcekPem: derToPem(der), chainPem, tcbm: readVcekExtensions(der).tcbRaw, source: this.name };
      const maxAge = maxAgeOf(vcek.headers);
      if (maxAge !== undefined) chain.cacheControlSeconds = maxAge;
      return chain;
    });
  }
}
