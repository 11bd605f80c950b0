#!/usr/bin/env node
// Embeds arm/cvm/cloud-init.yaml verbatim into the template's `cloudInit` variable, which the VM's
// customData is built from (base64 of it with the __SKR_*__ tokens replaced at deployment).
//   node arm/cvm/build-template.mjs           rewrite cvm-arm-template.json
//   node arm/cvm/build-template.mjs --check   exit 1 when the template is not up to date
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const templatePath = join(here, 'cvm-arm-template.json');
const cloudInitPath = join(here, 'cloud-init.yaml');

const current = readFileSync(templatePath, 'utf8');
const template = JSON.parse(current);
const cloudInit = readFileSync(cloudInitPath, 'utf8');
if (!cloudInit.startsWith('#cloud-config\n')) {
  process.stderr.write(`${cloudInitPath}: must start with "#cloud-config"\n`);
  process.exit(1);
}
if (typeof template.variables?.cloudInit !== 'string') {
  process.stderr.write(`${templatePath}: variables.cloudInit is missing\n`);
  process.exit(1);
}
template.variables.cloudInit = cloudInit;
const next = `${JSON.stringify(template, null, 2)}\n`;

if (process.argv.includes('--check')) {
  if (next !== current) {
    process.stderr.write('arm/cvm/cvm-arm-template.json is out of date with arm/cvm/cloud-init.yaml: run node arm/cvm/build-template.mjs\n');
    process.exit(1);
  }
  process.stdout.write('arm/cvm/cvm-arm-template.json is up to date\n');
} else if (next === current) {
  process.stdout.write('arm/cvm/cvm-arm-template.json already up to date\n');
} else {
  writeFileSync(templatePath, next);
  process.stdout.write('arm/cvm/cvm-arm-template.json updated from arm/cvm/cloud-init.yaml\n');
}
