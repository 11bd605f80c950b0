/* Jest globalSetup.
 * 1. The whole run gets a private temporary directory (TMPDIR, inherited by the workers and every
 *    child process they start), so globalTeardown can see exactly what the tests left behind.
 * 2. dist/ is rebuilt first (incrementally: seconds when nothing changed), so the tests that run
 *    the compiled CLI as real processes (tests/ship, tests/server) never test a stale build. */
'use strict';
/* global require, module, process, __dirname */
/* eslint-disable @typescript-eslint/no-require-imports */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..');

function buildDist() {
  const tsc = require.resolve('typescript/bin/tsc');
  const info = path.join(REPO, 'node_modules', '.cache', 'skr-ship', 'tsbuildinfo');
  const steps = [
    [tsc, '-p', 'tsconfig.build.json', '--incremental', '--tsBuildInfoFile', info],
    [path.join(REPO, 'scripts', 'chmod-bin.js')],
    // The files the compiled code loads at run time (the key provider's .proto files), as `npm run build` copies them.
    [path.join(REPO, 'scripts', 'copy-assets.js')],
  ];
  for (const args of steps) {
    const r = spawnSync(process.execPath, args, { cwd: REPO, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`building dist/ for the tests failed (${args.join(' ')}):\n${r.stdout}${r.stderr}`);
  }
}

module.exports = async function globalSetup() {
  buildDist();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-jest-'));
  process.env.SKR_JEST_TMPDIR = dir;
  process.env.TMPDIR = dir;
};
