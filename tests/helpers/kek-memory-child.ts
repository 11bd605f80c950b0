/**
 * Child process of tests/cvm/key-memory.test.ts (run with --expose-gc and the ts hook): the vTPM KEK over
 * swtpm's TCP port, as the sidecar holds it. Prints the KEK's public JWK, reads one JSON line of key_hsm
 * blobs and a token naming the KEK, unwraps each through the TPM, wipes the material as the release
 * pipeline does, collects garbage and prints "ready"; then waits to be scanned and killed. It never sees
 * the AES transfer keys except through the TPM's RSA_Decrypt.
 */
import * as readline from 'node:readline';
import { wipe } from '../../src/common/bytes';
import { TPM_KEY_KID } from '../../src/cvm/guest-attestation';
import { TpmKekSource } from '../../src/cvm/tpm-kek';
import { SwtpmTcpTransport, TpmClient } from '../../src/tpm';

async function main(): Promise<void> {
  const port = Number(process.argv[process.argv.length - 1]);
  const tpm = new TpmClient(new SwtpmTcpTransport({ port }));
  const source = new TpmKekSource(tpm);
  const kek = await source.take();
  process.stdout.write(`${JSON.stringify(kek.publicJwk)}\n`);
  const rl = readline.createInterface({ input: process.stdin });
  const line = await new Promise<string>((resolve) => rl.once('line', resolve));
  rl.close();
  const job = JSON.parse(line) as { token: string; blobs: string[] };
  for (const b of job.blobs) {
    const ciphertext = Buffer.from(b, 'base64');
    const material = await kek.unwrap({ kid: TPM_KEY_KID, enc: 'RSA_AES_KEY_WRAP_256', ciphertext }, { maaToken: job.token });
    wipe(material, ciphertext);
  }
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  process.stdout.write('ready\n');
  // Stay alive (and the TPM connection open) until the parent has scanned and kills us.
  setInterval(() => undefined, 60_000);
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
