/**
 * Who may call the sidecar: loopback peers only (it listens on 127.0.0.1, but a proxy or a changed
 * listen address must not quietly open it up), and, when a shared secret is configured, only callers
 * presenting it as `Authorization: Bearer <secret>`. GET /status stays open for health probes.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { isIP } from 'node:net';
import { checkHostAndOrigin, type HostGuardPolicy } from '../common/host-guard';
import { ForbiddenError } from './allowlist';
import { HttpError } from './http-errors';

/** 127.0.0.0/8, ::1, and IPv4-mapped 127.x (`::ffff:127.0.0.1`). */
export function isLoopbackAddress(addr: string | undefined): boolean {
  if (!addr) return false;
  const a = addr.toLowerCase();
  if (a === '::1' || a === '0:0:0:0:0:0:0:1') return true;
  const v4 = a.startsWith('::ffff:') ? a.slice(7) : a;
  return isIP(v4) === 4 && v4.split('.')[0] === '127';
}

/** Constant-time comparison of a presented secret with the configured one (lengths hidden by hashing). */
export function secretMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/** 403 (connection closed) for a Host or Origin that is not allowed: see src/common/host-guard.ts. */
export function hostGuard(policy: HostGuardPolicy, onRefused?: (reason: string) => void): RequestHandler {
  return (req, _res, next) => {
    const refusal = checkHostAndOrigin(req, policy);
    if (!refusal) return next();
    onRefused?.(refusal.reason);
    next(new HttpError(refusal.code, refusal.message, { connection: 'close' }));
  };
}

export function callerGuard(opts: { apiSecret?: string; onRefused?: (reason: string) => void }): RequestHandler {
  return (req, _res, next) => {
    if (!isLoopbackAddress(req.socket.remoteAddress)) {
      opts.onRefused?.('peer');
      next(new ForbiddenError('ERR_PEER_NOT_LOOPBACK', 'the sidecar only serves callers on the loopback interface'));
      return;
    }
    if (opts.apiSecret && !(req.method === 'GET' && req.path === '/status')) {
      const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.get('authorization') ?? '');
      if (!m || !secretMatches(m[1], opts.apiSecret)) {
        opts.onRefused?.('auth');
        const e = new HttpError('ERR_UNAUTHORIZED', 'this sidecar requires "Authorization: Bearer <secret>" (SKR_API_SECRET)', { 'www-authenticate': 'Bearer realm="skr-sidecar"' });
        next(e);
        return;
      }
    }
    next();
  };
}
