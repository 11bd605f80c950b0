/**
 * The MAA-token and key-release test clients against `skr local` (sidecar + MAA/IMDS/Key Vault
 * emulators) started from the compiled CLI. A stack that does not start fails these tests.
 */
import { generateKeyPairSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import { CLI, REPO, killAll, readJson, run, start, stop, waitFor, type Proc } from './helpers';

interface LocalState {
  sidecarUrl: string;
  maaEndpoint: string;
  vaultEndpoint: string;
  imdsUrl: string;
  caCertPath: string;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-ship-local-'));
const ATTEST = path.join(REPO, 'docker', 'tests', 'attest_client.sh');
const SKR_CLIENT = path.join(REPO, 'docker', 'tests', 'skr_client.sh');

const localArgs = (dir: string) => [CLI, 'local', '--port', '0', '--state-dir', dir, '--state-file', path.join(dir, 'state.json')];

let local: Proc | undefined;
let state: LocalState;

/** One `skr local` for the file; it failing to start (or to publish an endpoint) fails the tests. */
async function startLocal(): Promise<void> {
  if (local) return;
  const dir = fs.mkdtempSync(path.join(tmp, 'stack-'));
  local = start(process.execPath, localArgs(dir));
  state = await waitFor('skr local state file', () => {
    try {
      return readJson(path.join(dir, 'state.json')) as unknown as LocalState;
    } catch {
      return undefined;
    }
  }, 30_000, local);
  for (const k of ['sidecarUrl', 'maaEndpoint', 'vaultEndpoint', 'imdsUrl', 'caCertPath'] as const) {
    if (typeof state[k] !== 'string' || !state[k]) throw new Error(`skr local's state file has no ${k}: ${JSON.stringify(state)}`);
  }
}

afterAll(async () => {
  await stop(local);
  await killAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const clientEnv = (extra: Record<string, string>): NodeJS.ProcessEnv => ({ PATH: process.env.PATH, HOME: tmp, SKR_SIDECAR_URL: state.sidecarUrl, SKR_CLIENT_ITERATIONS: '1', ...extra });
const b64urlJson = (part: string) => JSON.parse(Buffer.from(part, 'base64url').toString()) as Record<string, unknown>;

describe('attest_client.sh with AttestClientMAAEndpoint against skr local', () => {
  beforeAll(startLocal, 40_000);

  it('writes maatoken.out holding an MAA JWT for the runtime data', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'maa-'));
    const runtime = Buffer.from(JSON.stringify({ keys: [] }));
    const r = await run('sh', [ATTEST], { env: clientEnv({ AttestClientRuntimeData: runtime.toString('base64'), AttestClientMAAEndpoint: String(state.maaEndpoint), SKR_OUT_DIR: dir }) });
    expect(r.out).toMatch(/POST \/attest\/maa -> HTTP 200/);
    expect(r.code).toBe(0);
    const token = String(readJson(path.join(dir, 'maatoken.out')).token);
    const parts = token.split('.');
    expect(parts).toHaveLength(3);
    expect(b64urlJson(parts[0]).alg).toBe('RS256');
    expect(b64urlJson(parts[1])['x-ms-attestation-type']).toBe('sevsnpvm');
    expect(fs.existsSync(path.join(dir, 'raw.out'))).toBe(false);
  });
});

/** PUT an exportable RSA key with a release policy trusting the MAA emulator (Key Vault REST API). */
async function importReleasableKey(name: string): Promise<string> {
  const imds = new URL(String(state.imdsUrl));
  const tokenUrl = `${imds.origin}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${encodeURIComponent('https://vault.azure.net')}`;
  const tok = (await (await fetch(tokenUrl, { headers: { Metadata: 'true' } })).json()) as { access_token: string };
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const policy = { version: '1.0.0', anyOf: [{ authority: `https://${state.maaEndpoint}`, allOf: [{ claim: 'x-ms-attestation-type', equals: 'sevsnpvm' }] }] };
  const body = JSON.stringify({
    key: { ...jwk, kty: 'RSA-HSM', key_ops: ['encrypt', 'decrypt', 'wrapKey', 'unwrapKey'] },
    attributes: { exportable: true },
    release_policy: { contentType: 'application/json; charset=utf-8', data: Buffer.from(JSON.stringify(policy)).toString('base64url') },
  });
  const vault = String(state.vaultEndpoint).replace(/^https:\/\//, '').replace(/\/+$/, '');
  const status = await new Promise<number>((resolve, reject) => {
    const req = https.request(`https://${vault}/keys/${name}?api-version=7.4`, {
      method: 'PUT',
      ca: fs.readFileSync(String(state.caCertPath)),
      headers: { authorization: `Bearer ${tok.access_token}`, 'content-type': 'application/json' },
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
  expect(status).toBe(200);
  return String(jwk.n);
}

describe('skr_client.sh against skr local', () => {
  beforeAll(startLocal, 40_000);

  it('writes keyrelease.out holding the released private JWK', async () => {
    const n = await importReleasableKey('ship-test-key');
    const dir = fs.mkdtempSync(path.join(tmp, 'skr-'));
    const r = await run('sh', [SKR_CLIENT], { env: clientEnv({ SkrClientMAAEndpoint: String(state.maaEndpoint), SkrClientAKVEndpoint: String(state.vaultEndpoint), SkrClientKID: 'ship-test-key', SKR_OUT_DIR: dir }) });
    expect(r.out).toMatch(/POST \/key\/release -> HTTP 200/);
    expect(r.code).toBe(0);
    const key = JSON.parse(String(readJson(path.join(dir, 'keyrelease.out')).key)) as Record<string, unknown>;
    expect(String(key.kty)).toMatch(/^RSA/);
    expect(key.n).toBe(n);
    expect(typeof key.d).toBe('string');
    // The client logs the size of the answer, never the key itself.
    expect(r.out).not.toContain(String(key.d));
  });
});
