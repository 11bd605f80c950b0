import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { providerCredential } from '../../akv/credentials';
import { TokenProvider } from '../../akv/identity';
import { importReleasableKey, sdkJwkFor } from '../../akv/import-key';
import { buildReleasePolicy } from '../../akv/policy';
import { wipe } from '../../common/bytes';
import { createHttpsFetch } from '../../common/https-fetch';
import type { LocalState } from '../local-stack';
import { CliError, type Out } from '../io';
import { DEFAULT_STATE_DIR, STATE_FILE_NAME } from './local';
import { thumbprint } from './import-key';

export const usage =
  'skr demo [--state-file FILE]\n' +
  '      against a running `skr local`: import an oct-HSM key bound to the simulated platform into the Managed HSM emulator,\n' +
  '      release it through the sidecar, then show a refused release for a key pinned to another HOST_DATA';

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
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { 'state-file': { type: 'string' } } });
  if (positionals.length) throw new CliError(`usage: ${usage}`);
  const stateFile = path.resolve(values['state-file'] ?? path.join(DEFAULT_STATE_DIR, STATE_FILE_NAME));
  const state = readLocalState(stateFile);
  if (state.platform === 'azure-cvm') {
    // The demo releases a key; on the CVM platform that needs the vTPM key-encryption key (issue 14).
    throw new CliError(`the stack of ${stateFile} is \`skr local --platform azure-cvm\`, where key release is not supported yet: run the demo against \`skr local\` (aci); the CVM stack serves /attest/raw, /attest/combined and /attest/maa`, 1);
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
    io.out('');
    io.out('demo OK: the key bound to this platform was released; the key bound to another policy was not.');
    return 0;
  } finally {
    fetch.destroy();
  }
}
