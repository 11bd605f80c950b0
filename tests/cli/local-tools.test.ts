/** skr import-key and skr demo against a real local stack (in-process, loopback). */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli } from '../helpers/cli';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import { createLogger } from '../../src/server/logger';
import { postJson } from '../helpers/sidecar';

const run = runCli;

describe('skr import-key and skr demo on the local stack', () => {
  let stack: LocalStack;
  let dir: string;
  let stateFile: string;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-tools-'));
    stack = await startLocalStack({ stateDir: dir, port: 0, logger: createLogger({ silent: true }) });
    stateFile = path.join(dir, 'state.json');
    fs.writeFileSync(stateFile, JSON.stringify(stack.state));
  }, 60_000);
  afterAll(() => stack.close());

  const config = (kty: string, hostData: string) => ({
    key: {
      kid: `cli-${kty.toLowerCase()}`,
      kty,
      authority: { endpoint: stack.state.maaEndpoint },
      akv: { endpoint: stack.state.vaultEndpoint, api_version: 'api-version=7.4' },
    },
    claims: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: hostData }, { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' }]],
  });

  it('imports an oct-HSM key from --key-hex that the sidecar then releases', async () => {
    const cfgFile = path.join(dir, 'oct.json');
    fs.writeFileSync(cfgFile, JSON.stringify(config('oct-HSM', stack.state.hostData)));
    const hex = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
    const r = await run('import-key', '-c', cfgFile, '--key-hex', hex, '--ca', stack.state.caCertPath, '--imds', stack.state.imdsUrl);
    expect(r.code).toBe(0);
    expect(r.out.split('\n')[0]).toMatch(new RegExp(`^https://${stack.state.vaultEndpoint.replace(/\./g, '\\.')}/keys/cli-oct-hsm/[0-9a-f]{32}$`));
    const printedPolicy = JSON.parse(r.out.split('\n')[1]) as { anyOf: { authority: string }[] };
    expect(printedPolicy.anyOf[0].authority).toBe(`https://${stack.state.maaEndpoint}`);
    expect(r.out + r.err).not.toContain(hex);
    const rel = await postJson(`${stack.sidecar.url}/key/release`, { maa_endpoint: stack.state.maaEndpoint, akv_endpoint: stack.state.vaultEndpoint, kid: 'cli-oct-hsm' });
    expect(rel.status).toBe(200);
    expect(Buffer.from((JSON.parse(rel.json.key as string) as { k: string }).k, 'base64url').toString('hex')).toBe(hex);
  });

  it('generates an RSA-HSM key, saves it 0600 with --key-out, and writes the HKDF-derived key', async () => {
    const cfgFile = path.join(dir, 'rsa.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ ...config('RSA-HSM', stack.state.hostData), key_derivation: { salt: '00ff', label: 'my label' } }));
    const keyOut = path.join(dir, 'rsa.pem');
    const derivedOut = path.join(dir, 'derived.hex');
    const r = await run('import-key', '-c', cfgFile, '--ca', stack.state.caCertPath, '--imds', stack.state.imdsUrl, '--key-out', keyOut, '--derived-key-out', derivedOut);
    expect(r.code).toBe(0);
    expect(fs.statSync(keyOut).mode & 0o077).toBe(0);
    expect(fs.readFileSync(keyOut, 'utf8')).toContain('BEGIN PRIVATE KEY');
    expect(fs.readFileSync(derivedOut, 'utf8').trim()).toMatch(/^[0-9a-f]{64}$/);
    expect(r.err).toMatch(/salt 00ff, label "my label"/);
  });

  it('refuses a config with a bad field, naming it', async () => {
    const cfgFile = path.join(dir, 'bad.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ key: { kid: 'x', kty: 'DES', authority: { endpoint: 'a' }, akv: { endpoint: 'b' } }, claims: [[]] }));
    const r = await run('import-key', '-c', cfgFile);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/key\.kty/);
  });

  it('skr demo releases a key bound to the platform and shows the refusal for another HOST_DATA', async () => {
    const r = await run('demo', '--state-file', stateFile);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/matches the imported key/);
    expect(r.out).toMatch(/refused as expected \(403\).*x-ms-sevsnpvm-hostdata/);
  });

  it('skr demo says how to start the stack when there is none', async () => {
    const r = await run('demo', '--state-file', path.join(dir, 'missing.json'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/npm start/);
  });
});
