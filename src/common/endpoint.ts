/**
 * An MAA or vault endpoint as a caller names it (`host`, `host:port` or an https origin), parsed
 * once into the one value every part uses: the allowlist matches its host and port, the MAA and
 * vault clients dial its origin, the token audience follows its cloud, the caches key on its
 * origin. No other code turns an endpoint string into a host, so the host that is approved is the
 * host that is dialled.
 */
import { checkEndpointLength, checkEndpointName } from './dns-name';
import { InvalidInputError } from './errors';

export type EndpointKind = 'maa' | 'akv';

/** The Azure cloud a DNS suffix belongs to; `custom` for any other name (allowlisted hosts, emulators). */
export type AzureCloud = 'public' | 'china' | 'usgov' | 'germany' | 'custom';

/** What an Azure DNS suffix names: a Key Vault, a Managed HSM or an attestation provider. */
export type AzureService = 'vault' | 'managedhsm' | 'attest';

export interface Endpoint {
  readonly kind: EndpointKind;
  /** As the caller wrote it (trimmed, at most 200 characters), for messages only: never dialled. */
  readonly raw: string;
  /** `https://host[:port]`: lower-case host, no trailing dot, no default port. What is dialled. */
  readonly origin: string;
  /** DNS name or IP literal (IPv6 in brackets), lower case, no trailing dot. */
  readonly hostname: string;
  readonly port: number;
  /** `hostname[:port]`, the port only when not 443 (as URL.host). */
  readonly host: string;
  readonly cloud: AzureCloud;
  /** The service the DNS suffix names, when it is an Azure one and has a name label in front. */
  readonly service?: AzureService;
  /** The suffix that gave `cloud` and `service` (e.g. `vault.azure.cn`). */
  readonly suffix?: string;
}

/** Azure DNS suffixes of Key Vault, Managed HSM and MAA per cloud (`az cloud show`, Get-AzEnvironment). */
export const AZURE_SUFFIXES: Readonly<Record<string, { service: AzureService; cloud: AzureCloud }>> = {
  'vault.azure.net': { service: 'vault', cloud: 'public' },
  'vault.azure.cn': { service: 'vault', cloud: 'china' },
  'vault.usgovcloudapi.net': { service: 'vault', cloud: 'usgov' },
  'vault.microsoftazure.de': { service: 'vault', cloud: 'germany' },
  'managedhsm.azure.net': { service: 'managedhsm', cloud: 'public' },
  'managedhsm.azure.cn': { service: 'managedhsm', cloud: 'china' },
  'managedhsm.usgovcloudapi.net': { service: 'managedhsm', cloud: 'usgov' },
  'managedhsm.microsoftazure.de': { service: 'managedhsm', cloud: 'germany' },
  'attest.azure.net': { service: 'attest', cloud: 'public' },
  'attest.azure.us': { service: 'attest', cloud: 'usgov' },
};

type Why = 'empty' | 'unparsable' | 'scheme' | 'credentials' | 'query' | 'path' | 'no-host';

/** Field-specific messages, unchanged from the clients that used to parse endpoints themselves. */
function endpointError(kind: EndpointKind, raw: string, why: Why, scheme?: string): InvalidInputError {
  const shown = JSON.stringify(raw.slice(0, 200));
  if (kind === 'maa') {
    const text: Record<Why, string> = {
      empty: 'is empty',
      unparsable: 'is not a host name or URL',
      scheme: `scheme ${scheme ?? ''} is not allowed (https only)`,
      credentials: 'must not carry credentials',
      query: 'must not carry a query or fragment',
      path: 'must not carry a path',
      'no-host': 'has no host',
    };
    return new InvalidInputError('ERR_MAA_ENDPOINT', `MAA endpoint ${shown}: ${text[why]}`);
  }
  if (why === 'empty' || why === 'unparsable' || why === 'no-host') return new InvalidInputError('ERR_AKV_ENDPOINT', `akv_endpoint ${shown} is not a host name`);
  if (why === 'scheme') return new InvalidInputError('ERR_AKV_ENDPOINT', `akv_endpoint ${shown} must use https`);
  return new InvalidInputError('ERR_AKV_ENDPOINT', `akv_endpoint ${shown} must be a bare host (no path, query or credentials)`);
}

const HAS_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/** The request field an endpoint kind comes from, named in refusals of its name. */
const FIELD: Record<EndpointKind, string> = { maa: 'maa_endpoint', akv: 'akv_endpoint' };

/**
 * Parse an endpoint: a bare host, `host:port`, or an https URL without path, query, fragment or
 * credentials, whose host is a DNS name or an IP literal (no `*`, empty or over-long labels, at most
 * MAX_ENDPOINT_CHARS in all). Anything else is an InvalidInputError (400) naming the field; the
 * allowlist never sees it.
 */
export function parseEndpoint(kind: EndpointKind, raw: string): Endpoint {
  const e = typeof raw === 'string' ? raw.trim() : '';
  if (e === '') throw endpointError(kind, String(raw ?? ''), 'empty');
  checkEndpointLength(FIELD[kind], e);
  const hasScheme = HAS_SCHEME.test(e);
  let url: URL;
  try {
    url = new URL(hasScheme ? e : `https://${e}`);
  } catch {
    throw endpointError(kind, raw, 'unparsable');
  }
  if (url.protocol !== 'https:') throw endpointError(kind, raw, 'scheme', url.protocol);
  if (url.username !== '' || url.password !== '') throw endpointError(kind, raw, 'credentials');
  if (url.search !== '' || url.hash !== '' || e.includes('?') || e.includes('#')) throw endpointError(kind, raw, 'query');
  if (url.pathname !== '/' && url.pathname !== '') throw endpointError(kind, raw, 'path');
  // A bare "host/" would pass the checks above; refuse anything but host[:port] without a scheme.
  if (!hasScheme && !/^[^/\s]+$/.test(e)) throw endpointError(kind, raw, 'path');
  const hostname = url.hostname.toLowerCase().replace(/\.$/, '');
  if (hostname === '') throw endpointError(kind, raw, 'no-host');
  checkEndpointName(FIELD[kind], e, hostname);
  const port = url.port ? Number(url.port) : 443;
  const host = port === 443 ? hostname : `${hostname}:${port}`;
  let cloud: AzureCloud = 'custom';
  let service: AzureService | undefined;
  let suffix: string | undefined;
  for (const [s, v] of Object.entries(AZURE_SUFFIXES)) {
    if (hostname.endsWith(`.${s}`) && hostname.length > s.length + 1) {
      ({ cloud, service } = v);
      suffix = s;
      break;
    }
  }
  return Object.freeze({ kind, raw: e.slice(0, 200), origin: `https://${host}`, hostname, port, host, cloud, ...(service ? { service, suffix } : {}) });
}

/** An Endpoint as is, or a string parsed as `kind` (CLI and tests hand strings in). */
export function toEndpoint(kind: EndpointKind, e: Endpoint | string): Endpoint {
  return typeof e === 'string' ? parseEndpoint(kind, e) : e;
}
