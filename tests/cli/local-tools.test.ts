/** skr import-key and skr demo against a real local stack (in-process, loopback). */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHttpsFetch } from '../../src/common/https-fetch';
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
  afterAll(async () => {
    await stack.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // Symmetric keys live in Managed HSM; RSA-HSM / EC-HSM keys in the vault.
  const config = (kty: string, hostData: string, kid = `cli-${kty.toLowerCase()}`) => ({
    key: {
      kid,
      kty,
      authority: { endpoint: stack.state.maaEndpoint },
      akv: { endpoint: kty === 'oct-HSM' ? stack.state.hsmEndpoint : stack.state.vaultEndpoint, api_version: 'api-version=7.4' },
    },
    claims: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: hostData }, { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' }]],
  });
  const writeConfig = (name: string, cfg: unknown): string => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, JSON.stringify(cfg));
    return f;
  };
  const stackArgs = () => ['--ca', stack.state.caCertPath, '--imds', stack.state.imdsUrl];

  /** HTTP status of GET /keys/{name} on an emulator, with a token from the IMDS emulator. */
  async function keyStatus(endpoint: string, name: string): Promise<number> {
    const resource = endpoint === stack.state.hsmEndpoint ? 'https://managedhsm.azure.net' : 'https://vault.azure.net';
    const tokenUrl = `${stack.state.imdsUrl}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${encodeURIComponent(resource)}`;
    // A fresh connection per call: a reused keep-alive socket the emulator just closed reads ECONNRESET.
    const f = createHttpsFetch({ extraCaPem: [fs.readFileSync(stack.state.caCertPath, 'utf8')], keepAlive: false });
    try {
      const { access_token: token } = (await (await f(tokenUrl, { headers: { Metadata: 'true' } })).json()) as { access_token: string };
      const res = await f(`https://${endpoint}/keys/${name}?api-version=7.4`, { headers: { authorization: `Bearer ${token}` } });
      await res.text();
      return res.status;
    } finally {
      f.destroy();
    }
  }

  async function closedPort(): Promise<number> {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const { port } = srv.address() as net.AddressInfo;
    await new Promise((r) => srv.close(r));
    return port;
  }

  it('imports an oct-HSM key from --key-hex into Managed HSM; the sidecar then releases it', async () => {
    const cfgFile = writeConfig('oct.json', config('oct-HSM', stack.state.hostData));
    const hex = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
    const r = await run('import-key', '-c', cfgFile, '--key-hex', hex, ...stackArgs());
    expect(r.code).toBe(0);
    expect(r.out.split('\n')[0]).toMatch(new RegExp(`^https://${stack.state.hsmEndpoint.replace(/\./g, '\\.')}/keys/cli-oct-hsm/[0-9a-f]{32}$`));
    const printedPolicy = JSON.parse(r.out.split('\n')[1]) as { anyOf: { authority: string }[] };
    expect(printedPolicy.anyOf[0].authority).toBe(`https://${stack.state.maaEndpoint}`);
    expect(r.out + r.err).not.toContain(hex);
    const rel = await postJson(`${stack.sidecar.url}/key/release`, { maa_endpoint: stack.state.maaEndpoint, akv_endpoint: stack.state.hsmEndpoint, kid: 'cli-oct-hsm' });
    expect(rel.status).toBe(200);
    expect(Buffer.from((JSON.parse(rel.json.key as string) as { k: string }).k, 'base64url').toString('hex')).toBe(hex);
  });

  it('an oct-HSM key for the Key Vault (Premium) emulator is refused with the service error', async () => {
    const cfg = config('oct-HSM', stack.state.hostData, 'oct-in-vault');
    cfg.key.akv.endpoint = stack.state.vaultEndpoint;
    const r = await run('import-key', '-c', writeConfig('oct-vault.json', cfg), ...stackArgs());
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/refused the import \(400\): Invalid kty value: oct-HSM/);
    expect(await keyStatus(stack.state.vaultEndpoint, 'oct-in-vault')).toBe(404);
  });

  it('generates an RSA-HSM key, saves it 0600 with --key-out, and writes the HKDF-derived key', async () => {
    const cfgFile = path.join(dir, 'rsa.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ ...config('RSA-HSM', stack.state.hostData), key_derivation: { salt: '00ff', label: 'my label' } }));
    const keyOut = path.join(dir, 'rsa.pem');
    const derivedOut = path.join(dir, 'derived.hex');
    const r = await run('import-key', '-c', cfgFile, '--ca', stack.state.caCertPath, '--imds', stack.state.imdsUrl, '--key-out', keyOut, '--derived-key-out', derivedOut);
    expect(r.code).toBe(0);
    expect(fs.statSync(keyOut).mode & 0o777).toBe(0o600);
    expect(fs.statSync(derivedOut).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(keyOut, 'utf8')).toContain('BEGIN PRIVATE KEY');
    expect(fs.readFileSync(derivedOut, 'utf8').trim()).toMatch(/^[0-9a-f]{64}$/);
    expect(r.err).toMatch(/salt 00ff, label "my label"/);
  });

  it('imports your own EC-HSM key (--key-pem, P-256K included) that the sidecar releases; refuses a key of another type', async () => {
    for (const [curve, kid] of [['P-384', 'cli-ec-p384'], ['secp256k1', 'cli-ec-k256']] as const) {
      const ec = generateKeyPairSync('ec', { namedCurve: curve }).privateKey;
      const pem = path.join(dir, `${kid}.pem`);
      fs.writeFileSync(pem, ec.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
      const r = await run('import-key', '-c', writeConfig(`${kid}.json`, config('EC-HSM', stack.state.hostData, kid)), '--key-pem', pem, ...stackArgs());
      expect(r.code).toBe(0);
      const rel = await postJson(`${stack.sidecar.url}/key/release`, { maa_endpoint: stack.state.maaEndpoint, akv_endpoint: stack.state.vaultEndpoint, kid });
      expect(rel.status).toBe(200);
      const jwk = JSON.parse(rel.json.key as string) as Record<string, string>;
      const want = ec.export({ format: 'jwk' });
      expect([jwk.kty, jwk.crv, jwk.d]).toEqual(['EC', want.crv, want.d]);
    }
    const ed = path.join(dir, 'ed25519.pem');
    fs.writeFileSync(ed, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
    const r = await run('import-key', '-c', writeConfig('ed.json', config('EC-HSM', stack.state.hostData, 'cli-ed')), '--key-pem', ed, ...stackArgs());
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/an EC-HSM key must be EC, got ed25519/);
    expect(await keyStatus(stack.state.vaultEndpoint, 'cli-ed')).toBe(404);
  });

  it('refuses a config with a bad field, naming it', async () => {
    const cfgFile = path.join(dir, 'bad.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ key: { kid: 'x', kty: 'DES', authority: { endpoint: 'a' }, akv: { endpoint: 'b' } }, claims: [[]] }));
    const r = await run('import-key', '-c', cfgFile);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/key\.kty/);
  });

  describe('validates everything before it touches the vault', () => {
    // Loosely typed on purpose: each case breaks one field of an otherwise valid config.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    type Cfg = Record<string, any>;
    const salted = (kid: string, salt: string) => ({ ...config('RSA-HSM', stack.state.hostData, kid), key_derivation: { salt, label: 'Model Encryption Key' } });

    it.each([
      ['a placeholder salt', 'ph-salt', (c: Cfg) => (c.key_derivation.salt = '<salt as hex>'), /key_derivation\.salt: "<salt as hex>" is still a placeholder/],
      ['a salt that is not hex', 'ph-salt-hex', (c: Cfg) => (c.key_derivation.salt = '92a6zz'), /key_derivation\.salt: "92a6zz" is not hex/],
      ['a placeholder HOST_DATA', 'ph-hostdata', (c: Cfg) => (c.claims[0][0].equals = '<filled in by gen-policy.sh>'), /claims\[0\]\[0\]\.equals: .* placeholder/],
      ['a HOST_DATA that is not a sha256', 'ph-hostdata-len', (c: Cfg) => (c.claims[0][0].equals = 'abc'), /x-ms-sevsnpvm-hostdata is the sha256 .*64 hex digits/],
      ['a placeholder bearer token (not echoed)', 'ph-token', (c: Cfg) => (c.key.akv.bearer_token = '<az account get-access-token --resource https://vault.azure.net>'), /key\.akv\.bearer_token: is still a placeholder/],
      ['a placeholder MAA endpoint', 'ph-maa', (c: Cfg) => (c.key.authority.endpoint = '<maa-host>'), /key\.authority\.endpoint: "<maa-host>" is still a placeholder/],
      ['an endpoint that is not host[:port]', 'ph-akv', (c: Cfg) => (c.key.akv.endpoint = `${stack.state.vaultEndpoint}/keys`), /key\.akv\.endpoint: .* is not an endpoint/],
      ['a flat claims list', 'ph-flat', (c: Cfg) => (c.claims = c.claims[0]), /claims\[0\]: .*claims is a list of groups/],
      ['an unknown key operation', 'ph-ops', (c: Cfg) => (c.key.key_ops = ['release']), /key\.key_ops: must be an array of/],
    ])('%s: exit 1 naming the field, nothing imported, no file written', async (_what, kid, mutate, message) => {
      const cfg = salted(kid, '00ff') as Cfg;
      mutate(cfg);
      const keyOut = path.join(dir, `${kid}.pem`);
      const derivedOut = path.join(dir, `${kid}.hex`);
      const r = await run('import-key', '-c', writeConfig(`${kid}.json`, cfg), ...stackArgs(), '--key-out', keyOut, '--derived-key-out', derivedOut);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(message);
      expect(r.err).not.toMatch(/az account/);
      expect(fs.existsSync(keyOut) || fs.existsSync(derivedOut)).toBe(false);
      expect(await keyStatus(stack.state.vaultEndpoint, kid)).toBe(404);
    });

    it('the repository\'s own template (fragments/importkeyconfig.json) imports nothing', async () => {
      const template = path.resolve(__dirname, '..', '..', 'fragments', 'importkeyconfig.json');
      const r = await run('import-key', '-c', template, ...stackArgs());
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/ERR_IMPORT_CONFIG: importkey config key\.kid: "<key-name>" is still a placeholder: fill it in/);
    });

    it.each([
      ['--derived-key-out for an oct-HSM key', 'oct-HSM', ['--derived-key-out', 'DIR/x.hex'], /--derived-key-out derives from an RSA key; key\.kty is oct-HSM/],
      ['--key-out with a given key', 'oct-HSM', ['--key-hex', '00'.repeat(32), '--key-out', 'DIR/x.hex'], /--key-out saves a key generated here/],
      ['an oct key of the wrong length', 'oct-HSM', ['--key-hex', '00'.repeat(20)], /an oct-HSM key is 16, 24 or 32 bytes/],
      ['an output in a missing directory', 'RSA-HSM', ['--key-out', 'DIR/missing/x.pem'], /--key-out .*: cannot create it: its directory does not exist/],
      ['an unreadable --ca', 'RSA-HSM', ['--ca', 'DIR/no-such-ca.pem'], /--ca .*no-such-ca\.pem: cannot read it: ENOENT/],
      ['a --key-pem that is not a key', 'RSA-HSM', ['--key-pem', 'CFG'], /--key-pem .* is not a private key PEM/],
    ])('%s: refused before the import', async (_what, kty, extra, message) => {
      const kid = `pre-${kty.toLowerCase()}-${Math.abs(message.source.length)}`;
      const cfgFile = writeConfig(`${kid}.json`, config(kty, stack.state.hostData, kid));
      const args = extra.map((a) => a.replace('DIR', dir).replace('CFG', cfgFile));
      const r = await run('import-key', '-c', cfgFile, '--ca', stack.state.caCertPath, '--imds', stack.state.imdsUrl, ...args);
      expect(r.code).not.toBe(0);
      expect(r.err).toMatch(message);
      expect(await keyStatus(kty === 'oct-HSM' ? stack.state.hsmEndpoint : stack.state.vaultEndpoint, kid)).toBe(404);
    });
  });

  describe('--key-out / --derived-key-out create a new file, mode 0600, never through a symlink', () => {
    it('an existing file is refused (and left as it was) unless --force, which replaces it with mode 0600', async () => {
      const keyOut = path.join(dir, 'existing.pem');
      fs.writeFileSync(keyOut, 'old contents\n', { mode: 0o644 });
      const cfgFile = writeConfig('existing.json', config('RSA-HSM', stack.state.hostData, 'existing-out'));
      const refused = await run('import-key', '-c', cfgFile, ...stackArgs(), '--key-out', keyOut);
      expect(refused.code).toBe(2);
      expect(refused.err).toMatch(/--key-out .*existing\.pem: cannot create it: it already exists \(pass --force to replace it\)/);
      expect(fs.readFileSync(keyOut, 'utf8')).toBe('old contents\n');
      expect(await keyStatus(stack.state.vaultEndpoint, 'existing-out')).toBe(404);

      const forced = await run('import-key', '-c', cfgFile, ...stackArgs(), '--key-out', keyOut, '--force');
      expect(forced.code).toBe(0);
      expect(fs.readFileSync(keyOut, 'utf8')).toContain('BEGIN PRIVATE KEY');
      expect(fs.lstatSync(keyOut).mode & 0o777).toBe(0o600);
      expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    });

    it('a symlink is never followed: refused without --force; with --force the link itself is replaced', async () => {
      const victim = path.join(dir, 'victim.txt');
      fs.writeFileSync(victim, 'do not overwrite\n', { mode: 0o644 });
      const link = path.join(dir, 'derived-link.hex');
      fs.symlinkSync(victim, link);
      const cfgFile = writeConfig('symlink.json', { ...config('RSA-HSM', stack.state.hostData, 'symlink-out'), key_derivation: { salt: '00ff' } });
      const refused = await run('import-key', '-c', cfgFile, ...stackArgs(), '--derived-key-out', link);
      expect(refused.code).toBe(2);
      expect(refused.err).toMatch(/--derived-key-out .*derived-link\.hex: cannot create it: it is a symlink \(refusing to follow it\)/);
      expect(await keyStatus(stack.state.vaultEndpoint, 'symlink-out')).toBe(404);

      // A dangling symlink is refused too (O_EXCL|O_NOFOLLOW would otherwise create its target).
      const dangling = path.join(dir, 'dangling.hex');
      fs.symlinkSync(path.join(dir, 'would-be-created.hex'), dangling);
      expect((await run('import-key', '-c', cfgFile, ...stackArgs(), '--derived-key-out', dangling)).code).toBe(2);
      expect(fs.existsSync(path.join(dir, 'would-be-created.hex'))).toBe(false);

      const forced = await run('import-key', '-c', cfgFile, ...stackArgs(), '--derived-key-out', link, '--force');
      expect(forced.code).toBe(0);
      expect(fs.readFileSync(victim, 'utf8')).toBe('do not overwrite\n');
      expect(fs.lstatSync(link).isSymbolicLink()).toBe(false);
      expect(fs.lstatSync(link).mode & 0o777).toBe(0o600);
      expect(fs.readFileSync(link, 'utf8').trim()).toMatch(/^[0-9a-f]{64}$/);
    });
  });

  describe('error wording', () => {
    it('a TLS failure to an emulator says to pass --ca (the state file\'s caCertPath)', async () => {
      const cfgFile = writeConfig('tls.json', config('RSA-HSM', stack.state.hostData, 'tls-key'));
      const r = await run('import-key', '-c', cfgFile, '--imds', stack.state.imdsUrl);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/TLS to vault 127\.0\.0\.1:\d+ failed \([A-Z_]+\): its certificate is not trusted here; .*pass --ca with the state file's caCertPath/);
      expect(await keyStatus(stack.state.vaultEndpoint, 'tls-key')).toBe(404);
    });

    it('an identity failure says identity, not that the vault could not be reached', async () => {
      // A client id of its own: msal caches the identity's tokens per process and client id.
      const cfgFile = writeConfig('identity.json', { ...config('RSA-HSM', stack.state.hostData, 'identity-key'), identity: { client_id: randomUUID() } });
      const r = await run('import-key', '-c', cfgFile, '--ca', stack.state.caCertPath, '--imds', `http://127.0.0.1:${await closedPort()}`);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/^skr import-key: identity: could not get an access token for vault 127\.0\.0\.1:\d+ from the identity: /);
      expect(r.err).not.toMatch(/could not be reached/);
    });

    it('skr demo against a stale state file says skr local is not running', async () => {
      const stale = path.join(dir, 'stale.json');
      fs.writeFileSync(stale, JSON.stringify({ ...stack.state, sidecarUrl: `http://127.0.0.1:${await closedPort()}` }));
      const r = await run('demo', '--state-file', stale);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/`skr local` is not running \(nothing answers at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED\); the state file .*stale\.json is stale/);
      expect(r.out).toBe('');
    });

    it('skr local --port abc prints the usage error before anything else', async () => {
      const r = await run('local', '--port', 'abc', '--state-dir', path.join(dir, 'never'));
      expect(r.code).toBe(2);
      expect(r.err.split('\n')[0]).toBe('skr local: port "abc" is not a number from 0 to 65535');
      expect(r.err).toMatch(/\nusage: skr local /);
      expect(r.out).toBe('');
      expect(fs.existsSync(path.join(dir, 'never'))).toBe(false);
    });
  });

  it('skr demo releases a key bound to the platform and shows the refusal for another HOST_DATA', async () => {
    const r = await run('demo', '--state-file', stateFile);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/importing an oct-HSM key into the Managed HSM emulator/);
    expect(r.out).toMatch(/matches the imported key/);
    expect(r.out).toMatch(/refused as expected \(403\).*x-ms-sevsnpvm-hostdata/);
  });

  it('skr demo says how to start the stack when there is none', async () => {
    const r = await run('demo', '--state-file', path.join(dir, 'missing.json'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/npm start/);
  });
});
