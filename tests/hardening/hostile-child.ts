/**
 * A real sidecar in its own process for the hostile-upstream suite (a crash there must not take
 * the test runner with it, and its RSS is its own). Configured by HOSTILE_CHILD (JSON); logs JSON
 * lines to stderr through the sidecar's own winston logger; prints `READY <url>` on stdout.
 */
import { loadServerConfig } from '../../src/server/config';
import { startSidecar } from '../../src/server/sidecar';

interface ChildConfig {
  caPath: string;
  ctxDir: string;
  deadlineSeconds: number;
  maa: string[];
  akv: string[];
  imdsUrl: string;
  /** Allowlisted vaults reached through the Azure SDK's challenge flow; every other one gets the direct POST. */
  sdkVaults?: string[];
  kdsEndpoint?: string;
  /** Reports carry a TCB the security context's certificate does not: every chain comes from the certcache. */
  mismatch?: boolean;
}

async function main(): Promise<void> {
  const o = JSON.parse(process.env.HOSTILE_CHILD ?? '{}') as ChildConfig;
  const env = {
    SKR_ALLOWED_MAA: o.maa.join(','),
    SKR_ALLOWED_AKV: o.akv.join(','),
    ...(o.kdsEndpoint ? { SkrSideCarArgs: JSON.stringify({ certcache: { endpoint_type: 'AMD', endpoint: `${o.kdsEndpoint}/vcek/v1` } }) } : {}),
  };
  const base = loadServerConfig({ port: '0', simulate: true, extraCaFiles: [o.caPath], requestDeadline: String(o.deadlineSeconds), logLevel: 'info' }, env);
  const config = { ...base, imdsEndpoint: o.imdsUrl, loopbackVaultEndpoints: o.akv.filter((v) => !o.sdkVaults?.includes(v)) };
  const sidecar = await startSidecar({ config, securityContextDir: o.ctxDir, release: { wrappingKeyPoolSize: 2 } });
  if (o.mismatch) sidecar.platform?.reissueVcek(sidecar.platform.reportedTcb + 1n);
  process.stdout.write(`READY ${sidecar.url}\n`);
  process.once('SIGTERM', () => void sidecar.close().then(() => process.exit(0)));
}

main().catch((e: unknown) => {
  process.stderr.write(`hostile-child failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
