/**
 * Fault injection for the emulators, switched on programmatically by tests:
 *   emulator.faults.inject({ route: 'attest', kind: 'status', status: 500, times: 2 })
 * The next `times` requests to that route get the fault, then the emulator behaves normally again.
 * Generic kinds (status, hang, malformed-json) work on every route; the others only where they
 * make sense (listed per kind below) and are ignored elsewhere.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export type FaultKind =
  /** Answer `status` (default 500) with the service's error shape; `retryAfterSeconds` adds Retry-After. */
  | 'status'
  /** Never answer: the request stays open until the client gives up or the emulator closes. */
  | 'hang'
  /** 200 with a body that is not JSON. */
  | 'malformed-json'
  /** MAA attest: a token whose signature does not verify. Vault release: a release JWS whose signature does not verify. */
  | 'tampered-jws'
  /** Vault release: the JWS is signed by a certificate for another host (wrong-host.vault.azure.net). */
  | 'wrong-host-x5c'
  /** MAA attest: a token that expired an hour ago. */
  | 'expired-token'
  /** Vault release: the key answers as if it were not exportable. */
  | 'non-exportable'
  /** MAA attest: a token issued by another authority (`iss` https://wrong-authority.attest.azure.net). */
  | 'wrong-authority';

export interface Fault {
  /** Route name: MAA `attest` | `certs` | `openid`; vault `release` | `get` | `create` | `import` | `versions`; IMDS `token` | `thim`; `*` = any. */
  route: string;
  kind: FaultKind;
  /** How many requests get the fault (default 1; Infinity for all until cleared). */
  times?: number;
  status?: number;
  retryAfterSeconds?: number;
}

export const WRONG_AUTHORITY = 'https://wrong-authority.attest.azure.net';
export const WRONG_HOST = 'wrong-host.vault.azure.net';

export class FaultInjector {
  private readonly queue: Array<Fault & { left: number }> = [];
  /** Faults served, per route and kind (`attest:status`). */
  readonly served: Record<string, number> = {};

  inject(fault: Fault): void {
    const left = fault.times ?? 1;
    if (!(left > 0)) throw new RangeError('times must be positive');
    this.queue.push({ ...fault, left });
  }

  clear(): void {
    this.queue.length = 0;
  }

  /** The fault for this request to `route`, if one is armed (consumes one of its `times`). */
  take(route: string): Fault | undefined {
    const i = this.queue.findIndex((f) => f.route === route || f.route === '*');
    if (i < 0) return undefined;
    const f = this.queue[i];
    if (--f.left <= 0) this.queue.splice(i, 1);
    const key = `${route}:${f.kind}`;
    this.served[key] = (this.served[key] ?? 0) + 1;
    return f;
  }
}

/**
 * Serve a generic fault; returns false for kinds the route must handle itself.
 * `errorBody` is the service's error shape for the status.
 */
export function serveGenericFault(fault: Fault, res: ServerResponse, errorBody: (status: number) => unknown): boolean {
  if (fault.kind === 'hang') {
    // Keep the socket; close() of the emulator ends it (closeAllConnections).
    return true;
  }
  if (fault.kind === 'status') {
    const status = fault.status ?? 500;
    const text = JSON.stringify(errorBody(status));
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
      ...(fault.retryAfterSeconds !== undefined ? { 'retry-after': String(fault.retryAfterSeconds) } : {}),
    });
    res.end(text);
    return true;
  }
  if (fault.kind === 'malformed-json') {
    const text = '{"token": "eyJ';
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
    res.end(text);
    return true;
  }
  return false;
}

/** A compact JWS with one signature character changed (still well-formed base64url). */
export function tamperJwsSignature(jws: string): string {
  const dot = jws.lastIndexOf('.');
  const sig = jws.slice(dot + 1);
  // Change a character in the middle: the trailing one may only carry padding bits.
  const i = Math.floor(sig.length / 2);
  const flipped = sig[i] === 'A' ? 'B' : 'A';
  return `${jws.slice(0, dot + 1)}${sig.slice(0, i)}${flipped}${sig.slice(i + 1)}`;
}

export const FAULT_ADMIN_PATH = '/_emulator/faults';
const KINDS: readonly FaultKind[] = ['status', 'hang', 'malformed-json', 'tampered-jws', 'wrong-host-x5c', 'expired-token', 'non-exportable', 'wrong-authority'];

/** Validate a fault given as JSON (the admin route); returns an error message for a bad one. */
export function parseFault(v: unknown): Fault | string {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'body must be a JSON object';
  const o = v as Record<string, unknown>;
  if (typeof o.route !== 'string' || o.route === '') return 'route must be a non-empty string';
  if (typeof o.kind !== 'string' || !(KINDS as readonly string[]).includes(o.kind)) return `kind must be one of ${KINDS.join(', ')}`;
  const num = (k: string, min: number, max: number) => o[k] === undefined || (typeof o[k] === 'number' && Number.isInteger(o[k]) && (o[k] as number) >= min && (o[k] as number) <= max);
  if (!num('times', 1, 1_000_000) || !num('status', 100, 599) || !num('retryAfterSeconds', 0, 3600)) return 'times, status and retryAfterSeconds must be integers in range';
  return {
    route: o.route,
    kind: o.kind as FaultKind,
    ...(o.times !== undefined ? { times: o.times as number } : {}),
    ...(o.status !== undefined ? { status: o.status as number } : {}),
    ...(o.retryAfterSeconds !== undefined ? { retryAfterSeconds: o.retryAfterSeconds as number } : {}),
  };
}

/**
 * The loopback-only admin route every emulator serves, for switching faults from outside the process
 * (e.g. against `skr local`): POST a fault as JSON to arm it, DELETE to clear all, GET for the counts
 * served. Returns false when the request is not for this route.
 */
export function handleFaultAdmin(req: IncomingMessage, res: ServerResponse, faults: FaultInjector): boolean {
  const pathname = (req.url ?? '/').split('?')[0];
  if (pathname !== FAULT_ADMIN_PATH) return false;
  const reply = (status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const peer = req.socket.remoteAddress ?? '';
  if (!(peer === '::1' || peer.startsWith('127.') || peer.startsWith('::ffff:127.'))) {
    req.resume();
    reply(403, { error: 'the fault admin route is for loopback callers only' });
    return true;
  }
  if (req.method === 'GET') {
    req.resume();
    reply(200, { served: faults.served });
  } else if (req.method === 'DELETE') {
    req.resume();
    faults.clear();
    reply(200, { cleared: true });
  } else if (req.method === 'POST') {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= 4096) chunks.push(c);
    });
    req.on('end', () => {
      let parsed: Fault | string;
      try {
        parsed = size > 4096 ? 'body too large' : parseFault(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        parsed = 'body is not JSON';
      }
      if (typeof parsed === 'string') return reply(400, { error: parsed });
      faults.inject(parsed);
      reply(200, { armed: parsed });
    });
  } else {
    req.resume();
    reply(405, { error: 'use GET, POST or DELETE' });
  }
  return true;
}
