/**
 * Redaction (issue 10 item 4): JWT-shaped runs anywhere (also glued to other text, `got_<token>`),
 * and exactly every token the process holds or received (registry), also split at their dots and
 * inside nested error causes, reach neither the caller nor the log.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { describeErrorChain, redactText, registerSecret } from '../../src/common/redact';
import { UpstreamError } from '../../src/common/errors';
import { loadOrCreateLocalCa, loopbackServerTls } from '../../src/emulators/ca';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { loadServerConfig } from '../../src/server/config';
import { startSidecar, type RunningSidecar } from '../../src/server/sidecar';
import { SimulatedPlatform, TEST_ONLY_UVM_ROOT_SHA256 } from '../../src/snp/simulator';
import { postJson } from '../helpers/sidecar';
import { capturingLogger } from './log-capture';

const b64u = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const fakeJwt = () => `${b64u({ alg: 'RS256', typ: 'JWT' })}.${b64u({ sub: randomBytes(12).toString('hex'), aud: 'x' })}.${randomBytes(64).toString('base64url')}`;

describe('redactText', () => {
  it('redacts JWT-shaped runs glued to other text', () => {
    const jwt = fakeJwt();
    const [, payload, sig] = jwt.split('.');
    const out = redactText(`got_${jwt}_and more`);
    expect(out).not.toContain(payload);
    expect(out).not.toContain(sig);
  });

  it('redacts registered opaque tokens and the parts of registered JWTs, wherever they sit', () => {
    const opaque = `opaque${randomBytes(20).toString('hex')}`;
    const jwt = fakeJwt();
    registerSecret(opaque);
    registerSecret(jwt);
    const [, payload, sig] = jwt.split('.');
    const text = `x${opaque}y | payload=${payload} | sig:${sig}`;
    const out = redactText(text);
    for (const s of [opaque, payload, sig]) expect(out).not.toContain(s);
  });

  it('forgets a value registered for one request once its time is up', () => {
    const shortLived = `short${randomBytes(20).toString('hex')}`;
    registerSecret(shortLived, { ttlMs: 60_000 });
    expect(redactText(shortLived)).toBe('<redacted>');
    const gone = `gone${randomBytes(20).toString('hex')}`;
    registerSecret(gone, { ttlMs: 0 });
    expect(redactText(gone)).toBe(gone);
  });

  it('describes nested causes redacted', () => {
    const opaque = `nested${randomBytes(20).toString('hex')}`;
    registerSecret(opaque);
    const inner = new Error(`vault said got_${opaque}`);
    const mid = new Error('SDK failed', { cause: inner });
    const outer = new UpstreamError('vault', 'release failed', { cause: mid });
    const d = describeErrorChain(outer);
    expect(d).toContain('vault said got_<redacted>');
    expect(d).not.toContain(opaque);
  });
});

/** A vault that answers the SDK's probe with a 401 challenge, then echoes the bearer token in its 401 text. */
async function echoingVault(tlsOpts: { key: string; cert: string }): Promise<{ endpoint: string; seen: string[]; close(): Promise<void> }> {
  const seen: string[] = [];
  const server = https.createServer(tlsOpts, (req, res) => {
    req.resume();
    const auth = req.headers.authorization;
    if (!auth) {
      res.writeHead(401, { 'www-authenticate': 'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net"' });
      res.end();
      return;
    }
    const token = auth.replace(/^Bearer /, '');
    seen.push(token);
    const parts = token.split('.');
    const message = `got_${token}; pieces ${parts.join(' ')}`;
    res.writeHead(401, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'Unauthorized', message } }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    endpoint: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('a vault that echoes the caller token in its 401', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-redact-'));
  const ca = loadOrCreateLocalCa(path.join(dir, 'ca'));
  const { logger, lines } = capturingLogger('debug');
  let maa: MaaEmulator;
  let vault: Awaited<ReturnType<typeof echoingVault>>;
  let sidecar: RunningSidecar;

  beforeAll(async () => {
    const platform = new SimulatedPlatform();
    maa = await startMaaEmulator({ ca, trustedArkPem: [platform.arkPem], trustedUvmRootFingerprints: [TEST_ONLY_UVM_ROOT_SHA256] });
    vault = await echoingVault(loopbackServerTls(ca));
    const base = loadServerConfig({ port: '0', simulate: true, extraCaFiles: [ca.certPath] }, { SKR_ALLOWED_MAA: maa.endpoint, SKR_ALLOWED_AKV: vault.endpoint });
    sidecar = await startSidecar({ config: { ...base, loopbackVaultEndpoints: [vault.endpoint] }, logger, securityContextDir: path.join(dir, 'ctx'), release: { wrappingKeyPoolSize: 1 } });
  }, 30_000);

  afterAll(async () => {
    await sidecar?.close();
    await vault?.close();
    await maa?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.each([
    ['an opaque token (only the registry knows it)', () => `opaque-${randomBytes(24).toString('hex')}`],
    ['a JWT (glued as got_<token>, and split at its dots)', fakeJwt],
  ])('%s reaches neither the caller nor the log', async (_name, make) => {
    const token = make();
    const res = await postJson(`${sidecar.url}/key/release`, { maa_endpoint: maa.endpoint, akv_endpoint: vault.endpoint, kid: 'k1', access_token: token });
    expect(vault.seen).toContain(token);
    expect(res.status).toBe(403);
    expect(String(res.json.error)).toMatch(/did not accept the access token .*got_/);
    const pieces = token.includes('.') ? token.split('.').slice(1) : [token];
    const leaks = (text: string) => pieces.filter((p) => text.includes(p));
    expect(leaks(JSON.stringify(res.json))).toEqual([]);
    expect(lines.length).toBeGreaterThan(0);
    expect(leaks(lines.join('\n'))).toEqual([]);
  }, 20_000);
});
