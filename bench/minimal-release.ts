/**
 * The lower bound of the warm /key/release row: the least work any Node implementation of a warm
 * release has to do on top of the vault call. A bare node:http server on loopback that, per request,
 * makes the same vault release POST as the vault-only floor (same keep-alive client, the ready MAA
 * token and identity token), verifies the release JWS (jose compactVerify, chain cached: the same
 * ReleaseJwsVerifier the sidecar uses), unwraps key_hsm (RSA-OAEP + AES-KWP) with the KEK the token
 * binds, and answers the JWK as the sidecar does. Nothing else: no framework, no request validation,
 * no allowlists, deadline, slots, telemetry or audit line. The sidecar row is compared to it to
 * separate what the sidecar chooses to do from what a release costs.
 *
 * The same release is also served by a bare express 5 app with the sidecar's body parsing
 * (`express.text`, `res.json`): the difference between the two is what the framework costs.
 */
import * as http from 'node:http';
import express from 'express';
import type { KeyObject } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { ReleaseJwsVerifier } from '../src/akv/jws';
import { releasedKeyToJwk } from '../src/akv/jwk';
import { decodeKeyHsm } from '../src/akv/key-hsm';
import { unwrapKeyMaterial, type ReleaseEnc } from '../src/akv/wrap';
import { createHttpsFetch } from '../src/common/https-fetch';

export interface MinimalReleaseOptions {
  /** The vault release URL, headers (identity token) and body (MAA token, enc) of the vault-only floor. */
  vault: { url: string; headers: Record<string, string>; body: string };
  caPem: string;
  /** The private KEK the MAA token's runtime data binds. */
  kek: KeyObject;
  enc: ReleaseEnc;
}

export interface MinimalRelease {
  /** The bare node:http server. */
  url: string;
  /** The same release behind express 5. */
  expressUrl: string;
  close(): Promise<void>;
}

const MAX_REQUEST_BYTES = 64 * 1024;

export async function startMinimalRelease(opts: MinimalReleaseOptions): Promise<MinimalRelease> {
  const client = createHttpsFetch({ extraCaPem: [opts.caPem] });
  const jws = new ReleaseJwsVerifier({ extraCaPem: [opts.caPem] });
  const vaultUrl = new URL(opts.vault.url);

  const release = async (): Promise<{ key: string }> => {
    const answer = await client.request(vaultUrl, { method: 'POST', headers: opts.vault.headers, body: opts.vault.body, timeoutMs: 30_000 });
    const text = (await answer.body()).toString('utf8');
    if (answer.status !== 200) throw new Error(`vault answered ${answer.status}`);
    const payload = await jws.verify((JSON.parse(text) as { value: string }).value, vaultUrl.hostname);
    const key = (payload.response as { key: { key: { key_hsm: string; kty: string; kid: string } } }).key.key;
    const keyHsm = decodeKeyHsm(key.key_hsm);
    const material = unwrapKeyMaterial(keyHsm.ciphertext, opts.kek, opts.enc);
    return { key: JSON.stringify(releasedKeyToJwk({ kty: key.kty, material, kid: key.kid })) };
  };

  const server = http.createServer((req, res) => {
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_REQUEST_BYTES) req.destroy();
    });
    req.on('end', () => {
      release().then(
        (answer) => {
          const body = JSON.stringify(answer);
          res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
          res.end(body);
        },
        (e: unknown) => {
          res.writeHead(502, { 'content-type': 'text/plain' });
          res.end(String((e as Error).message).slice(0, 200));
        },
      );
    });
  });
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(express.text({ type: () => true, limit: MAX_REQUEST_BYTES }));
  app.post('/key/release', async (_req, res) => {
    try {
      res.json(await release());
    } catch (e) {
      res.status(502).type('text').send(String((e as Error).message).slice(0, 200));
    }
  });
  const viaExpress = http.createServer(app);
  const listen = (s: http.Server) => new Promise<string>((resolve) => s.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(s.address() as AddressInfo).port}/key/release`)));
  const close = (s: http.Server) =>
    new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  return {
    url: await listen(server),
    expressUrl: await listen(viaExpress),
    close: async () => {
      await Promise.all([close(server), close(viaExpress)]);
      client.destroy();
    },
  };
}
