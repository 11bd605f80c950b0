import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { loadServerConfig } from '../../server/config';
import { startSidecar } from '../../server/sidecar';
import { CliError, type Out } from '../io';
import { exitOnSignals } from './serve';

export const usage =
  'skr local [--port 8080] [--state-dir DIR] [--state-file FILE]\n' +
  '      run the whole stack on loopback: the sidecar on a simulated SEV-SNP platform (test AMD chain) and the local emulators';

export const DEFAULT_STATE_DIR = path.join(os.homedir(), '.skr-local');

/** What `skr local` writes to its state file: how other tools (and people) reach the stack. */
export interface LocalState {
  sidecarUrl: string;
  securityContextDir: string;
  maaEndpoint?: string;
  vaultEndpoint?: string;
  hsmEndpoint?: string;
  imdsUrl?: string;
  caCertPath?: string;
  pid: number;
}

export function summary(s: LocalState): string[] {
  const u = s.sidecarUrl;
  return [
    'skr local: stack ready (SIMULATED SEV-SNP platform: reports chain to a TEST AMD root, not AMD\'s)',
    `  sidecar              ${u}`,
    `  security context     ${s.securityContextDir}`,
    '',
    'try:',
    `  curl -s ${u}/status`,
    `  curl -s -X POST ${u}/attest/raw -d '{"runtime_data":"'$(echo -n hello | base64)'"}'`,
    `  curl -s -X POST ${u}/attest/combined -d '{"runtime_data":"aGVsbG8="}'`,
    '',
    'Ctrl-C stops everything.',
  ];
}

export async function localCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { port: { type: 'string' }, 'state-dir': { type: 'string' }, 'state-file': { type: 'string' }, 'log-level': { type: 'string' } },
  });
  if (positionals.length) throw new CliError(`unexpected argument "${positionals[0]}"\nusage: ${usage}`);
  const stateDir = path.resolve(values['state-dir'] ?? DEFAULT_STATE_DIR);
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const stateFile = path.resolve(values['state-file'] ?? path.join(stateDir, 'state.json'));
  const config = loadServerConfig({ port: values.port ?? '8080', simulate: true, logLevel: values['log-level'] ?? 'warning' }, {});
  const sidecar = await startSidecar({ config, securityContextDir: path.join(stateDir, 'security-context') });
  const state: LocalState = { sidecarUrl: sidecar.url, securityContextDir: sidecar.securityContextDir ?? '', pid: process.pid };
  fs.writeFileSync(stateFile, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  for (const l of summary(state)) io.out(l);
  io.out(`state file: ${stateFile}`);
  exitOnSignals(async () => {
    await sidecar.close();
    fs.rmSync(stateFile, { force: true });
  }, io);
  return -1;
}
