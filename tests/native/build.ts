/**
 * Test support: make sure the addon under test is built from the current sources, and compile the
 * LD_PRELOAD fake device. Both need gcc; CI has it, so a failed build fails the tests.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ADDON_PATH, BUILD_LOG_PATH } from '../../src/snp/native';

const ROOT = path.resolve(__dirname, '..', '..');
const SOURCES = [path.join(ROOT, 'native', 'binding.gyp'), path.join(ROOT, 'native', 'src', 'sev_guest.c')];

function stale(): boolean {
  if (!fs.existsSync(ADDON_PATH)) return true;
  const built = fs.statSync(ADDON_PATH).mtimeMs;
  return SOURCES.some((s) => fs.statSync(s).mtimeMs > built);
}

/** Node headers shipped with a distro/system Node (e.g. /usr/include/node), so node-gyp needs no download. */
function localNodeDir(): string | undefined {
  const prefix = path.dirname(path.dirname(process.execPath));
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
}

export function ensureAddonBuilt(): void {
  if (!stale()) return;
  const env = { ...process.env };
  const nodedir = env.npm_config_nodedir ?? localNodeDir();
  if (nodedir !== undefined) env.npm_config_nodedir = nodedir;
  spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build-native.js')], { cwd: ROOT, env, encoding: 'utf8' });
  if (!fs.existsSync(ADDON_PATH) || stale()) {
    const log = fs.existsSync(BUILD_LOG_PATH) ? fs.readFileSync(BUILD_LOG_PATH, 'utf8').slice(-4000) : '(no build log)';
    throw new Error(`the native addon did not build at ${ADDON_PATH}:\n${log}`);
  }
}

/** Compile tests/native/shim/fake_sev_guest.c into a fresh temp dir; returns the .so path. */
export function buildShim(dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-shim-'))): string {
  const out = path.join(dir, 'shim.so');
  const res = spawnSync('gcc', ['-shared', '-fPIC', '-Wall', '-o', out, path.join(__dirname, 'shim', 'fake_sev_guest.c'), '-ldl'], {
    encoding: 'utf8',
  });
  if (res.status !== 0) throw new Error(`gcc failed to build the fake device shim: ${res.error ?? ''}${res.stderr}`);
  return out;
}

/**
 * Transpile `entries` and every relative import they reach into `outDir` (same layout as the repo),
 * so a plain `node` child can run the real TypeScript sources. Type checking is tsc's job elsewhere.
 */
export function transpileTree(entries: string[], outDir: string): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ts = require('typescript') as typeof import('typescript');
  const todo = entries.map((e) => path.resolve(ROOT, e));
  const done = new Set<string>();
  while (todo.length > 0) {
    const file = todo.pop() as string;
    if (done.has(file)) continue;
    done.add(file);
    const src = fs.readFileSync(file, 'utf8');
    for (const m of src.matchAll(/\bfrom\s+'(\.{1,2}\/[^']+)'/g)) todo.push(path.resolve(path.dirname(file), `${m[1]}.ts`));
    const js = ts.transpileModule(src, {
      compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
      fileName: file,
    }).outputText;
    const out = path.join(outDir, path.relative(ROOT, file)).replace(/\.ts$/, '.js');
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, js);
  }
}
