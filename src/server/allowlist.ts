/**
 * Which hosts the sidecar may send evidence and tokens to. A caller names `maa_endpoint` and
 * `akv_endpoint` per request; without this check any container in the group could make the sidecar
 * fetch a managed-identity token and hand it to a host of its choosing. Checked before anything
 * else happens for the request: no device call, no token, no connection.
 */
import { parseEndpoint, type Endpoint, type EndpointKind } from '../common/endpoint';
import { SkrError } from '../common/errors';

/**
 * Defaults: the DNS suffixes of Microsoft Azure Attestation, Key Vault and Managed HSM in the public
 * cloud, Azure China (21Vianet) and Azure US Government, as the Azure environments publish them
 * (`az cloud show`, Get-AzEnvironment). Azure China publishes no attestation suffix, so it has none here.
 */
export const DEFAULT_MAA_ALLOWLIST: readonly string[] = ['*.attest.azure.net', '*.attest.azure.us'];
export const DEFAULT_AKV_ALLOWLIST: readonly string[] = [
  '*.vault.azure.net',
  '*.vault.azure.cn',
  '*.vault.usgovcloudapi.net',
  '*.managedhsm.azure.net',
  '*.managedhsm.azure.cn',
  '*.managedhsm.usgovcloudapi.net',
];

export type { EndpointKind };

/** Where the allowlists come from, for error messages that say how to allow an endpoint. */
export const ALLOWLIST_SETTING: Record<EndpointKind, string> = {
  maa: 'SkrSideCarArgs.allowlist.maa or env SKR_ALLOWED_MAA',
  akv: 'SkrSideCarArgs.allowlist.akv or env SKR_ALLOWED_AKV',
};

const FIELD: Record<EndpointKind, string> = { maa: 'maa_endpoint', akv: 'akv_endpoint' };

/** A refused endpoint, kid or caller: 403 with a message naming what would allow it. */
export class ForbiddenError extends SkrError {
  constructor(
    code: 'ERR_ENDPOINT_NOT_ALLOWED' | 'ERR_KID_NOT_ALLOWED' | 'ERR_PEER_NOT_LOOPBACK' | 'ERR_RUNTIME_KEYS_REFUSED',
    message: string) {
    super(code, message);
  }
}

/** One allowlist entry: `host`, `host:port`, `*.suffix` or `*.suffix:port`. No port means 443. */
interface Entry {
  wildcard: boolean;
  host: string;
  port: number;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

function validHost(h: string): boolean {
  if (IPV4.test(h)) return h.split('.').every((o) => Number(o) <= 255);
  return h.length <= 253 && h.split('.').every((l) => LABEL.test(l));
}

/** Parse an entry; returns an error message for a bad one. */
export function parseAllowEntry(raw: string): Entry | string {
  const s = raw.trim().toLowerCase().replace(/^https:\/\//, '').replace(/\/+$/, '');
  if (s === '') return 'empty entry';
  if (s.includes('://')) return `"${raw}": only https endpoints can be allowed (give host, host:port or *.suffix)`;
  const m = /^(\*\.)?([^:/*\s]+)(?::(\d{1,5}))?$/.exec(s);
  if (!m) return `"${raw}" is not host, host:port, *.suffix or *.suffix:port`;
  const host = m[2].replace(/\.$/, '');
  if (!validHost(host)) return `"${raw}" has an invalid host name`;
  if (m[1] && !host.includes('.')) return `"${raw}": a wildcard needs at least two labels after "*." (e.g. *.vault.azure.net)`;
  const port = m[3] ? Number(m[3]) : 443;
  if (port < 1 || port > 65535) return `"${raw}" has an invalid port`;
  return { wildcard: Boolean(m[1]), host, port };
}

export class EndpointAllowlist {
  private readonly entries: Entry[];

  /** Throws a message naming the bad entry; config parsing turns it into a ConfigError. */
  constructor(readonly kind: EndpointKind, readonly patterns: readonly string[]) {
    this.entries = patterns.map((p) => {
      const e = parseAllowEntry(p);
      if (typeof e === 'string') throw new Error(`${kind} allowlist: ${e}`);
      return e;
    });
  }

  /** Whether the parsed endpoint (a string is parsed first; unparsable: false) matches an entry. */
  allows(endpoint: Endpoint | string): boolean {
    const ep = parsedOrUndefined(this.kind, endpoint);
    return ep !== undefined && this.matches(ep);
  }

  private matches(ep: Endpoint): boolean {
    return this.entries.some((e) => e.port === ep.port && (e.wildcard ? ep.hostname.endsWith(`.${e.host}`) : ep.hostname === e.host));
  }

  /** Throw 403 unless the endpoint is https and matches an entry. */
  check(endpoint: Endpoint | string): void {
    if (typeof endpoint === 'string' && /^\s*[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(endpoint) && !/^\s*https:\/\//i.test(endpoint)) {
      throw new ForbiddenError('ERR_ENDPOINT_NOT_ALLOWED', `${FIELD[this.kind]} ${JSON.stringify(endpoint.slice(0, 200))} is refused: only https endpoints are allowed`);
    }
    const ep = parsedOrUndefined(this.kind, endpoint);
    if (ep && this.matches(ep)) return;
    const shown = JSON.stringify(typeof endpoint === 'string' ? endpoint.slice(0, 200) : endpoint.raw);
    const what = ep ? `${ep.hostname}:${ep.port}` : 'it';
    throw new ForbiddenError(
      'ERR_ENDPOINT_NOT_ALLOWED',
      `${FIELD[this.kind]} ${shown} is not allowlisted; add ${what} to ${ALLOWLIST_SETTING[this.kind]} to allow it`,
    );
  }
}

function parsedOrUndefined(kind: EndpointKind, endpoint: Endpoint | string): Endpoint | undefined {
  if (typeof endpoint !== 'string') return endpoint;
  try {
    return parseEndpoint(kind, endpoint);
  } catch {
    return undefined;
  }
}

/** Optional kid allowlist: `name` allows every version of a key, `name/version` exactly that one. */
export class KidAllowlist {
  private readonly names = new Set<string>();
  private readonly exact = new Set<string>();

  constructor(readonly patterns: readonly string[]) {
    for (const p of patterns) {
      const s = p.trim();
      if (!/^[0-9A-Za-z-]{1,127}(\/[0-9A-Za-z]{1,64})?$/.test(s)) throw new Error(`kid allowlist: "${p}" is not name or name/version`);
      // Key names are case-insensitive in Key Vault, versions are lower-case hex.
      if (s.includes('/')) this.exact.add(s.toLowerCase());
      else this.names.add(s.toLowerCase());
    }
  }

  check(kid: string): void {
    const k = kid.trim().toLowerCase();
    const name = k.split('/')[0];
    if (this.names.has(name) || this.exact.has(k)) return;
    throw new ForbiddenError(
      'ERR_KID_NOT_ALLOWED',
      `kid ${JSON.stringify(kid.slice(0, 200))} is not allowlisted; add it to SkrSideCarArgs.allowlist.kid or env SKR_ALLOWED_KIDS`,
    );
  }
}
