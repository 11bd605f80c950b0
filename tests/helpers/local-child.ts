/**
 * `skr local` through the real CLI entry point in a child process (TypeScript via the test hook), with
 * its output captured and its state file read once it is written.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const REPO = path.resolve(__dirname, '..', '..');
const HOOK = path.join(REPO, 'tests', 'hardening', 'ts-hook.js');
const SCRIPT = `require(${JSON.stringify(path.join(REPO, 'src', 'cli', 'main.ts'))}).main(process.argv.slice(1)).then((c) => { if (c !== -1) process.exit(c); });`;

export interface LocalChild {
  child: ChildProcess;
  /** stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code once the child has exited. */
  exited: Promise<number | null>;
  /** Polls (up to 90 s) until the state file parses; throws with the child's output when it never does. */
  readState<S>(): Promise<S>;
  /** For `finally`: SIGKILL the child if it is still running and wait for it. */
  killIfRunning(): Promise<void>;
}

/** Starts `skr local <args> --state-dir dir --state-file stateFile --log-level error` with cwd and HOME at dir. */
export function startLocalChild(dir: string, stateFile: string, args: string[]): LocalChild {
  const child = spawn(process.execPath, ['-r', HOOK, '-e', SCRIPT, 'local', ...args, '--state-dir', dir, '--state-file', stateFile, '--log-level', 'error'], {
    cwd: dir,
    env: { PATH: process.env.PATH, HOME: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    exited,
    async readState<S>(): Promise<S> {
      let state: S | undefined;
      for (let i = 0; i < 900 && !state && child.exitCode === null; i++) {
        await new Promise((r) => setTimeout(r, 100));
        try {
          state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as S;
        } catch {
          state = undefined;
        }
      }
      if (!state) throw new Error(`skr local did not write its state file:\n${out}`);
      return state;
    },
    async killIfRunning(): Promise<void> {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}
