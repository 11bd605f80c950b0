/* Jest globalTeardown: fail the run when a test (or a process it started) left anything in the
 * run's private temporary directory, then remove it either way so nothing stays in /tmp. */
'use strict';
/* global require, module, process */
/* eslint-disable @typescript-eslint/no-require-imports */
const fs = require('node:fs');

module.exports = async function globalTeardown() {
  const dir = process.env.SKR_JEST_TMPDIR;
  if (!dir) return;
  let left = [];
  try {
    left = fs.readdirSync(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (left.length > 0) {
    throw new Error(`tests left ${left.length} temporary entr${left.length === 1 ? 'y' : 'ies'} behind (every test must remove what it creates): ${left.sort().join(', ')}`);
  }
};
