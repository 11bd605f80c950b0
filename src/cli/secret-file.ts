/**
 * Files that receive key material (`skr import-key --key-out/--derived-key-out`). They are
 * reserved before anything irreversible happens, so a path that cannot be created fails the
 * command up front, and they are never written through an existing file or a symlink:
 *  - default: the path itself is created with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600;
 *  - with force: a fresh sibling is created that way and renamed over the path after writing
 *    (rename replaces a symlink, it does not follow it).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CliError } from './io';

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
const EXCLUSIVE = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;

export interface ReservedSecretFile {
  readonly path: string;
  /** Write the data (mode 0600) and put the file in place. */
  commit(data: string | Buffer): void;
  /** Nothing will be written: remove what was created. Safe to call after commit (no-op). */
  abandon(): void;
}

function describe(code: string | undefined): string {
  switch (code) {
    case 'EEXIST':
      return 'it already exists (pass --force to replace it)';
    case 'ELOOP':
      return 'it is a symlink (refusing to follow it)';
    case 'ENOENT':
      return 'its directory does not exist';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'it is a directory';
    default:
      return code ?? 'unknown error';
  }
}

function openExclusive(file: string, flag: string): number {
  try {
    return fs.openSync(file, EXCLUSIVE, 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(`${flag} ${file}: cannot create it: ${describe(code)}`);
  }
}

/** Reserve `file` for secret output; throws a CliError naming `flag` when it cannot be created. */
export function reserveSecretFile(file: string, flag: string, opts: { force?: boolean } = {}): ReservedSecretFile {
  const target = path.resolve(file);
  let existing: fs.Stats | undefined;
  try {
    existing = fs.lstatSync(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CliError(`${flag} ${file}: ${describe((e as NodeJS.ErrnoException).code)}`);
  }
  if (existing?.isDirectory()) throw new CliError(`${flag} ${file}: cannot create it: it is a directory`);
  if (existing && !opts.force) throw new CliError(`${flag} ${file}: cannot create it: ${describe(existing.isSymbolicLink() ? 'ELOOP' : 'EEXIST')}`);

  const writePath = opts.force ? path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`) : target;
  let fd: number | undefined = openExclusive(writePath, flag);
  let done = false;
  const closeFd = () => {
    if (fd !== undefined) fs.closeSync(fd);
    fd = undefined;
  };
  const abandon = () => {
    if (done) return;
    closeFd();
    fs.rmSync(writePath, { force: true });
    done = true;
  };
  return {
    path: target,
    abandon,
    commit(data) {
      if (fd === undefined) throw new Error('secret file already closed');
      try {
        fs.fchmodSync(fd, 0o600); // the umask can only have removed bits; make it exactly 0600
        fs.writeFileSync(fd, data);
        fs.fsyncSync(fd);
        closeFd();
        if (writePath !== target) fs.renameSync(writePath, target);
        done = true;
      } catch (e) {
        abandon();
        throw new CliError(`${flag} ${file}: cannot write it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    },
  };
}
