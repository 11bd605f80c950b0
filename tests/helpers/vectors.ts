/**
 * Access to the real-hardware vectors in ../shared/vectors. They are never copied into the repo;
 * when the folder is absent (a clone without shared/), vector tests skip with a visible message.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const VECTORS_DIR = process.env.SKR_VECTORS_DIR ?? path.resolve(__dirname, '..', '..', '..', 'shared', 'vectors');
export const haveVectors = fs.existsSync(path.join(VECTORS_DIR, 'real-milan', 'snp_report.bin'));

export function vector(rel: string): Buffer {
  return fs.readFileSync(path.join(VECTORS_DIR, rel));
}

export function vectorPath(rel: string): string {
  return path.join(VECTORS_DIR, rel);
}

/**
 * `describe` that runs only when the vectors exist, and says so loudly when they do not. The body
 * is not even evaluated without vectors (describe.skip would still run it and read missing files).
 */
export const describeVectors = ((name: string, fn: () => void) => {
  if (haveVectors) {
    describe(name, fn);
    return;
  }
  console.warn(`SKIPPING "${name}": real-hardware vectors not found at ${VECTORS_DIR}`);
  describe(`${name} [SKIPPED: no vectors at ${VECTORS_DIR}]`, () => {
    it.skip('needs ../shared/vectors', () => undefined);
  });
}) as (name: string, fn: () => void) => void;

/** `describeVectors` for one vector folder (e.g. `real-azure-tdx`): runs only when that folder exists. */
export function describeVectorFolder(folder: string, name: string, fn: () => void): void {
  if (fs.existsSync(path.join(VECTORS_DIR, folder))) {
    describe(name, fn);
    return;
  }
  console.warn(`SKIPPING "${name}": vectors not found at ${path.join(VECTORS_DIR, folder)}`);
  describe(`${name} [SKIPPED: no vectors at ${path.join(VECTORS_DIR, folder)}]`, () => {
    it.skip(`needs ../shared/vectors/${folder}`, () => undefined);
  });
}
