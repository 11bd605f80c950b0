/**
 * `SkrSideCarArgs.certcache` → a CollateralSource, interpreted as the reference sidecar does
 * (microsoft/confidential-sidecar-containers, pkg/attest/platform_cert_fetcher.go, read 2026-11):
 *
 * - `endpoint` is a host plus optional path WITHOUT a scheme; the reference prefixes `https://`
 *   (AMD, AzCache) or `http://` (LocalTHIM). An explicit `http(s)://` is kept here (emulators, tests).
 * - AMD:       GET https://{endpoint}/{tee_type}/{chipId}?ucodeSPL&snpSPL&teeSPL&blSPL and
 *              https://{endpoint}/{tee_type}/cert_chain. Its own default is endpoint
 *              `kdsintf.amd.com/vcek/v1`, tee_type `Milan`. Here tee_type, when given, forces the
 *              product; otherwise the report's product (CPUID) is used, which also covers Genoa/Turin.
 * - AzCache:   GET https://{endpoint}/{tee_type}/certificates/{chipId}/{tcb hex}?{api_version}&{client_id}
 *              where api_version/client_id are whole query terms (`api-version=…`, `clientId=…`).
 *              Its default helper uses `global.acccache.azure.net`, `SevSnpVM`, `api-version=2020-10-15-preview`,
 *              `clientId=ConfidentialACI`; at runtime it sends no clientId unless one is configured (and
 *              warns), which is kept here. Bare values (`2020-10-15-preview`) are accepted too.
 * - LocalTHIM: GET http://{endpoint} with `Metadata: true`; default
 *              `169.254.169.254/metadata/THIM/amd/certification` (the reference's GetThimCerts default).
 *
 * The reference has no default endpoint_type: with no certcache it cannot refresh at all
 * ("certificate endpoint not set") and only falls back to local THIM for the initial bundle. Here an
 * absent/empty certcache yields the local THIM source (what the reference's own AKS and ACI examples
 * configure), an empty `endpoint` takes the per-type default above, and an endpoint without a type,
 * or an unknown type, is a ConfigError (the reference fails those at first use).
 */
import { ConfigError } from '../../common/errors';
import { parseProduct, Product } from '../../snp/tcb';
import type { CollateralSource } from '../types';
import { AmdKdsSource } from './amd-kds';
import { AzureCacheSource, AZURE_CACHE_API_VERSION } from './azure-cache';
import type { HttpSourceOptions } from './http';
import { LocalThimSource, LOCAL_THIM_BASE, LOCAL_THIM_PATH } from './local-thim';

export interface CertCacheArgs {
  endpoint_type?: 'AMD' | 'AzCache' | 'LocalTHIM' | string;
  endpoint?: string;
  tee_type?: string;
  api_version?: string;
  client_id?: string;
}

/** `host/path` or `scheme://host/path` → { origin, path }. */
function splitEndpoint(endpoint: string, defaultScheme: 'https' | 'http'): { origin: string; path: string } {
  const withScheme = /^https?:\/\//i.test(endpoint) ? endpoint : `${defaultScheme}://${endpoint}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch (e) {
    throw new ConfigError(`certcache endpoint "${endpoint}" is not a host[/path]`, e);
  }
  if (u.search || u.hash || u.username || u.password) throw new ConfigError(`certcache endpoint "${endpoint}" must be host[/path] only`);
  return { origin: u.origin, path: u.pathname.replace(/\/+$/, '') };
}

/** `api-version=X` or `X` → `X`. */
function queryValue(term: string | undefined, name: string): string | undefined {
  if (term === undefined || term.trim() === '') return undefined;
  const t = term.trim();
  const prefix = `${name}=`;
  return t.toLowerCase().startsWith(prefix.toLowerCase()) ? decodeURIComponent(t.slice(prefix.length)) : t;
}

export function collateralSourceFromArgs(certcache: CertCacheArgs | undefined, opts: HttpSourceOptions = {}): CollateralSource {
  const type = certcache?.endpoint_type?.trim() ?? '';
  const endpoint = certcache?.endpoint?.trim() ?? '';
  if (type === '' && endpoint === '') return new LocalThimSource(opts);
  if (type === '') throw new ConfigError(`certcache.endpoint "${endpoint}" given without endpoint_type (AMD, AzCache or LocalTHIM)`);

  switch (type.toLowerCase()) {
    case 'amd': {
      const { origin, path } = splitEndpoint(endpoint || 'kdsintf.amd.com/vcek/v1', 'https');
      let product: Product | undefined;
      if (certcache?.tee_type) {
        try {
          product = parseProduct(certcache.tee_type);
        } catch (e) {
          throw new ConfigError(`certcache.tee_type "${certcache.tee_type}" is not Milan, Genoa or Turin`, e);
        }
      }
      return new AmdKdsSource({ ...opts, baseUrl: origin, pathPrefix: path || '/vcek/v1', ...(product ? { product } : {}) });
    }
    case 'azcache': {
      const { origin, path } = splitEndpoint(endpoint || 'global.acccache.azure.net', 'https');
      const clientId = queryValue(certcache?.client_id, 'clientId');
      return new AzureCacheSource({
        ...opts,
        baseUrl: origin + path,
        teeType: certcache?.tee_type?.trim() || 'SevSnpVM',
        apiVersion: queryValue(certcache?.api_version, 'api-version') ?? AZURE_CACHE_API_VERSION,
        ...(clientId ? { clientId } : {}),
      });
    }
    case 'localthim': {
      const { origin, path } = splitEndpoint(endpoint || `${new URL(LOCAL_THIM_BASE).host}${LOCAL_THIM_PATH}`, 'http');
      return new LocalThimSource({ ...opts, url: origin + (path || LOCAL_THIM_PATH) });
    }
    default:
      throw new ConfigError(`certcache.endpoint_type "${type}" is not AMD, AzCache or LocalTHIM`);
  }
}
