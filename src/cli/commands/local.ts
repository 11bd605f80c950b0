import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { parseLogLevel, parsePort, parseReleaseEnc } from '../../server/config';
import type { LocalState } from '../local-stack';
import { CliError, type Out } from '../io';
import { exitOnSignals } from './serve';

export type { LocalState } from '../local-stack';

export const usage =
  'skr local [--platform aci|azure-cvm [--tee sevsnp|tdx]] [--port 8080] [--grpc-port N] [--state-dir DIR] [--state-file FILE] [--log-level L]\n' +
  '      run the whole stack on loopback: the sidecar on a simulated SEV-SNP platform (test AMD chain) with IMDS, MAA,\n' +
  '      Key Vault and Managed HSM emulators; --platform azure-cvm runs a swtpm (apt-get install -y swtpm swtpm-tools)\n' +
  '      provisioned as a simulated Azure confidential VM behind a simulated paravisor, and MAA\'s /attest/AzureGuest;\n' +
  '      --tee tdx makes it an Intel TDX CVM (simulated TD module and quoting enclave, TEST-ONLY Intel-like chain, IMDS /acc/tdquote)\n' +
  '      --grpc-port N also serves the gRPC key provider (ocicrypt\'s KeyProviderService) on 127.0.0.1:N (state file: grpcTarget)';

export const DEFAULT_STATE_DIR = process.env.SKR_LOCAL_STATE_DIR ?? path.join(os.homedir(), '.skr-local');
export const STATE_FILE_NAME = 'state.json';

/**
 * The emulators are development tools: the container image leaves them (and local-stack) out, so
 * they are loaded only when `skr local` runs, and their absence is a clear refusal, not a crash.
 */
async function loadLocalStack(): Promise<typeof import('../local-stack')> {
  try {
    return await import('../local-stack');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && /local-stack|emulators/.test((e as Error).message)) {
      throw new CliError('skr local is not part of this installation (the emulators are left out of the container image): run it from a checkout (npm start)', 1);
    }
    throw e;
  }
}

export function summary(s: LocalState, stateFile: string): string[] {
  const u = s.sidecarUrl;
  const runtime = Buffer.from('{"purpose":"demo"}').toString('base64');
  return [
    s.platform === 'azure-cvm' && s.tee === 'tdx'
      ? 'skr local: stack ready on 127.0.0.1 (SIMULATED Azure TDX confidential VM: swtpm with a TEST vTPM CA, TD quotes chain to a TEST Intel-like root)'
      : s.platform === 'azure-cvm'
      ? 'skr local: stack ready on 127.0.0.1 (SIMULATED Azure confidential VM: swtpm with a TEST vTPM CA, reports chain to a TEST AMD root)'
      : 'skr local: stack ready on 127.0.0.1 (SIMULATED SEV-SNP platform: reports chain to a TEST AMD root, not AMD\'s)',
    '',
    ...(s.tpm ? [`  vTPM (paravisor)   ${s.tpm.endpoint}   (swtpm pid ${s.tpm.swtpmPid})`] : []),
    `  sidecar            ${u}`,
    ...(s.grpcTarget ? [`  gRPC key provider  ${s.grpcTarget}   (keyprovider.KeyProviderService, key_provider.KeyProviderService)`] : []),
    `  MAA emulator       https://${s.maaEndpoint}   (maa_endpoint: ${s.maaEndpoint})`,
    `  Key Vault          https://${s.vaultEndpoint}   (akv_endpoint: ${s.vaultEndpoint})`,
    `  Managed HSM        https://${s.hsmEndpoint}   (akv_endpoint: ${s.hsmEndpoint})`,
    `  IMDS               ${s.imdsUrl}`,
    `  local CA           ${s.caCertPath}   (curl --cacert, NODE_EXTRA_CA_CERTS)`,
    `  security context   ${s.securityContextDir}`,
    `  HOST_DATA          ${s.hostData}   (sha256 of the simulated ccePolicy)`,
    `  state file         ${stateFile}`,
    '',
    'try:',
    `  curl -s ${u}/status`,
    `  curl -s -X POST ${u}/attest/raw -d '{"runtime_data":"${runtime}"}'`,
    `  curl -s -X POST ${u}/attest/maa -d '{"maa_endpoint":"${s.maaEndpoint}","runtime_data":"${runtime}"}'`,
    s.platform === 'azure-cvm'
      ? `  npx skr demo --platform azure-cvm${s.tee === 'tdx' ? ' --tee tdx' : ''}   # imports a key with the CVM policy, releases it through the vTPM, shows refusals`
      : '  npx skr demo        # imports a key bound to this platform and releases it through the sidecar',
    '',
    'Ctrl-C stops everything.',
  ];
}

export async function localCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { platform: { type: 'string' }, tee: { type: 'string' }, port: { type: 'string' }, 'grpc-port': { type: 'string' }, 'state-dir': { type: 'string' }, 'state-file': { type: 'string' }, 'log-level': { type: 'string' } },
  });
  if (positionals.length) throw new CliError(`unexpected argument "${positionals[0]}"\nusage: ${usage}`);
  const platform = values.platform ?? 'aci';
  if (platform !== 'aci' && platform !== 'azure-cvm') throw new CliError(`--platform "${platform.slice(0, 40)}" is not aci or azure-cvm\nusage: ${usage}`);
  const tee = values.tee ?? 'sevsnp';
  if (tee !== 'sevsnp' && tee !== 'tdx') throw new CliError(`--tee "${tee.slice(0, 40)}" is not sevsnp or tdx\nusage: ${usage}`);
  if (values.tee !== undefined && platform !== 'azure-cvm') throw new CliError(`--tee is for --platform azure-cvm (ACI container groups are SEV-SNP)\nusage: ${usage}`);
  // Every argument is checked before anything is printed or started.
  let port: number;
  let logLevel: ReturnType<typeof parseLogLevel>;
  let grpcPort: number | undefined;
  try {
    port = parsePort(values.port ?? '8080');
    if (values['grpc-port'] !== undefined) grpcPort = parsePort(values['grpc-port']);
    logLevel = parseLogLevel(values['log-level'] ?? 'warning');
  } catch (e) {
    throw new CliError(`${(e as Error).message}\nusage: ${usage}`);
  }
  const stateDir = path.resolve(values['state-dir'] ?? DEFAULT_STATE_DIR);
  const stateFile = path.resolve(values['state-file'] ?? path.join(stateDir, STATE_FILE_NAME));
  // The one sidecar setting `skr local` takes from the environment besides the fast-path ones.
  const releaseEnc = parseReleaseEnc(process.env.SKR_RELEASE_ENC);
  const { startLocalStack } = await loadLocalStack();
  io.err(`skr local: starting (state in ${stateDir}) ...`);
  const stack = await startLocalStack({ stateDir, port, logLevel, platform, releaseEnc, ...(platform === 'azure-cvm' ? { tee } : {}), ...(grpcPort !== undefined ? { grpcPort } : {}) });
  // Signal handlers first: whoever waits for the state file or the summary may stop us right after.
  exitOnSignals(async () => {
    await stack.close();
    fs.rmSync(stateFile, { force: true });
  }, io);
  fs.mkdirSync(path.dirname(stateFile), { recursive: true });
  const tmp = `${stateFile}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(stack.state, null, 2) + '\n', { mode: 0o600 });
  fs.renameSync(tmp, stateFile);
  for (const l of summary(stack.state, stateFile)) io.out(l);
  return -1;
}
