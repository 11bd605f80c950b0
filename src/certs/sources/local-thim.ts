/** The host's THIM endpoint on the Azure metadata address (answers only with `Metadata: true`). */
import { parseThimCertificates, thimToChain } from '../thim';
import type { AmdCertChain, CollateralSource } from '../types';
import { getOk, HttpSourceOptions, parseUpstream, trimSlash } from './http';

export const LOCAL_THIM_BASE = 'http://169.254.169.254';
export const LOCAL_THIM_PATH = '/metadata/THIM/amd/certification';

export interface LocalThimSourceOptions extends HttpSourceOptions {
  /** Full URL; overrides baseUrl + the standard path. */
  url?: string;
}

export class LocalThimSource implements CollateralSource {
  readonly name = 'local-thim';
  readonly url: string;
  constructor(private readonly opts: LocalThimSourceOptions = {}) {
    this.url = opts.url ?? `${trimSlash(opts.baseUrl ?? LOCAL_THIM_BASE)}${LOCAL_THIM_PATH}`;
  }

  async fetch(_key?: unknown, signal?: AbortSignal): Promise<AmdCertChain> {
    const { body } = await getOk(this.url, this.name, this.opts, { Metadata: 'true' }, signal);
    return parseUpstream(this.name, 'THIM certificates', () => thimToChain(parseThimCertificates(body.toString('utf8')), this.name));
  }
}
