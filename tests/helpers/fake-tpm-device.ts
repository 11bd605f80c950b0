/**
 * A fake TPM character device: a pseudo-terminal in raw mode whose slave path (/dev/pts/N) stands in for
 * /dev/tpmrm0. A python3 child holds the master side and, command by command, either forwards to a real
 * TPM over TCP (swtpm, or the simulated paravisor's port) or stays silent: it reads the command and never
 * answers, like a hung vTPM. Switched with setMode(); stopped by PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

const SCRIPT = String.raw`
import os, pty, select, socket, struct, sys, tty
master, slave = pty.openpty()
tty.setraw(slave)
tty.setraw(master)
port = int(sys.argv[1])
mode = 'forward'
up = None
buf = b''
print(os.ttyname(slave), flush=True)
def read_exact(s, n):
    out = b''
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            raise EOFError()
        out += d
    return out
while True:
    r, _, _ = select.select([master, sys.stdin], [], [])
    if sys.stdin in r:
        line = sys.stdin.readline()
        if not line:
            break
        mode = line.strip()
        print('mode ' + mode, flush=True)
    if master in r:
        buf += os.read(master, 65536)
        while len(buf) >= 10:
            size = struct.unpack('>I', buf[2:6])[0]
            if len(buf) < size:
                break
            cmd, buf = buf[:size], buf[size:]
            if mode == 'silent':
                continue
            if up is None:
                up = socket.create_connection(('127.0.0.1', port))
            up.sendall(cmd)
            head = read_exact(up, 10)
            rest = read_exact(up, struct.unpack('>I', head[2:6])[0] - 10)
            os.write(master, head + rest)
`;

export interface FakeTpmDevice {
  /** The device path to give as --tpm. */
  path: string;
  setMode(mode: 'forward' | 'silent'): Promise<void>;
  stop(): Promise<void>;
}

export async function startFakeTpmDevice(upstreamPort: number): Promise<FakeTpmDevice> {
  const child: ChildProcess = spawn('python3', ['-c', SCRIPT, String(upstreamPort)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  let pending = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => {
    pending += d;
    for (let i = pending.indexOf('\n'); i >= 0; i = pending.indexOf('\n')) {
      const l = pending.slice(0, i);
      pending = pending.slice(i + 1);
      const w = waiters.shift();
      if (w) w(l);
      else lines.push(l);
    }
  });
  const nextLine = () =>
    new Promise<string>((resolve, reject) => {
      const l = lines.shift();
      if (l !== undefined) return resolve(l);
      const t = setTimeout(() => reject(new Error('fake TPM device: no answer from the python3 helper')), 10_000);
      waiters.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
  const path = await nextLine();
  if (!path.startsWith('/dev/')) throw new Error(`fake TPM device: unexpected first line ${path}`);
  return {
    path,
    async setMode(mode) {
      child.stdin?.write(`${mode}\n`);
      const ack = await nextLine();
      if (ack !== `mode ${mode}`) throw new Error(`fake TPM device: ${ack}`);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        process.kill(child.pid, 'SIGKILL');
        await once(child, 'exit');
      }
    },
  };
}
