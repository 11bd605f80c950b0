/** `skr release --simulate`: the one-shot release on the (simulated) container platform, against the local stack. */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import { createLogger } from '../../src/server/logger';
import { runCli as run } from '../helpers/cli';

describe('skr release --simulate (ACI)', () => {
  let stack: LocalStack;
  let dir: string;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-release-aci-'));
    stack = await startLocalStack({ stateDir: path.join(dir, 'stack'), port: 0, logger: createLogger({ silent: true }) });
  }, 60_000);
  afterAll(async () => {
    await stack?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('releases an oct key (Managed HSM) with the container policy to a new file, printing the key id and thumbprint', async () => {
    const bytes = randomBytes(32);
    const cfg = path.join(dir, 'cfg.json');
    fs.writeFileSync(cfg, JSON.stringify({
      key: { kid: 'aci-cli', kty: 'oct-HSM', authority: { endpoint: stack.state.maaEndpoint }, akv: { endpoint: stack.state.hsmEndpoint } },
      claims: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: stack.state.hostData }, { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' }]],
    }));
    const imp = await run('import-key', '-c', cfg, '--key-hex', bytes.toString('hex'), '--ca', stack.state.caCertPath, '--imds', stack.state.imdsUrl);
    expect(imp.code).toBe(0);
    const out = path.join(dir, 'aci.jwk.json');
    const r = await run('release', '--simulate', '--maa', stack.state.maaEndpoint, '--akv', stack.state.hsmEndpoint, '--managed-hsm', '--kid', 'aci-cli', '--imds', stack.state.imdsUrl, '--ca', stack.state.caCertPath, '--out', out);
    expect(r.err).toMatch(/platform Azure container \(SIMULATED/);
    expect(r.code).toBe(0);
    expect(r.out.split('\n')[1]).toBe(`thumbprint ${/material thumbprint ([0-9a-f]{16})/.exec(imp.err)?.[1]}`);
    const jwk = JSON.parse(fs.readFileSync(out, 'utf8')) as { kty: string; k: string };
    expect(jwk.kty).toBe('oct');
    expect(Buffer.from(jwk.k, 'base64url')).toEqual(bytes);
    expect(fs.statSync(out).mode & 0o777).toBe(0o600);
  });

  it('a refused release exits 1 with the vault\'s words and the explanation\'s summary and hints; no file is written', async () => {
    const cfg = path.join(dir, 'cfg-other.json');
    const other = 'ab'.repeat(32);
    fs.writeFileSync(cfg, JSON.stringify({
      key: { kid: 'aci-cli-other', kty: 'oct-HSM', authority: { endpoint: stack.state.maaEndpoint }, akv: { endpoint: stack.state.hsmEndpoint } },
      claims: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: other }]],
    }));
    expect((await run('import-key', '-c', cfg, '--ca', stack.state.caCertPath, '--imds', stack.state.imdsUrl)).code).toBe(0);
    const out = path.join(dir, 'other.jwk.json');
    const r = await run('release', '--simulate', '--maa', stack.state.maaEndpoint, '--akv', stack.state.hsmEndpoint, '--managed-hsm', '--kid', 'aci-cli-other', '--imds', stack.state.imdsUrl, '--ca', stack.state.caCertPath, '--out', out);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ERR_RELEASE_REFUSED: .*does not meet key release policy requirements.*x-ms-sevsnpvm-hostdata equals "(ab)+" \(token has "[0-9a-f]{64}"\)/);
    expect(r.err).toMatch(/skr release: hint: hostdata mismatch/);
    expect(fs.existsSync(out)).toBe(false);
  });
});
