/** An MAA token given on the command line: the JWT itself, a file holding it, or the sidecar's {"token": ...} answer. */
import { existsSync } from 'node:fs';
import { CliError, readInput } from './io';

/** Far above any MAA token (a CVM token with its runtime keys is about 10 KiB). */
export const MAX_TOKEN_BYTES = 1 << 20;

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** The compact JWT text of `arg`; `what` names the argument in errors. */
export async function readTokenArg(arg: string, what: string): Promise<string> {
  let text: string;
  if (COMPACT_JWS.test(arg.trim()) && !existsSync(arg)) {
    text = arg.trim();
  } else {
    const bytes = await readInput(arg, 'token');
    if (bytes.length > MAX_TOKEN_BYTES) throw new CliError(`${what} is ${bytes.length} bytes, more than any MAA token (${MAX_TOKEN_BYTES})`);
    text = bytes.toString('utf8').trim();
  }
  if (!text.startsWith('{')) return text;
  let token: unknown;
  try {
    token = (JSON.parse(text) as { token?: unknown } | null)?.token;
  } catch {
    throw new CliError(`${what} holds JSON that does not parse (give the MAA token, a file holding it, or the /attest/maa JSON answer)`);
  }
  if (typeof token !== 'string') throw new CliError(`${what} holds JSON without a "token" string`);
  return token.trim();
}
