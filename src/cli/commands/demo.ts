import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { providerCredential } from '../../akv/credentials';
import { TokenProvider } from '../../akv/identity';
import { importReleasableKey, sdkJwkFor } from '../../akv/import-key';
import { buildReleasePolicy, type ReleasePolicy } from '../../akv/policy';
import { explainPolicy } from '../../akv/policy-explain';
import { POLICY_TEMPLATES } from '../../akv/policy-templates';
import { wipe } from '../../common/bytes';
import { createHttpsFetch } from '../../common/https-fetch';
import { KeyProviderClient } from '../../grpc/client';
import { wrapToKey } from '../../grpc/key-info';
import type { LocalState } from '../local-stack';
import { CliError, type Out } from '../io';
import { DEFAULT_STATE_DIR, STATE_FILE_NAME } from './local';
import { thumbprint } from './import-key';

export const usage =
  'skr demo [--platform aci|azure-cvm [--tee sevsnp|tdx]] [--state-file FILE]\n' +
  '      against a running `skr local`: import an oct-HSM key bound to the simulated platform into the Managed HSM emulator,\n' +
  '      release it through the sidecar, then show a refused release for a key pinned to another HOST_DATA;\n' +
  '      on `skr local --platform azure-cvm`: a key with the CVM policy released through the vTPM, then the refusals for\n' +
  '      top-level claim names, a compliance status the VM does not have, and a release after a simulated reboot\n' +
  '      (the same on `--tee tdx`: the CVM policy template admits sevsnpvm and tdxvm);\n' +
  '      with `skr local --grpc-port N`: also an image layer key unwrapped by the gRPC key provider (UnWrapKey)';

export function readLocalState(file: string): LocalState {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new CliError(`no skr local state at ${file}: start the stack first with \`npm start\` (or \`skr local\`), or pass --state-file`, 1);
  }
  let s: Partial<LocalState>;
  try {
    s = JSON.parse(text) as Partial<LocalState>;
  } catch {
    throw new CliError(`state file ${file} is not JSON: is it from \`skr local\`?`, 1);
  }
  if (typeof s !== 'object' || s === null) throw new CliError(`state file ${file} is not a JSON object: is it from \`skr local\`?`, 1);
  for (const k of ['sidecarUrl', 'maaEndpoint', 'vaultEndpoint', 'hsmEndpoint', 'imdsUrl', 'caCertPath', 'hostData'] as const) {
    if (typeof s[k] !== 'string' || !s[k]) throw new CliError(`state file ${file} has no ${k}: is it from a current \`skr local\`?`, 1);
  }
  return s as LocalState;
}

function processAlive(pid: unknown): boolean {
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0) return true; // unknown: let the probe decide
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A state file outlives a `skr local` that was killed: check that its process is alive and its
 * sidecar answers before importing anything.
 */
export async function checkLocalStackRunning(s: LocalState, file: string): Promise<void> {
  const stale = (why: string) =>
    new CliError(`\`skr local\` is not running (${why}); the state file ${file} is stale: start the stack with \`npm start\` (or \`skr local\`)`, 1);
  if (!processAlive(s.pid)) throw stale(`its process ${s.pid} has exited`);
  try {
    const res = await fetch(`${s.sidecarUrl}/status`, { signal: AbortSignal.timeout(5_000) });
    await res.body?.cancel();
    if (res.status !== 200) throw stale(`${s.sidecarUrl}/status answered HTTP ${res.status}`);
  } catch (e) {
    if (e instanceof CliError) throw e;
    const cause = (e as { cause?: { code?: string } }).cause;
    throw stale(`nothing answers at ${s.sidecarUrl}: ${cause?.code ?? (e as Error).message}`);
  }
}

async function postRelease(s: LocalState, kid: string): Promise<{ status: number; body: Record<string, unknown> }> {
  let res: Response;
  try {
    res = await fetch(`${s.sidecarUrl}/key/release`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ maa_endpoint: s.maaEndpoint, akv_endpoint: s.hsmEndpoint, kid }),
    });
  } catch (e) {
    throw new CliError(`cannot reach the sidecar at ${s.sidecarUrl} (${(e as Error).message}): is \`skr local\` still running?`, 1);
  }
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

export async function demoCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { 'state-file': { type: 'string' }, platform: { type: 'string' }, tee: { type: 'string' } } });
  if (positionals.length) throw new CliError(`usage: ${usage}`);
  const wanted = values.platform;
  if (wanted !== undefined && wanted !== 'aci' && wanted !== 'azure-cvm') throw new CliError(`--platform "${wanted.slice(0, 32)}" is not aci or azure-cvm\nusage: ${usage}`);
  const stateFile = path.resolve(values['state-file'] ?? path.join(DEFAULT_STATE_DIR, STATE_FILE_NAME));
  const state = readLocalState(stateFile);
  const platform = state.platform ?? 'aci';
  if (wanted !== undefined && wanted !== platform) {
    throw new CliError(`--platform ${wanted} was given but the stack of ${stateFile} is \`skr local --platform ${platform}\`: start \`skr local --platform ${wanted}\` or drop --platform`, 1);
  }
  const wantedTee = values.tee;
  if (wantedTee !== undefined && wantedTee !== 'sevsnp' && wantedTee !== 'tdx') throw new CliError(`--tee "${wantedTee.slice(0, 32)}" is not sevsnp or tdx\nusage: ${usage}`);
  const tee = platform === 'azure-cvm' ? (state.tee ?? 'sevsnp') : undefined;
  if (wantedTee !== undefined && wantedTee !== tee) {
    throw new CliError(`--tee ${wantedTee} was given but the stack of ${stateFile} is ${tee ? `\`skr local --platform azure-cvm --tee ${tee}\`` : `\`skr local --platform ${platform}\``}: start \`skr local --platform azure-cvm --tee ${wantedTee}\` or drop --tee`, 1);
  }
  await checkLocalStackRunning(state, stateFile);
  let ca: string;
  try {
    ca = readFileSync(state.caCertPath, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read the local CA ${state.caCertPath} named by ${stateFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 1);
  }
  const fetch = createHttpsFetch({ extraCaPem: [ca], keepAlive: false });
  const credential = providerCredential(new TokenProvider({ imdsEndpoint: state.imdsUrl, extraCaPem: [ca] }));
  if (platform === 'azure-cvm') {
    try {
      return await cvmDemo(state, io, { fetch, credential });
    } finally {
      fetch.destroy();
    }
  }
  const policyFor = (hostData: string) =>
    buildReleasePolicy({
      authority: `https://${state.maaEndpoint}`,
      anyOfGroups: [[
        { claim: 'x-ms-attestation-type', equals: 'sevsnpvm' },
        { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' },
        { claim: 'x-ms-sevsnpvm-hostdata', equals: hostData },
        { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' },
      ]],
    });

  try {
    // Symmetric (oct-HSM) keys live in Managed HSM only, as in Azure.
  io.out(`1. importing an oct-HSM key into the Managed HSM emulator (${state.hsmEndpoint}), release policy pinned to`);
    io.out(`   HOST_DATA ${state.hostData} and authority https://${state.maaEndpoint}`);
    const material = randomBytes(32);
    const good = await importReleasableKey({
      vaultEndpoint: state.hsmEndpoint, name: 'skr-demo-key', jwk: sdkJwkFor('oct-HSM', material), policy: policyFor(state.hostData),
      credential, fetch, relaxedChallenge: true,
    });
    io.out(`   imported ${good.keyId} (material thumbprint ${thumbprint(material)})`);

    io.out(`2. POST ${state.sidecarUrl}/key/release {"kid": "skr-demo-key/${good.version}"}`);
    const r1 = await postRelease(state, `skr-demo-key/${good.version}`);
    if (r1.status !== 200) {
      io.err(`   release FAILED (${r1.status}): ${String(r1.body.error)}`);
      return 1;
    }
    const jwk = JSON.parse(String(r1.body.key)) as { kid?: string; k?: string; kty?: string };
    const released = Buffer.from(jwk.k ?? '', 'base64url');
    const same = released.equals(material);
    io.out(`   released ${jwk.kty} key ${jwk.kid}, thumbprint ${thumbprint(released)} ${same ? '(matches the imported key)' : '(DOES NOT MATCH)'}`);
    wipe(material, released);
    if (!same) return 1;

    const otherHostData = createHash('sha256').update('some other container group policy').digest('hex');
    io.out(`3. importing a key pinned to another HOST_DATA (${otherHostData.slice(0, 16)}…) and asking for it`);
    const otherMaterial = randomBytes(32);
    const other = await importReleasableKey({
      vaultEndpoint: state.hsmEndpoint, name: 'skr-demo-other-group', jwk: sdkJwkFor('oct-HSM', otherMaterial), policy: policyFor(otherHostData),
      credential, fetch, relaxedChallenge: true,
    });
    wipe(otherMaterial);
    const r2 = await postRelease(state, `skr-demo-other-group/${other.version}`);
    if (r2.status === 200) {
      io.err('   the key was released although its policy pins another HOST_DATA: this is a bug');
      return 1;
    }
    io.out(`   refused as expected (${r2.status}): ${String(r2.body.error)}`);
    if (state.grpcTarget && !(await grpcDemo(state, io, { fetch, credential }, policyFor(state.hostData), 4))) return 1;
    io.out('');
    io.out('demo OK: the key bound to this platform was released; the key bound to another policy was not.');
    return 0;
  } finally {
    fetch.destroy();
  }
}

interface DemoClients {
  fetch: ReturnType<typeof createHttpsFetch>;
  credential: ReturnType<typeof providerCredential>;
}

async function postJson(url: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  let res: Response;
  try {
    res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  } catch (e) {
    throw new CliError(`cannot reach the sidecar at ${url} (${(e as Error).message}): is \`skr local\` still running?`, 1);
  }
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/**
 * The CVM walkthrough: a key with the documents' CVM policy released through the vTPM, then the three
 * ways it goes wrong on a CVM and what the sidecar says about each.
 */
async function cvmDemo(state: LocalState, io: Out, c: DemoClients): Promise<number> {
  const authority = `https://${state.maaEndpoint}`;
  const cvmGroups = POLICY_TEMPLATES['azure-cvm'].map((g) => g.map((x) => ({ ...x })));
  const importOct = async (name: string, groups: { claim: string; equals: string }[][]) => {
    const material = randomBytes(32);
    const policy = buildReleasePolicy({ authority, anyOfGroups: groups });
    const k = await importReleasableKey({
      vaultEndpoint: state.hsmEndpoint, name, jwk: sdkJwkFor('oct-HSM', material), policy, credential: c.credential, fetch: c.fetch, relaxedChallenge: true,
    });
    return { kid: `${name}/${k.version}`, keyId: k.keyId, material, policy };
  };
  const releaseKid = (kid: string) => postJson(`${state.sidecarUrl}/key/release`, { maa_endpoint: state.maaEndpoint, akv_endpoint: state.hsmEndpoint, kid });
  const releasedMatches = (r: { body: Record<string, unknown> }, material: Buffer): { thumb: string; same: boolean } => {
    const jwk = JSON.parse(String(r.body.key)) as { k?: string };
    const released = Buffer.from(jwk.k ?? '', 'base64url');
    const out = { thumb: thumbprint(released), same: released.equals(material) };
    wipe(released);
    return out;
  };
  const refused = (what: string, r: { status: number; body: Record<string, unknown> }): boolean => {
    if (r.status === 200) {
      io.err(`   the key was released although ${what}: this is a bug`);
      return false;
    }
    io.out(`   refused as expected (${r.status}): ${String(r.body.error)}`);
    return true;
  };

  io.out(`the simulated confidential VM is ${state.tee === 'tdx' ? 'an Intel TDX one (HCL report type 4, TD quote from IMDS /acc/tdquote)' : 'an AMD SEV-SNP one (HCL report type 2)'}`);
  io.out(`1. importing an oct-HSM key into the Managed HSM emulator (${state.hsmEndpoint}) with the CVM release policy`);
  io.out(`   (--policy-template azure-cvm): authority ${authority}, ${cvmGroups.map((g) => g.map((x) => `${x.claim} = ${x.equals}`).join(' and ')).join(', or ')}`);
  const good = await importOct('skr-demo-cvm-key', cvmGroups);
  io.out(`   imported ${good.keyId} (material thumbprint ${thumbprint(good.material)})`);

  io.out(`2. POST ${state.sidecarUrl}/key/release {"kid": "${good.kid}"}: guest attestation, vault release to the vTPM key, RSA_Decrypt in the vTPM`);
  const r1 = await releaseKid(good.kid);
  if (r1.status !== 200) {
    io.err(`   release FAILED (${r1.status}): ${String(r1.body.error)}`);
    return 1;
  }
  const m1 = releasedMatches(r1, good.material);
  io.out(`   released, thumbprint ${m1.thumb} ${m1.same ? '(matches the imported key)' : '(DOES NOT MATCH)'}`);
  if (!m1.same) return 1;

  io.out('3. refusal: a policy written with the top-level claim names (x-ms-attestation-type, x-ms-compliance-status)');
  const topLevel = await importOct('skr-demo-cvm-top-level', cvmGroups.map((g) => g.map((x) => ({ claim: x.claim.replace(/^x-ms-isolation-tee\./, ''), equals: x.equals }))));
  wipe(topLevel.material);
  if (!refused('its policy names top-level claims', await releaseKid(topLevel.kid))) return 1;
  // The VM's own token, explained against that policy (what `skr policy explain` prints).
  const t = await postJson(`${state.sidecarUrl}/attest/maa`, { maa_endpoint: state.maaEndpoint, runtime_data: Buffer.from(JSON.stringify({ purpose: 'skr demo: policy explain' })).toString('base64') });
  if (t.status !== 200 || typeof t.body.token !== 'string') {
    io.err(`   could not get a token to explain (${t.status}): ${String(t.body.error)}`);
    return 1;
  }
  const hints = explain(topLevel.policy, t.body.token);
  for (const h of hints) io.out(`   skr policy explain: ${h}`);
  if (!hints.some((h) => h.includes('x-ms-isolation-tee.'))) {
    io.err('   policy explain did not name the nested claim: this is a bug');
    return 1;
  }

  io.out('4. refusal: compliance status. MAA attests a debuggable (or non-VMPL-0) VM as azure-noncompliant-cvm, which the CVM');
  io.out('   policy (azure-compliant-cvm) refuses. The local VM is not debuggable and cannot be switched at run time, so this');
  io.out('   shows the same condition from the other side: a key whose policy admits only azure-noncompliant-cvm (what a');
  io.out('   debuggable VM carries) is refused to this compliant VM.');
  const nonCompliant = await importOct('skr-demo-cvm-debuggable-only', cvmGroups.map((g) => g.map((x) => (x.claim.endsWith('x-ms-compliance-status') ? { ...x, equals: 'azure-noncompliant-cvm' } : x))));
  wipe(nonCompliant.material);
  if (!refused('its policy demands another compliance status', await releaseKid(nonCompliant.kid))) return 1;

  io.out('5. a simulated reboot (swtpm reset: PCRs cleared, new NULL seed), then the first key again: the reused token names');
  io.out('   the old boot\'s vTPM key, so the sidecar attests once more and releases');
  if (!state.tpm?.swtpmCtrlPort) {
    io.err('   the state file names no swtpm control port: is it from a current `skr local --platform azure-cvm`?');
    return 1;
  }
  const { rebootSimulatedCvm } = await import('../local-stack');
  await rebootSimulatedCvm(state.tpm);
  const r2 = await releaseKid(good.kid);
  if (r2.status !== 200) {
    io.err(`   release after the reboot FAILED (${r2.status}): ${String(r2.body.error)}`);
    return 1;
  }
  const m2 = releasedMatches(r2, good.material);
  wipe(good.material);
  io.out(`   released after the reboot, thumbprint ${m2.thumb} ${m2.same ? '(matches the imported key)' : '(DOES NOT MATCH)'}`);
  if (!m2.same) return 1;
  io.out('   (with re-attestation off the stale unwrap fails with the TPM\'s reason, e.g. TPM2_RSA_Decrypt: TPM_RC_POLICY_FAIL;');
  io.out('   the sidecar always re-attests once, so that case is shown by tests/cvm/tpm-kek-release.test.ts)');
  if (state.grpcTarget && !(await grpcDemo(state, io, c, buildReleasePolicy({ authority, anyOfGroups: cvmGroups }), 6))) return 1;
  io.out('');
  io.out('demo OK: the key with the CVM policy was released through the vTPM, before and after a reboot; the top-level-claim');
  io.out('policy and the compliance-status policy were refused.');
  return 0;
}

/**
 * With `skr local --grpc-port`: an encrypted image's layer options wrapped to an RSA key in the vault
 * (as `skr wrap` does), given back by the gRPC key provider's UnWrapKey (what ocicrypt calls).
 */
async function grpcDemo(state: LocalState, io: Out, c: DemoClients, policy: ReleasePolicy, step: number): Promise<boolean> {
  const target = state.grpcTarget as string;
  io.out(`${step}. gRPC key provider at ${target}: an RSA-HSM key in the vault (${state.vaultEndpoint}) with the same policy wraps an`);
  io.out('   image layer\'s options (`skr wrap`); UnWrapKey, as ocicrypt calls it, releases the key and unwraps them');
  const pair = generateKeyPairSync('rsa', { modulusLength: 3072 });
  const k = await importReleasableKey({
    vaultEndpoint: state.vaultEndpoint, name: 'skr-demo-image-key', jwk: sdkJwkFor('RSA-HSM', pair.privateKey), policy,
    credential: c.credential, fetch: c.fetch, relaxedChallenge: true,
  });
  const opts = Buffer.from(JSON.stringify({ symkey: randomBytes(32).toString('base64'), cipher: 'AES_256_CTR_HMAC_SHA256' }));
  const packet = wrapToKey(opts, { kid: 'skr-demo-image-key', publicKey: pair.publicKey, kmsEndpoint: state.vaultEndpoint, attesterEndpoint: state.maaEndpoint });
  io.out(`   annotation org.opencontainers.image.enc.keys.provider.attestation-agent: ${packet.toString('base64').slice(0, 48)}… (kid ${k.keyId})`);
  const client = new KeyProviderClient(target);
  try {
    const back = await client.unwrapKey(packet);
    const same = back.equals(opts);
    io.out(`   UnWrapKey gave the layer options back, thumbprint ${thumbprint(back)} ${same ? '(matches what was wrapped)' : '(DOES NOT MATCH)'}`);
    wipe(back, opts);
    return same;
  } catch (e) {
    io.err(`   UnWrapKey FAILED: ${(e as Error).message}`);
    return false;
  } finally {
    client.close();
  }
}

function explain(policy: ReleasePolicy, token: string): string[] {
  let claims: Record<string, unknown>;
  try {
    claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    return [];
  }
  return explainPolicy(policy, claims).hints;
}
