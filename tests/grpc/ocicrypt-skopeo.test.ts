/**
 * Real ocicrypt: Debian's skopeo (ocicrypt 1.0.3, JWE recipients, no key-provider support) encrypts
 * a small OCI image built with umoci. The layer's options (its symmetric key) come out of the JWE,
 * are wrapped with `skr wrap` into a key-provider annotation for a key held by the vault emulator,
 * and come back through UnWrapKey from the sidecar (attestation + release). Re-wrapped as a JWE to a
 * second key that replaces the original recipient, they let `skopeo copy --decryption-key` decrypt the
 * image, whose layer then has the original digest: the options UnWrapKey answered are the real ones.
 */
import { spawn } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FlattenedEncrypt, flattenedDecrypt, type FlattenedJWE } from 'jose';
import { providerCredential } from '../../src/akv/credentials';
import { TokenProvider } from '../../src/akv/identity';
import { importReleasableKey, sdkJwkFor } from '../../src/akv/import-key';
import { buildReleasePolicy } from '../../src/akv/policy';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { startLocalStack, type LocalStack } from '../../src/cli/local-stack';
import { runCli } from '../helpers/cli';
import { ocicryptUnwrapInput, unwrap } from '../helpers/grpc';

const JWE_ANNOTATION = 'org.opencontainers.image.enc.keys.jwe';

/** Run a tool as a child process (asynchronously: the sidecar answers from this process). */
function exec(cmd: string, args: string[], cwd: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

async function must(cmd: string, args: string[], cwd: string): Promise<string> {
  const r = await exec(cmd, args, cwd);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.out.slice(0, 2000)}`);
  return r.out;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}
interface Manifest {
  config: Descriptor;
  layers: Descriptor[];
}

const blobPath = (layout: string, digest: string) => path.join(layout, 'blobs', 'sha256', digest.replace(/^sha256:/, ''));
function manifestOf(layout: string): { manifest: Manifest; index: { manifests: Descriptor[] } } {
  const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  expect(index.manifests).toHaveLength(1);
  return { manifest: JSON.parse(fs.readFileSync(blobPath(layout, index.manifests[0].digest), 'utf8')) as Manifest, index };
}

describe('skopeo (ocicrypt) image encryption with the layer key through UnWrapKey', () => {
  let stack: LocalStack;
  let dir: string;

  beforeAll(async () => {
    for (const tool of ['skopeo', 'umoci']) {
      const r = await exec(tool, ['--version'], os.tmpdir()).catch(() => ({ code: 127, out: '' }));
      if (r.code !== 0) throw new Error(`${tool} is not installed (apt-get install -y skopeo umoci)`);
    }
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-grpc-skopeo-'));
    stack = await startLocalStack({ stateDir: path.join(dir, 'stack'), port: 0, grpcPort: 0, logLevel: 'error' });
  }, 90_000);
  afterAll(async () => {
    await stack?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('encrypts with skopeo, unwraps through the sidecar, decrypts with skopeo to the original layer digest', async () => {
    // 1. A one-layer image, built by umoci.
    await must('umoci', ['init', '--layout', 'img'], dir);
    await must('umoci', ['new', '--image', 'img:v1'], dir);
    await must('umoci', ['unpack', '--rootless', '--image', 'img:v1', 'bundle'], dir);
    fs.writeFileSync(path.join(dir, 'bundle', 'rootfs', 'secret.txt'), `layer content ${Date.now()}\n`);
    await must('umoci', ['repack', '--image', 'img:v1', 'bundle'], dir);
    const original = manifestOf(path.join(dir, 'img')).manifest;
    expect(original.layers).toHaveLength(1);

    // 2. skopeo encrypts it to a JWE recipient.
    const first = generateKeyPairSync('rsa', { modulusLength: 2048 });
    fs.writeFileSync(path.join(dir, 'first-pub.pem'), first.publicKey.export({ type: 'spki', format: 'pem' }));
    fs.writeFileSync(path.join(dir, 'first-priv.pem'), first.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await must('skopeo', ['--insecure-policy', 'copy', '--encryption-key', 'jwe:first-pub.pem', 'oci:img:v1', 'oci:enc:v1'], dir);
    const enc = manifestOf(path.join(dir, 'enc'));
    const layer = enc.manifest.layers[0];
    expect(layer.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+gzip+encrypted');
    expect(layer.digest).not.toBe(original.layers[0].digest);

    // 3. The layer's options (its symmetric key) out of ocicrypt's JWE.
    const jwe = JSON.parse(Buffer.from(layer.annotations?.[JWE_ANNOTATION] ?? '', 'base64').toString()) as FlattenedJWE;
    const { plaintext: optsData } = await flattenedDecrypt(jwe, first.privateKey);
    expect(JSON.parse(Buffer.from(optsData).toString())).toMatchObject({ symkey: expect.any(String) });

    // 4. A releasable RSA key in the vault, the reference's key info file, and `skr wrap`.
    const vaultKey = generateKeyPairSync('rsa', { modulusLength: 3072 });
    const ca = fs.readFileSync(stack.state.caCertPath, 'utf8');
    const fetch = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
    await importReleasableKey({
      vaultEndpoint: stack.state.vaultEndpoint,
      name: 'image-key',
      jwk: sdkJwkFor('RSA-HSM', vaultKey.privateKey),
      policy: buildReleasePolicy({ authority: `https://${stack.state.maaEndpoint}`, anyOfGroups: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: stack.state.hostData }]] }),
      credential: providerCredential(new TokenProvider({ imdsEndpoint: stack.state.imdsUrl })),
      fetch,
      relaxedChallenge: true,
    });
    fetch.destroy();
    fs.writeFileSync(path.join(dir, 'image-key.pem'), vaultKey.publicKey.export({ type: 'spki', format: 'pem' }));
    fs.writeFileSync(path.join(dir, 'image-key-info.json'), JSON.stringify({ public_key_path: path.join(dir, 'image-key.pem'), kms_endpoint: stack.state.vaultEndpoint, attester_endpoint: stack.state.maaEndpoint }));
    fs.writeFileSync(path.join(dir, 'opts'), optsData);
    expect(await runCli('wrap', '--in', path.join(dir, 'opts'), '--key-path', path.join(dir, 'image-key'), '--out', path.join(dir, 'annotation.b64'))).toMatchObject({ code: 0 });
    const annotation = Buffer.from(fs.readFileSync(path.join(dir, 'annotation.b64'), 'utf8'), 'base64');

    // 5. UnWrapKey from the sidecar: release + RSA-OAEP-SHA256 undo the wrap.
    const r = await unwrap(stack.state.grpcTarget as string, 'keyprovider', ocicryptUnwrapInput(annotation));
    if (!r.ok) throw new Error(`UnWrapKey: ${r.code} ${r.details}`);
    const unwrapped = Buffer.from((r.output as { keyunwrapresults: { optsdata: string } }).keyunwrapresults.optsdata, 'base64');
    expect(unwrapped).toEqual(Buffer.from(optsData));

    // 6. The unwrapped options as a JWE to a second key, replacing the first recipient.
    const second = generateKeyPairSync('rsa', { modulusLength: 2048 });
    fs.writeFileSync(path.join(dir, 'second-priv.pem'), second.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const rewrapped = await new FlattenedEncrypt(unwrapped).setProtectedHeader({ alg: 'RSA-OAEP', enc: 'A256GCM' }).encrypt(second.publicKey);
    const enc2 = path.join(dir, 'enc2');
    fs.cpSync(path.join(dir, 'enc'), enc2, { recursive: true });
    const manifest2: Manifest = { ...enc.manifest, layers: [{ ...layer, annotations: { ...layer.annotations, [JWE_ANNOTATION]: Buffer.from(JSON.stringify(rewrapped)).toString('base64') } }] };
    const bytes = Buffer.from(JSON.stringify(manifest2));
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    fs.writeFileSync(blobPath(enc2, digest), bytes);
    fs.writeFileSync(path.join(enc2, 'index.json'), JSON.stringify({ ...enc.index, manifests: [{ ...enc.index.manifests[0], digest, size: bytes.length }] }));

    // 7. The first key no longer opens it; the second does, and the layer is the original.
    const refused = await exec('skopeo', ['--insecure-policy', 'copy', '--decryption-key', 'first-priv.pem', 'oci:enc2:v1', 'oci:refused:v1'], dir);
    expect(refused.code).not.toBe(0);
    await must('skopeo', ['--insecure-policy', 'copy', '--decryption-key', 'second-priv.pem', 'oci:enc2:v1', 'oci:dec:v1'], dir);
    const dec = manifestOf(path.join(dir, 'dec')).manifest;
    expect(dec.layers.map((l) => [l.mediaType, l.digest])).toEqual(original.layers.map((l) => [l.mediaType, l.digest]));
    const blob = fs.readFileSync(blobPath(path.join(dir, 'dec'), dec.layers[0].digest));
    expect(`sha256:${createHash('sha256').update(blob).digest('hex')}`).toBe(original.layers[0].digest);
  }, 180_000);
});
