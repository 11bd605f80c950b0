/**
 * A real sidecar in its own process for the hostile-upstream suite (a crash there must not take
 * the test runner with it, and its RSS is its own). It runs the compiled sidecar (dist/, rebuilt by
 * jest's globalSetup) with no TypeScript compiler loaded, so the RSS measured is the sidecar's as
 * deployed. Configured by HOSTILE_CHILD (JSON):
 *   caPath, ctxDir, deadlineSeconds, maa[], akv[], imdsUrl,
 *   sdkVaults[]   allowlisted vaults reached through the Azure SDK's challenge flow (the others get the direct POST),
 *   kdsEndpoint   collateral from this AMD KDS,
 *   mismatch      reports carry a TCB the security context's certificate does not: every chain comes from the certcache.
 * Logs JSON lines to stderr through the sidecar's own winston logger; prints `READY <url>` on stdout.
 */
'use strict';
/* global require, process, __dirname */
/* eslint-disable @typescript-eslint/no-require-imports */
const path = require('node:path');

const DIST = path.join(__dirname, '..', '..', 'dist');
const { loadServerConfig } = require(path.join(DIST, 'server', 'config.js'));
const { startSidecar } = require(path.join(DIST, 'server', 'sidecar.js'));

async function main() {
  const o = JSON.parse(process.env.HOSTILE_CHILD ?? '{}');
  const env = {
    SKR_ALLOWED_MAA: o.maa.join(','),
    SKR_ALLOWED_AKV: o.akv.join(','),
    ...(o.kdsEndpoint ? { SkrSideCarArgs: JSON.stringify({ certcache: { endpoint_type: 'AMD', endpoint: `${o.kdsEndpoint}/vcek/v1` } }) } : {}),
  };
  const base = loadServerConfig({ port: '0', simulate: true, extraCaFiles: [o.caPath], requestDeadline: String(o.deadlineSeconds), logLevel: 'info' }, env);
  const config = { ...base, imdsEndpoint: o.imdsUrl, loopbackVaultEndpoints: o.akv.filter((v) => !(o.sdkVaults ?? []).includes(v)) };
  const sidecar = await startSidecar({ config, securityContextDir: o.ctxDir, release: { wrappingKeyPoolSize: 2 } });
  if (o.mismatch) sidecar.platform?.reissueVcek(sidecar.platform.reportedTcb + 1n);
  process.stdout.write(`READY ${sidecar.url}\n`);
  process.once('SIGTERM', () => void sidecar.close().then(() => process.exit(0)));
}

main().catch((e) => {
  process.stderr.write(`hostile-child failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
