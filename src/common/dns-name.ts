/**
 * Endpoint names a caller may give (`maa_endpoint`, `akv_endpoint`) must be DNS host names or IP
 * literals before any allowlist sees them: `*.vault.azure.net`, `.x.vault.azure.net`, `a..b` or a
 * 64-character label parse as URLs but name no host, and an allowlist suffix match must not be the
 * only thing standing between them and a resolver. parseEndpoint (endpoint.ts) applies this check,
 * so every Endpoint value, the one approved and dialled, holds a valid name.
 */
import { InvalidInputError } from './errors';
import { quote } from './clip';

/** Longest endpoint string read at all (a URL with a host of 253 characters and a port fits). */
export const MAX_ENDPOINT_CHARS = 300;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Why `host` (as written, before any URL normalisation) is not a DNS name or IP literal; undefined when it is. */
export function dnsNameProblem(host: string): string | undefined {
  if (host === '') return 'has no host name';
  if (host.startsWith('[') && host.endsWith(']')) return undefined; // IPv6 literal: the URL parser validated it
  const h = host.toLowerCase().replace(/\.$/, '');
  if (IPV4.test(h)) return undefined;
  if (h.length > 253) return 'has a host name longer than 253 characters';
  const labels = h.split('.');
  if (labels.some((l) => l === '')) return 'has an empty DNS label (leading or doubled dot)';
  if (labels.some((l) => l.length > 63)) return 'has a DNS label longer than 63 characters';
  if (!labels.every((l) => LABEL.test(l))) return 'is not a valid DNS name (letters, digits and inner dashes only; no "*")';
  return undefined;
}

/** The host part of `endpoint` as the caller wrote it: `host`, `host:port`, or `https://host[:port][/]`. */
export function rawHost(endpoint: string): string {
  const noScheme = endpoint.replace(/^[A-Za-z][A-Za-z0-9+.-]*:\/\//, '');
  const authority = noScheme.split(/[/?#]/, 1)[0];
  const hostPort = authority.slice(authority.lastIndexOf('@') + 1);
  if (hostPort.startsWith('[')) return hostPort.slice(0, hostPort.indexOf(']') + 1);
  const colon = hostPort.lastIndexOf(':');
  return colon >= 0 ? hostPort.slice(0, colon) : hostPort;
}

/** 400 naming `field` when the endpoint is over-long (checked before any parsing work). */
export function checkEndpointLength(field: string, endpoint: string): void {
  if (endpoint.length > MAX_ENDPOINT_CHARS) {
    throw new InvalidInputError('ERR_ENDPOINT_NAME', `${field} is longer than ${MAX_ENDPOINT_CHARS} characters`);
  }
}

/**
 * 400 naming `field` when a host is not a DNS name / IP literal: the host as the caller wrote it
 * (before URL normalisation could hide a `*` or an empty label) and the host the URL parser made of
 * it (what is dialled) must both be valid.
 */
export function checkEndpointName(field: string, endpoint: string, parsedHostname?: string): void {
  checkEndpointLength(field, endpoint);
  const problem = dnsNameProblem(rawHost(endpoint.trim())) ?? (parsedHostname !== undefined ? dnsNameProblem(parsedHostname) : undefined);
  if (problem) throw new InvalidInputError('ERR_ENDPOINT_NAME', `${field} ${quote(endpoint)} ${problem}`);
}
