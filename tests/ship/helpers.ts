/**
 * Helpers for the shipping tests (docker/, arm/, fragments/): run the shell scripts as real child
 * processes against a real sidecar on 127.0.0.1, and always clean the children up.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

export const REPO = path.resolve(__dirname, '..', '..');
/** The compiled CLI: jest's globalSetup (tests/helpers/global-setup.js) rebuilds dist/ before these tests run. */
export const CLI = path.join(REPO, 'dist', 'cli', 'main.js');
export const SKR_BIN = `${process.execPath} ${CLI}`;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export interface Proc {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const live = new Set<ChildProcess>();

export function start(cmd: string, args: string[], opts: SpawnOptions = {}): Proc {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  live.add(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, output: () => out, exited };
}

/** Run to completion (with a deadline: a hung script must fail the test, not the suite). */
export async function run(cmd: string, args: string[], opts: SpawnOptions = {}, deadlineMs = 20_000): Promise<{ code: number | null; out: string }> {
  const p = start(cmd, args, opts);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), deadlineMs);
  const { code } = await p.exited;
  clearTimeout(timer);
  return { code, out: p.output() };
}

export async function stop(p: Proc | undefined): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 5000);
  await p.exited;
  clearTimeout(timer);
}

/** Last resort for afterAll: nothing this file started survives the test file (a live child keeps the jest worker alive). */
export async function killAll(): Promise<void> {
  const exits = [...live].map((c) => new Promise((r) => c.once('exit', r)));
  for (const c of live) c.kill('SIGKILL');
  await Promise.all(exits);
  live.clear();
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, deadlineMs = 20_000, p?: Proc): Promise<T> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (p && (p.child.exitCode !== null || p.child.signalCode !== null)) {
      throw new Error(`${what}: process exited early:\n${p.output()}`);
    }
    if (Date.now() > until) throw new Error(`${what}: not ready in ${deadlineMs} ms${p ? `:\n${p.output()}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function statusOk(baseUrl: string): Promise<true | undefined> {
  try {
    const res = await fetch(`${baseUrl}/status`);
    return res.status === 200 ? true : undefined;
  } catch {
    return undefined;
  }
}

export function readJson(file: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
}
