// Copies the files the compiled code loads at run time (the key provider's .proto files, for gRPC
// reflection) from src/ into the compiled tree beside the modules that load them: dist/ by default,
// or the directory given (the bench compiles src/ elsewhere).
const fs = require('node:fs');
const path = require('node:path');
const root = path.join(__dirname, '..');
const out = path.resolve(root, process.argv[2] ?? 'dist');
for (const rel of ['grpc/proto']) {
  const from = path.join(root, 'src', rel);
  const to = path.join(out, rel);
  fs.mkdirSync(to, { recursive: true });
  for (const f of fs.readdirSync(from)) if (f.endsWith('.proto')) fs.copyFileSync(path.join(from, f), path.join(to, f));
}
