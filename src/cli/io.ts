/** CLI plumbing: reading inputs, and errors that end a command with a message and exit code. */
import { readFile } from 'node:fs/promises';
import { SkrError, type ErrorCode } from '../common/errors';

export class CliError extends SkrError {
  readonly exitCode: number;
  constructor(message: string, exitCode = 2, code: ErrorCode = 'ERR_CLI') {
    super(code, message);
    this.exitCode = exitCode;
  }
}

export async function readInput(pathOrDash: string | undefined, what: string): Promise<Buffer> {
  if (pathOrDash === undefined || pathOrDash === '-') {
    if (pathOrDash === undefined && process.stdin.isTTY) throw new CliError(`${what}: give a file or pipe it on stdin (-)`);
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(Buffer.from(c as Buffer));
    return Buffer.concat(chunks);
  }
  try {
    return await readFile(pathOrDash);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new CliError(`cannot read ${what} ${pathOrDash}: ${err.code ?? err.message}`);
  }
}

export interface Out {
  out(line: string): void;
  err(line: string): void;
}

export const stdio: Out = {
  out: (l) => process.stdout.write(l + '\n'),
  err: (l) => process.stderr.write(l + '\n'),
};
