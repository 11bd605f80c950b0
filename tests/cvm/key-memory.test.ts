/**
 * Issue 20, item 5: the AES transfer keys the vTPM decrypts must not stay in the process. A child process
 * holds the vTPM KEK over swtpm's TCP port (our transport and client, as the sidecar does), unwraps three
 * key_hsm blobs through RSA_Decrypt, wipes the released material as the pipeline does and collects
 * garbage; the parent, which made the blobs and alone knows the keys, then reads the child's whole
 * address space (/proc/PID/maps + /proc/PID/mem: every readable mapping, V8 heap, malloc arenas, stacks)
 * and counts the keys' bytes.
 *
 * What this covers: every copy our code, Node's socket layer and OpenSSL leave in readable memory after
 * GC. What it cannot: swtpm's own process, the kernel's socket buffers, and copies that a later GC or
 * allocation would have reused anyway.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants, createCipheriv, createPublicKey, publicEncrypt, randomBytes, type JsonWebKey } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { startSwtpm, type Swtpm } from '../helpers/swtpm';

jest.setTimeout(120_000);

const REPO = path.resolve(__dirname, '..', '..');
const HOOK = path.join(REPO, 'tests', 'hardening', 'ts-hook.js');
const CHILD = path.join(REPO, 'tests', 'helpers', 'kek-memory-child.ts');

/** Occurrences of each needle in the readable memory of `pid`. */
function scanProcess(pid: number, needles: Buffer[]): { counts: number[]; bytesScanned: number } {
  const counts = needles.map(() => 0);
  let bytesScanned = 0;
  const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n');
  const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
  const CHUNK = 4 * 1024 * 1024;
  const overlap = Math.max(...needles.map((n) => n.length)) - 1;
  const buf = Buffer.alloc(CHUNK + overlap);
  try {
    for (const line of maps) {
      const [range, perms, , , , name] = line.split(/\s+/);
      if (!perms.startsWith('r') || name === '[vvar]' || name === '[vsyscall]') continue;
      const [start, end] = range.split('-').map((h) => BigInt(`0x${h}`));
      let carry = 0;
      for (let at = start; at < end; ) {
        const want = Number(end - at < BigInt(CHUNK) ? end - at : BigInt(CHUNK));
        let n: number;
        try {
          n = fs.readSync(fd, buf, carry, want, at);
        } catch {
          break; // unreadable mapping (device memory, guard pages)
        }
        if (n <= 0) break;
        bytesScanned += n;
        const view = buf.subarray(0, carry + n);
        needles.forEach((needle, i) => {
          for (let p = view.indexOf(needle); p >= 0; p = view.indexOf(needle, p + 1)) counts[i]++;
        });
        // Keep the tail so a key straddling two chunks is still found (and not counted twice).
        carry = Math.min(overlap, view.length);
        view.copy(buf, 0, view.length - carry);
        at += BigInt(n);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return { counts, bytesScanned };
}

describe('decrypted keys do not stay in memory (vTPM KEK over swtpm, child process scanned by /proc/PID/mem)', () => {
  let tpm: Swtpm;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    tpm = await startSwtpm();
  });
  afterAll(async () => {
    if (child?.pid !== undefined && child.exitCode === null) child.kill('SIGKILL');
    await tpm?.stop();
  });

  it('after three unwraps and GC, no copy of any AES transfer key (nor of the released material) is left', async () => {
    child = spawn(process.execPath, ['--expose-gc', '-r', HOOK, CHILD, String(tpm.port)], { stdio: ['pipe', 'pipe', 'inherit'], cwd: REPO });
    const lines = readline.createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const it = lines[Symbol.asyncIterator]();
    const next = async () => String((await it.next()).value);
    const jwk = JSON.parse(await next()) as JsonWebKey;
    const kekPub = createPublicKey({ key: jwk, format: 'jwk' });

    const aesKeys = [0, 1, 2].map(() => randomBytes(32));
    const materials = [0, 1, 2].map(() => randomBytes(48));
    const blobs = aesKeys.map((k, i) => {
      const rsa = publicEncrypt({ key: kekPub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, k);
      const c = createCipheriv('id-aes256-wrap-pad', k, Buffer.from('a65959a6', 'hex'));
      return Buffer.concat([rsa, c.update(materials[i]), c.final()]).toString('base64');
    });
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const token = `${b64({ alg: 'none' })}.${b64({ 'x-ms-runtime': { keys: [jwk] } })}.sig`;
    child.stdin?.write(`${JSON.stringify({ token, blobs })}\n`);
    expect(await next()).toBe('ready');

    const { counts, bytesScanned } = scanProcess(child.pid as number, [...aesKeys, ...materials]);
    // The scan saw the whole process (tens of MB: V8 heap, Node, OpenSSL), not an empty map.
    expect(bytesScanned).toBeGreaterThan(10 * 1024 * 1024);
    console.log(`key-memory scan: ${(bytesScanned / 1048576).toFixed(0)} MiB read; copies of the 3 AES transfer keys: ${counts.slice(0, 3).join(', ')}; of the 3 released materials: ${counts.slice(3).join(', ')}`);
    expect(counts.slice(0, 3)).toEqual([0, 0, 0]);
    expect(counts.slice(3)).toEqual([0, 0, 0]);
    lines.close();
  });
});
