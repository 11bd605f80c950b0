#!/usr/bin/env node
/**
 * `skr`: the sidecar's command line. Each command lives in its own module; this file only routes.
 */
import { SkrError } from '../common/errors';
import { CliError, stdio, type Out } from './io';

type Command = { usage: string; run: (args: string[], io: Out) => Promise<number> };

/**
 * Each command's module is loaded only when that command runs: `skr serve` (the production path)
 * never loads the emulators and test-only keys that `skr local` and the report tools use.
 */
const COMMANDS: Record<string, () => Promise<Command>> = {
  serve: async () => import('./commands/serve').then((m) => ({ usage: m.usage, run: m.serveCommand })),
  local: async () => import('./commands/local').then((m) => ({ usage: m.usage, run: m.localCommand })),
  'import-key': async () => import('./commands/import-key').then((m) => ({ usage: m.usage, run: m.importKeyCommand })),
  release: async () => import('./commands/release').then((m) => ({ usage: m.usage, run: m.releaseCommand })),
  doctor: async () => import('./commands/doctor').then((m) => ({ usage: m.usage, run: m.doctorCommand })),
  wrap: async () => import('./commands/wrap').then((m) => ({ usage: m.usage, run: m.wrapCommand })),
  demo: async () => import('./commands/demo').then((m) => ({ usage: m.usage, run: m.demoCommand })),
  'report get': async () => import('./commands/report-get').then((m) => ({ usage: m.usage, run: m.reportGetCommand })),
  'report decode': async () => import('./commands/report-decode').then((m) => ({ usage: m.usage, run: m.reportDecodeCommand })),
  'report verify': async () => import('./commands/report-verify').then((m) => ({ usage: m.usage, run: m.reportVerifyCommand })),
  'policy digest': async () => import('./commands/policy-digest').then((m) => ({ usage: m.usage, run: m.policyDigestCommand })),
  'policy explain': async () => import('./commands/policy-explain').then((m) => ({ usage: m.usage, run: m.policyExplainCommand })),
  'token verify': async () => import('./commands/token-verify').then((m) => ({ usage: m.usage, run: m.tokenVerifyCommand })),
};

export async function helpText(): Promise<string> {
  const commands = await Promise.all(Object.values(COMMANDS).map((load) => load()));
  return ['usage: skr <command> [options]', '', 'commands:', ...commands.map((c) => `  ${c.usage}`)].join('\n');
}

export async function main(argv: string[], io: Out = stdio): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    io.out(await helpText());
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === '--version') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    io.out((require('../../package.json') as { version: string }).version);
    return 0;
  }
  const two = `${argv[0]} ${argv[1] ?? ''}`.trim();
  const [name, rest] = COMMANDS[two] ? [two, argv.slice(2)] : [argv[0], argv.slice(1)];
  const load = COMMANDS[name];
  if (!load) {
    io.err(`skr: unknown command "${argv.slice(0, 2).join(' ')}"\n\n${await helpText()}`);
    return 2;
  }
  const cmd = await load();
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(`usage: ${cmd.usage}`);
    return 0;
  }
  try {
    return await cmd.run(rest, io);
  } catch (e) {
    if (e instanceof CliError) {
      io.err(`skr ${name}: ${e.message}`);
      return e.exitCode;
    }
    if (e instanceof SkrError) {
      io.err(`skr ${name}: ${e.code}: ${e.message}`);
      return 1;
    }
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_')) {
      io.err(`skr ${name}: ${(e as Error).message}\nusage: ${cmd.usage}`);
      return 2;
    }
    io.err(`skr ${name}: unexpected error: ${(e as Error).message ?? String(e)}`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      // serve/local keep the process alive through their servers and exit on signals.
      if (code !== -1) process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`skr: ${String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
