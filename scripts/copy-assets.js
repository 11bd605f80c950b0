// Copies the files the compiled code loads at run time (the key provider's .proto files, for gRPC
// reflection) from src/ into dist/, beside the modules that load them.
const fs = require('node:fs');
const path = require('node:path');
const root = path.join(__dirname, '..');
for (const rel of ['grpc/proto']) {
  const from = path.join(root, 'src', rel);
  const to = path.join(root, 'dist', rel);
  fs.mkdirSync(to, { recursive: true });
  for (const f of fs.readdirSync(from)) if (f.endsWith('.proto')) fs.copyFileSync(path.join(from, f), path.join(to, f));
}
