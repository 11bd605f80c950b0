/** Plumbing every emulator shares: bounded request bodies, the Host/Origin guard and listening on loopback. */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkHostAndOrigin, type HostGuardPolicy } from '../common/host-guard';

/**
 * Answer 403 (in the emulator's error shape, connection closed) when the request's Host or Origin is
 * not allowed (see src/common/host-guard.ts); returns true when it did.
 */
export function refuseForeignRequest(req: IncomingMessage, res: ServerResponse, policy: HostGuardPolicy, errorBody: (code: string, message: string) => unknown): boolean {
  const refusal = checkHostAndOrigin(req, policy);
  if (!refusal) return false;
  req.resume();
  const text = JSON.stringify(errorBody(refusal.code, refusal.message));
  res.writeHead(403, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), connection: 'close' });
  res.end(text);
  return true;
}

/** Read a request body, failing with `tooLarge()` (and dropping the socket) past `max` bytes. */
export function readRequestBody(req: IncomingMessage, max: number, tooLarge: () => Error): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        reject(tooLarge());
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Listen on 127.0.0.1 (port 0: any free port) and return the port. */
export async function listenLoopback(server: Server, port = 0): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** Stop listening and drop open (keep-alive) connections; resolves when the server has closed. */
export function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.close((err) => (err ? reject(err) : resolve()));
    server.closeAllConnections();
  });
}
