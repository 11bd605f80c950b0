#!/usr/bin/env node
/**
 * `skr`: the sidecar's command line. Each command lives in its own module; this file only routes.
 */
import { SkrError } from '../common/errors';
import { CliError, stdio, type Out } from './io';
import * as digest from './commands/policy-digest';
import * as decode from './commands/report-decode';
import * as verify from './commands/report-verify';
import * as serve from './commands/serve';
import * as local from './commands/local';
import * as explain from './commands/policy-explain';
import * as importKey from './commands/import-key';
import * as demo from './commands/demo';
import * as tokenVerify from './commands/token-verify';
import * as reportGet from './commands/report-get';

type Command = { usage: string; run: (args: string[], io: Out) => Promise<number> };

const COMMANDS: Record<string, Command> = {
  serve: { usage: serve.usage, run: serve.serveCommand },
  local: { usage: local.usage, run: local.localCommand },
  'import-key': { usage: importKey.usage, run: importKey.importKeyCommand },
  demo: { usage: demo.usage, run: demo.demoCommand },
  'report get': { usage: reportGet.usage, run: reportGet.reportGetCommand },
  'report decode': { usage: decode.usage, run: decode.reportDecodeCommand },
  'report verify': { usage: verify.usage, run: verify.reportVerifyCommand },
  'policy digest': { usage: digest.usage, run: digest.policyDigestCommand },
  'policy explain': { usage: explain.usage, run: explain.policyExplainCommand },
  'token verify': { usage: tokenVerify.usage, run: tokenVerify.tokenVerifyCommand },
};

export function helpText(): string {
  return ['usage: skr <command> [options]', '', 'commands:', ...Object.values(COMMANDS).map((c) => `  ${c.usage}`)].join('\n');
}

export async function main(argv: string[], io: Out = stdio): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    io.out(helpText());
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === '--version') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    io.out((require('../../package.json') as { version: string }).version);
    return 0;
  }
  const two = `${argv[0]} ${argv[1] ?? ''}`.trim();
  const [name, rest] = COMMANDS[two] ? [two, argv.slice(2)] : [argv[0], argv.slice(1)];
  const cmd = COMMANDS[name];
  if (!cmd) {
    io.err(`skr: unknown command "${argv.slice(0, 2).join(' ')}"\n\n${helpText()}`);
    return 2;
  }
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
