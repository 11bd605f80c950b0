'use strict';
/* global require, process, Buffer */
/* eslint-disable @typescript-eslint/no-require-imports */
// Child process for the LD_PRELOAD tests (LD_PRELOAD only takes effect at process start).
// argv[2] is a JSON spec:
//   { mode: 'addon', addonPath, op, device, userData (hex), vmpl, repeat }
//     calls the addon directly; results carry the raw buffers
//   { mode: 'source', distDir, addonPath, kind: 'sev-guest' | 'sev', device, userData, vmpl, extended, repeat }
//     calls SevGuestSource / LegacySevSource transpiled into distDir (the same TypeScript the sidecar runs)
// Runs `repeat` calls concurrently and prints one JSON array of outcomes on stdout.
const path = require('node:path');

const spec = JSON.parse(process.argv[2]);

function encodeError(e) {
  return {
    name: e.name,
    message: e.message,
    code: e.code,
    errno: e.errno,
    syscall: e.syscall,
    fwErr: e.fwErr,
    firmwareError: typeof e.firmwareError === 'bigint' ? '0x' + e.firmwareError.toString(16) : undefined,
  };
}

function encodeValue(v) {
  if (Buffer.isBuffer(v)) return { report: v.toString('hex') };
  const out = { report: v.report.toString('hex') };
  if (v.certs) out.certs = v.certs.toString('hex');
  if (v.certTable) out.certTable = v.certTable.map((e) => ({ guid: e.guid, kind: e.kind, data: e.data.toString('hex') }));
  return out;
}

function makeCall() {
  const userData = Buffer.from(spec.userData, 'hex');
  if (spec.mode === 'addon') {
    const addon = require(spec.addonPath);
    return () => addon[spec.op](spec.device, userData, spec.vmpl);
  }
  const load = { addonPath: spec.addonPath };
  const source =
    spec.kind === 'sev'
      ? new (require(path.join(spec.distDir, 'src/snp/sources/legacy-sev.js')).LegacySevSource)(spec.device, load)
      : new (require(path.join(spec.distDir, 'src/snp/sources/sev-guest.js')).SevGuestSource)(spec.device, load);
  return () => source.getReport({ reportData: userData, vmpl: spec.vmpl, extended: spec.extended });
}

async function main() {
  const call = makeCall();
  const settled = await Promise.allSettled(Array.from({ length: spec.repeat || 1 }, () => call()));
  const out = settled.map((r) =>
    r.status === 'fulfilled' ? { ok: true, ...encodeValue(r.value) } : { ok: false, error: encodeError(r.reason) },
  );
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
