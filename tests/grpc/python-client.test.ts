/**
 * An independent client: Debian's python3-grpcio (/usr/bin/python3, tests/grpc/clients/
 * keyprovider_client.py: generic unary calls, protobuf encoded by hand) against the gRPC key provider
 * of the local stack, under both package names. The annotation comes from `skr wrap` (the CLI), the
 * key from the vault emulator through the release pipeline.
 */
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { providerCredential } from '../../src/akv/credentials';
import { TokenProvider } from '../../src/akv/identity';
import { importReleasableKey, sdkJwkFor } from '../../src/akv/import-key';
import { buildReleasePolicy } from '../../src/akv/policy';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import { runCli } from '../helpers/cli';
import { ocicryptUnwrapInput } from '../helpers/grpc';

const PYTHON = '/usr/bin/python3';
const CLIENT = path.join(__dirname, 'clients', 'keyprovider_client.py');

type PyResult = { ok: true; fields: Record<string, string> } | { ok: false; code: string; details: string };

/** Runs the client as a child process (asynchronously: the server answers from this process's event loop). */
function python(target: string, calls: { path: string; field1?: Buffer; raw?: Buffer }[]): Promise<PyResult[]> {
  const input = JSON.stringify(calls.map((c) => (c.raw ? { path: c.path, raw: c.raw.toString('base64') } : { path: c.path, field1: (c.field1 ?? Buffer.alloc(0)).toString('base64') })));
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [CLIENT, target], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`python client failed (${code}): ${err.slice(0, 2000)}`));
      else resolve(JSON.parse(out) as PyResult[]);
    });
    child.stdin.end(input);
  });
}

describe('python3-grpcio against the gRPC key provider', () => {
  let stack: LocalStack;
  let dir: string;
  let target: string;
  let annotation: Buffer;
  const optsData = Buffer.from(JSON.stringify({ symkey: randomBytes(32).toString('base64'), cipher: 'AES_256_CTR_HMAC_SHA256' }));

  beforeAll(async () => {
    const probe = spawnSync(PYTHON, ['-c', 'import grpc'], { encoding: 'utf8' });
    if (probe.status !== 0) throw new Error(`Debian's python3-grpcio is not installed (apt-get install -y python3-grpcio): ${probe.stderr}`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-grpc-py-'));
    stack = await startLocalStack({ stateDir: dir, port: 0, grpcPort: 0, logLevel: 'error' });
    target = stack.state.grpcTarget as string;
    const ca = fs.readFileSync(stack.state.caCertPath, 'utf8');
    const fetch = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
    const pair = generateKeyPairSync('rsa', { modulusLength: 3072 });
    await importReleasableKey({
      vaultEndpoint: stack.state.vaultEndpoint,
      name: 'py-layer-key',
      jwk: sdkJwkFor('RSA-HSM', pair.privateKey),
      policy: buildReleasePolicy({ authority: `https://${stack.state.maaEndpoint}`, anyOfGroups: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: stack.state.hostData }]] }),
      credential: providerCredential(new TokenProvider({ imdsEndpoint: stack.state.imdsUrl })),
      fetch,
      relaxedChallenge: true,
    });
    fetch.destroy();
    fs.writeFileSync(path.join(dir, 'py.pem'), pair.publicKey.export({ type: 'spki', format: 'pem' }));
    fs.writeFileSync(path.join(dir, 'py-layer-key-info.json'), JSON.stringify({ public_key_path: path.join(dir, 'py.pem'), kms_endpoint: stack.state.vaultEndpoint, attester_endpoint: stack.state.maaEndpoint }));
    fs.writeFileSync(path.join(dir, 'opts.json'), optsData);
    const w = await runCli('wrap', '--in', path.join(dir, 'opts.json'), '--key-path', path.join(dir, 'py-layer-key'), '--out', path.join(dir, 'annotation.b64'));
    expect(w).toMatchObject({ code: 0 });
    // The file holds what goes into the image's annotation: base64 of the packet.
    annotation = Buffer.from(fs.readFileSync(path.join(dir, 'annotation.b64'), 'utf8'), 'base64');
  }, 90_000);
  afterAll(async () => {
    await stack?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('SayHello, UnWrapKey and the errors, under keyprovider and key_provider', async () => {
    for (const pkg of ['keyprovider', 'key_provider']) {
      const svc = `/${pkg}.KeyProviderService`;
      const [hello, unwrapped, coco, denied, malformed] = await python(target, [
        { path: `${svc}/SayHello`, field1: Buffer.from('python') },
        { path: `${svc}/UnWrapKey`, field1: ocicryptUnwrapInput(annotation) },
        { path: `${svc}/UnWrapKey`, field1: ocicryptUnwrapInput('{"kid":"kbs:///default/k/1","wrapped_data":"AAAA","wrap_type":"A256GCM"}') },
        {
          path: `${svc}/UnWrapKey`,
          field1: ocicryptUnwrapInput(JSON.stringify({ ...JSON.parse(annotation.toString()), kms_endpoint: 'elsewhere.example.org' })),
        },
        { path: `${svc}/UnWrapKey`, raw: Buffer.from([0x0a, 0x7f, 0x01]) },
      ]);
      expect(hello).toEqual({ ok: true, fields: { 1: Buffer.from('Hello python').toString('base64') } });
      if (!unwrapped.ok) throw new Error(`${pkg}: ${unwrapped.code} ${unwrapped.details}`);
      const out = JSON.parse(Buffer.from(unwrapped.fields['1'], 'base64').toString()) as { keyunwrapresults: { optsdata: string } };
      expect(Buffer.from(out.keyunwrapresults.optsdata, 'base64')).toEqual(optsData);
      expect(coco).toEqual({ ok: false, code: 'INVALID_ARGUMENT', details: expect.stringContaining('Azure Key Vault / Managed HSM') });
      expect(denied).toEqual({ ok: false, code: 'PERMISSION_DENIED', details: expect.stringMatching(/akv_endpoint "elsewhere\.example\.org" is not allowlisted/) });
      expect(malformed).toEqual({ ok: false, code: 'INVALID_ARGUMENT', details: expect.stringMatching(/^malformed protobuf message/) });
    }
  });

  it('an unknown package or method: UNIMPLEMENTED', async () => {
    const [r] = await python(target, [{ path: '/attestation_agent.KeyProviderService/UnWrapKey', field1: Buffer.from('{}') }]);
    expect(r).toMatchObject({ ok: false, code: 'UNIMPLEMENTED' });
  });
});
