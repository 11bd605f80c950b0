// Builds the N-API addon in native/ with npm's own node-gyp. A failed build must not fail the
// install: the sidecar reports the build error only when a hardware evidence source is used.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const nativeDir = path.join(__dirname, '..', 'native');
const logFile = path.join(nativeDir, 'build-error.log');
if (!fs.existsSync(path.join(nativeDir, 'binding.gyp'))) process.exit(0);

function nodeGypCommand() {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && fs.existsSync(fromNpm)) return [process.execPath, [fromNpm]];
  try {
    return [process.execPath, [require.resolve('node-gyp/bin/node-gyp.js')]];
  } catch {
    const npmDir = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm');
    return [process.execPath, [path.join(npmDir, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')]];
  }
}

// Build against the local Node headers when they are installed: node-gyp would otherwise try to
// download them, which fails on machines without internet access.
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  const prefix = path.join(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${path.resolve(prefix)}`] : [];
}

const [cmd, prefix] = nodeGypCommand();
const res = spawnSync(cmd, [...prefix, 'rebuild', ...nodedirArgs()], { cwd: nativeDir, encoding: 'utf8' });
if (res.status === 0) {
  fs.rmSync(logFile, { force: true });
  console.log('skr-sidecar: native SEV-SNP addon built');
} else {
  const detail = `${res.error ? String(res.error) : ''}\n${res.stdout || ''}\n${res.stderr || ''}`;
  fs.writeFileSync(logFile, detail);
  console.warn(`skr-sidecar: native SEV-SNP addon did not build (see ${logFile}); ` +
    'hardware evidence sources will be unavailable, --simulate still works');
}
