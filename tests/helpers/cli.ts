/** Run the `skr` CLI in-process and capture what it prints. */
import { main } from '../../src/cli/main';
import type { Out } from '../../src/cli/io';

export async function runCli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: Out = { out: (l) => out.push(l), err: (l) => err.push(l) };
  const code = await main(argv, io);
  return { code, out: out.join('\n'), err: err.join('\n') };
}
