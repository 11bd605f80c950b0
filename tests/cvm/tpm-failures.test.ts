/**
 * The CVM sidecar (`skr local --platform azure-cvm`, in-process, over HTTP) under a failing or hostile
 * TPM (issue 20): PCR0–7 extended without a reboot (item 1), a TPM device that stops answering (item 2),
 * CreatePrimary answers lost after the TPM made the key (item 3). The TPM is a real swtpm behind the
 * simulated paravisor; the fake device and the hostile proxy sit between it and the sidecar.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { providerCredential } from '../../src/akv/credentials';
import { TokenProvider } from '../../src/akv/identity';
import { importReleasableKey, sdkJwkFor } from '../../src/akv/import-key';
import { buildReleasePolicy } from '../../src/akv/policy';
import { POLICY_TEMPLATES } from '../../src/akv/policy-templates';
import { startLocalStack, type LocalStack, type LocalStackOptions } from '../../src/cli/local-stack';
import { createHttpsFetch } from '../../src/common/https-fetch';
import { SwtpmTcpTransport, TPM_ALG, TPM_CC, TpmClient } from '../../src/tpm';
import { startFakeTpmDevice, type FakeTpmDevice } from '../helpers/fake-tpm-device';
import { HostileTpmProxy } from '../helpers/hostile-tpm-proxy';
import { postJson } from '../helpers/sidecar';
import { swtpmAvailable, SWTPM_INSTALL } from '../helpers/swtpm';

jest.setTimeout(120_000);

// One state directory for the stacks (one after the other): the IMDS emulator keeps its signing key
// there, so managed-identity tokens cached in this process stay valid across them.
let dir: string | undefined;
afterAll(() => dir && fs.rmSync(dir, { recursive: true, force: true }));

async function stackWith(opts: Partial<LocalStackOptions>): Promise<LocalStack> {
  if (!swtpmAvailable()) throw new Error(`swtpm is not installed: ${SWTPM_INSTALL}`);
  dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'skr-cvm-tpm-failures-'));
  return startLocalStack({ stateDir: dir, port: 0, platform: 'azure-cvm', logLevel: 'error', ...opts });
}

/** A client on the simulated paravisor's port (it multiplexes clients), for what the "firmware" does. */
async function onVtpm<T>(stack: LocalStack, fn: (c: TpmClient) => Promise<T>): Promise<T> {
  const port = Number(/(\d+)$/.exec(stack.state.tpm?.endpoint ?? '')?.[1]);
  const c = new TpmClient(new SwtpmTcpTransport({ port }));
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

const extendPcr = (stack: LocalStack, pcr: number) => onVtpm(stack, (c) => c.pcrExtend(pcr, TPM_ALG.SHA256, createHash('sha256').update(randomBytes(8)).digest()));
const runtime = Buffer.from(JSON.stringify({ purpose: 'tpm-failures' }));
const attestMaa = (stack: LocalStack) => postJson(`${stack.sidecar.url}/attest/maa`, { maa_endpoint: stack.state.maaEndpoint, runtime_data: runtime.toString('base64') });
const status = async (stack: LocalStack) => {
  const r = await fetch(`${stack.sidecar.url}/status`);
  return { status: r.status, json: (await r.json()) as { message: string; details?: { upstreams?: Record<string, { healthy: boolean; lastError?: string }> } } };
};

describe.each([
  ['token reuse off', false],
  ['token reuse on', true],
])('item 1: PCR0-7 extended without a reboot (%s)', (_what, reuse) => {
  let stack: LocalStack;
  let fetchCa: ReturnType<typeof createHttpsFetch>;
  let kid: string;
  let bytes: Buffer;

  beforeAll(async () => {
    stack = await stackWith({ release: { maaTokenReuse: reuse } });
    const ca = fs.readFileSync(stack.state.caCertPath, 'utf8');
    fetchCa = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
    bytes = randomBytes(32);
    const k = await importReleasableKey({
      vaultEndpoint: stack.state.hsmEndpoint,
      name: 'pcr-extend',
      jwk: sdkJwkFor('oct-HSM', bytes),
      policy: buildReleasePolicy({ authority: `https://${stack.state.maaEndpoint}`, anyOfGroups: [POLICY_TEMPLATES['azure-cvm'][0].map((c) => ({ ...c }))] }),
      credential: providerCredential(new TokenProvider({ imdsEndpoint: stack.state.imdsUrl, extraCaPem: [ca] })),
      fetch: fetchCa,
      relaxedChallenge: true,
    });
    kid = `pcr-extend/${k.version}`;
  });
  afterAll(async () => {
    fetchCa?.destroy();
    await stack?.close();
  });

  const release = () => postJson(`${stack.sidecar.url}/key/release`, { maa_endpoint: stack.state.maaEndpoint, akv_endpoint: stack.state.hsmEndpoint, kid });

  it('every release after an extend succeeds with at most one re-attestation (no restart)', async () => {
    const first = await release();
    expect(first.json.error).toBeUndefined();
    expect(first.status).toBe(200);
    for (const pcr of [7, 0, 4]) {
      await extendPcr(stack, pcr);
      const before = stack.maa.issuedTokens.length;
      for (let i = 0; i < 2; i++) {
        const r = await release();
        expect(r.json.error).toBeUndefined();
        expect(r.status).toBe(200);
        expect(Buffer.from(String((JSON.parse(String(r.json.key)) as { k: string }).k), 'base64url')).toEqual(bytes);
      }
      // Reuse off: one attestation per release, none wasted. Reuse on: the cached token is stale once.
      expect(stack.maa.issuedTokens.length - before).toBe(reuse ? 1 : 2);
    }
  });
});

describe('item 2: a TPM device that stops answering', () => {
  let stack: LocalStack;
  let dev: FakeTpmDevice | undefined;

  beforeAll(async () => {
    stack = await stackWith({
      limits: { tpmCommandTimeoutMs: 1_000 },
      sidecarTpm: async (endpoint) => {
        dev = await startFakeTpmDevice(Number(/(\d+)$/.exec(endpoint)?.[1]));
        return dev.path;
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
    await dev?.stop();
  });

  it('answers 500 naming the timeout instead of hanging; /status says NOT OK; requests succeed again once the device answers', async () => {
    const fake = dev as FakeTpmDevice;
    expect((await attestMaa(stack)).status).toBe(200);
    await fake.setMode('silent');
    for (let i = 0; i < 2; i++) {
      const r = await attestMaa(stack);
      expect(r.status).toBe(500);
      expect(String(r.json.error)).toMatch(/no response within 1000 ms: the TPM is not answering/);
    }
    const down = await status(stack);
    expect(down.status).toBe(503);
    expect(down.json.message).toBe('Status NOT OK');
    expect(down.json.details?.upstreams?.tpm?.healthy).toBe(false);
    expect(down.json.details?.upstreams?.tpm?.lastError).toMatch(/no response within 1000 ms/);

    await fake.setMode('forward');
    // The sidecar probes the TPM while it is down: /status turns OK without a request.
    for (let i = 0; i < 40 && (await status(stack)).status !== 200; i++) await new Promise((r) => setTimeout(r, 250));
    const up = await status(stack);
    expect(up.status).toBe(200);
    expect(up.json.details?.upstreams?.tpm?.healthy).toBe(true);
    for (let i = 0; i < 2; i++) expect((await attestMaa(stack)).status).toBe(200);
  });
});

describe('item 3: CreatePrimary answers lost after the TPM created the key', () => {
  let stack: LocalStack;
  let proxy: HostileTpmProxy | undefined;

  beforeAll(async () => {
    stack = await stackWith({
      sidecarTpm: async (endpoint) => {
        proxy = new HostileTpmProxy(Number(/(\d+)$/.exec(endpoint)?.[1]));
        await proxy.listen();
        return proxy.endpoint;
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
    await proxy?.close();
  });

  it('/attest/maa fails while the answers are lost, then succeeds: the orphaned keys were flushed', async () => {
    const p = proxy as HostileTpmProxy;
    expect((await attestMaa(stack)).status).toBe(200);
    p.add({ cc: TPM_CC.CreatePrimary, action: 'drop', times: 3 });
    for (let i = 0; i < 3; i++) expect((await attestMaa(stack)).status).toBe(500);
    expect(p.pending).toBe(0);
    for (let i = 0; i < 3; i++) {
      const r = await attestMaa(stack);
      expect(r.json.error).toBeUndefined();
      expect(r.status).toBe(200);
    }
  });
});
