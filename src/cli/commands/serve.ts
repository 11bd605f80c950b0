import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadServerConfig } from '../../server/config';
import { startSidecar, type RunningSidecar } from '../../server/sidecar';
import { redactString } from '../../server/logger';
import { CliError, type Out } from '../io';

export const usage =
  'skr serve [--server-type http|grpc] [--port N] [--platform auto|aci|azure-cvm] [--tpm tcp:127.0.0.1:PORT|/dev/tpmrm0] [--tpm-timeout SECONDS] [--simulate] [--security-policy FILE] [--security-context-dir DIR] [--log-level L] [--log-file F] [--cert-cache-dir DIR] [--extra-ca PEM]... [--request-deadline SECONDS]\n' +
  '      serve the sidecar API on 127.0.0.1 (env: Port, LogLevel, LogFile, SkrSideCarArgs, SKR_ALLOWED_MAA, SKR_ALLOWED_AKV,\n' +
  '      SKR_ALLOWED_KIDS, SKR_ATTEST_MAA_KEYS, SKR_ALLOWED_HOSTS, SKR_ALLOWED_ORIGINS, SKR_API_SECRET[_FILE], SKR_REQUEST_DEADLINE_SECONDS, SKR_TPM_TIMEOUT_SECONDS,\n' +
  '      SKR_PLATFORM, SKR_TPM). --platform auto (default) uses the SEV-SNP device of an ACI/AKS container group, else the vTPM\n' +
  '      of an Azure confidential VM, else refuses to start; --simulate simulates an ACI container group';

/**
 * Stop accepting on SIGINT/SIGTERM, let in-flight requests finish, then exit 0. `close` itself cuts
 * requests still running after the grace period; `forceAfterMs` is the backstop should it hang.
 */
export function exitOnSignals(close: () => Promise<void>, io: Out, forceAfterMs = 10_000): void {
  // A long-running server must not die on a stray rejection from one request's background work
  // (a cancelled upstream call, say): report it, redacted, and keep serving.
  process.on('unhandledRejection', (reason) => {
    io.err(`skr: internal error (unhandled rejection): ${redactString(reason instanceof Error ? reason.message : String(reason))}`);
  });
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    io.err(`skr: ${sig} received, shutting down`);
    const force = setTimeout(() => process.exit(0), forceAfterMs);
    force.unref();
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

export async function serveCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      port: { type: 'string' },
      'server-type': { type: 'string' },
      simulate: { type: 'boolean' },
      platform: { type: 'string' },
      tpm: { type: 'string' },
      'tpm-timeout': { type: 'string' },
      'security-policy': { type: 'string' },
      'security-context-dir': { type: 'string' },
      'log-level': { type: 'string' },
      'log-file': { type: 'string' },
      'cert-cache-dir': { type: 'string' },
      'extra-ca': { type: 'string', multiple: true },
      'request-deadline': { type: 'string' },
    },
  });
  if (positionals.length) throw new CliError(`unexpected argument "${positionals[0]}"\nusage: ${usage}`);
  const config = loadServerConfig({
    port: values.port,
    serverType: values['server-type'],
    simulate: values.simulate,
    platform: values.platform,
    tpm: values.tpm,
    tpmTimeout: values['tpm-timeout'],
    securityPolicy: values['security-policy'],
    logLevel: values['log-level'],
    logFile: values['log-file'],
    certCacheDir: values['cert-cache-dir'],
    extraCaFiles: values['extra-ca'],
    requestDeadline: values['request-deadline'],
  });
  const sidecar: RunningSidecar = await startSidecar({ config, securityContextDir: values['security-context-dir'] });
  // The simulator's temporary security-context directory goes with the process, however it ends
  // (close() removes it too; this covers a forced exit).
  const ownedDir = sidecar.ownsSecurityContextDir ? sidecar.securityContextDir : undefined;
  if (ownedDir) process.once('exit', () => rmSync(ownedDir, { recursive: true, force: true }));
  exitOnSignals(() => sidecar.close(), io, config.limits.shutdownGraceMs + 2_000);
  // Announced only once the signal handlers are in place: a supervisor that stops the process as soon
  // as it reads this line must get the graceful shutdown, not the default action of the signal.
  io.err(`skr: sidecar ready at ${sidecar.url} (platform ${sidecar.platformName}: ${sidecar.evidence.description})`);
  return -1;
}
