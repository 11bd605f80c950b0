/**
 * Host and Origin checks against DNS rebinding and browser requests, shared by the sidecar and the
 * emulators. A page in a browser on the same machine can reach a loopback port in two ways:
 *   - after DNS rebinding its own name to 127.0.0.1: the browser then sends `Host: <its name>`;
 *   - directly, by URL (`http://127.0.0.1:8080`): the browser then sends `Origin: <the page's origin>`
 *     on every POST (and on CORS GETs), whatever the Content-Type (text/plain needs no preflight).
 * So a request is served only when its one Host header names loopback (`localhost`, `127.0.0.1`,
 * `[::1]`, any port) or a configured name, and it carries no Origin header unless that origin is
 * configured. curl and the reference test clients send `Host: localhost:8080` or `127.0.0.1:<port>`
 * and no Origin, so they pass unchanged.
 */
import type { IncomingMessage } from 'node:http';

/** Host names every guard allows (compared in lower case, with any port). */
export const LOOPBACK_HOSTS: readonly string[] = ['localhost', '127.0.0.1', '[::1]'];

/** Where the extra names come from, for messages that say how to allow them. */
export const HOSTS_SETTING = 'SKR_ALLOWED_HOSTS (or SkrSideCarArgs.allowlist.hosts)';
export const ORIGINS_SETTING = 'SKR_ALLOWED_ORIGINS (or SkrSideCarArgs.allowlist.origins)';

export interface HostGuardSettings {
  /** Extra host names (no port, no scheme): DNS names, IPv4 or bracketed IPv6 literals. */
  allowedHosts?: readonly string[];
  /** Origins (`scheme://host[:port]`) whose requests are served. */
  allowedOrigins?: readonly string[];
}

export interface HostGuardPolicy {
  readonly hosts: ReadonlySet<string>;
  readonly origins: ReadonlySet<string>;
}

export type HostRefusalReason = 'host' | 'origin';

export interface HostRefusal {
  reason: HostRefusalReason;
  code: 'ERR_HOST_NOT_ALLOWED' | 'ERR_ORIGIN_NOT_ALLOWED';
  message: string;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;
const IPV6_LITERAL = /^\[[0-9a-f:.]{2,45}\]$/;

function validHostName(h: string): boolean {
  if (IPV4.test(h)) return h.split('.').every((o) => Number(o) <= 255);
  if (IPV6_LITERAL.test(h)) return true;
  return h.length <= 253 && h.split('.').every((l) => LABEL.test(l));
}

/** Canonical origin (`url.origin`) of an allowed-origin entry, or a message saying what is wrong. */
function parseOriginEntry(raw: string): string | { error: string } {
  const s = raw.trim();
  if (s.toLowerCase() === 'null') return { error: '"null" cannot be allowed: every sandboxed or file page sends it' };
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    return { error: `"${raw}" is not an origin (scheme://host[:port])` };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return { error: `"${raw}": only http and https origins can be allowed` };
  if (url.username || url.password || url.search || url.hash || !/^[a-z][a-z0-9+.-]*:\/\/[^/]+\/?$/i.test(s)) {
    return { error: `"${raw}" is not an origin: give scheme://host[:port] without path, query or credentials` };
  }
  return url.origin;
}

/**
 * Validate the settings once; throws an Error naming the bad entry (config turns it into a
 * ConfigError). Entries are compared in lower case.
 */
export function hostGuardPolicy(settings: HostGuardSettings = {}): HostGuardPolicy {
  const hosts = new Set(LOOPBACK_HOSTS);
  for (const raw of settings.allowedHosts ?? []) {
    const h = raw.trim().toLowerCase();
    if (!validHostName(h)) throw new Error(`allowed hosts: "${raw}" is not a host name (give the name without scheme or port, e.g. sidecar.internal)`);
    hosts.add(h);
  }
  const origins = new Set<string>();
  for (const raw of settings.allowedOrigins ?? []) {
    const o = parseOriginEntry(raw);
    if (typeof o !== 'string') throw new Error(`allowed origins: ${o.error}`);
    origins.add(o);
  }
  return { hosts, origins };
}

/** At most 100 characters of a header value, quoted, so a message stays short and printable. */
function shown(value: string): string {
  return value.length > 100 ? `${JSON.stringify(value.slice(0, 100))}… (cut)` : JSON.stringify(value);
}

/** The host part of a Host header value (`name`, `name:port`, `[v6]`, `[v6]:port`), or undefined when malformed. */
export function hostOfHeader(value: string): string | undefined {
  const m = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(value.trim().toLowerCase());
  if (!m || (m[2] !== undefined && Number(m[2]) > 65535)) return undefined;
  return m[1];
}

/** Every value of one header as sent (node joins or drops repeated headers; rawHeaders keeps them all). */
function headerValues(rawHeaders: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) if (rawHeaders[i].toLowerCase() === name) out.push(rawHeaders[i + 1]);
  return out;
}

/** Undefined when the request may be served; otherwise why not (answer 403 with `message`). */
export function checkHostAndOrigin(req: Pick<IncomingMessage, 'rawHeaders' | 'url'>, policy: HostGuardPolicy): HostRefusal | undefined {
  const host = (message: string): HostRefusal => ({ reason: 'host', code: 'ERR_HOST_NOT_ALLOWED', message });
  // An absolute-form target (`POST http://other/...`) names its host in the URL, which wins over Host.
  if (!(req.url ?? '').startsWith('/')) return host('the request target must be a path: absolute-form (proxy) requests are not served');
  const hosts = headerValues(req.rawHeaders, 'host');
  if (hosts.length !== 1) return host(`a request needs exactly one Host header (got ${hosts.length})`);
  const name = hostOfHeader(hosts[0]);
  if (name === undefined || !policy.hosts.has(name)) {
    return host(
      `Host ${shown(hosts[0])} is refused: only localhost, 127.0.0.1, [::1] or a name in ${HOSTS_SETTING} are served ` +
        '(a browser sends its page\'s name after DNS rebinding)',
    );
  }
  const origins = headerValues(req.rawHeaders, 'origin');
  if (origins.length === 0) return undefined;
  const origin = (message: string): HostRefusal => ({ reason: 'origin', code: 'ERR_ORIGIN_NOT_ALLOWED', message });
  if (origins.length > 1) return origin('a request may carry at most one Origin header');
  if (!policy.origins.has(origins[0].trim().toLowerCase())) {
    return origin(`requests from browsers are refused: Origin ${shown(origins[0])} is not in ${ORIGINS_SETTING}`);
  }
  return undefined;
}
