import { parseArgs } from 'node:util';
import { decodeJwt } from 'jose';
import { explainPolicy } from '../../akv/policy-explain';
import { decodeReleasePolicy, parseReleasePolicy, type ReleasePolicy } from '../../akv/policy';
import { CliError, readInput, type Out } from '../io';
import { readTokenArg } from '../token-input';

export const usage =
  'skr policy explain --policy FILE --token JWT|FILE\n' +
  '      show, condition by condition, whether a release policy grants a key to an MAA token (exit 0 only when it would)';

/**
 * A policy arrives as the policy JSON itself, as a `release_policy` object ({contentType, data}), or as
 * a whole key bundle from the vault (GET /keys/{name}) that carries one.
 */
export function policyFromText(text: string): ReleasePolicy {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new CliError('--policy is not JSON (expected a release policy, a release_policy object, or a key bundle)');
  }
  const o = parsed as Record<string, unknown>;
  const rp = (o?.release_policy ?? o?.releasePolicy) as Record<string, unknown> | undefined;
  if (rp && typeof rp.data === 'string') return decodeReleasePolicy({ data: rp.data });
  if (typeof o?.data === 'string' && o.anyOf === undefined) return decodeReleasePolicy({ data: o.data });
  return parseReleasePolicy(parsed);
}

export async function tokenClaims(arg: string): Promise<Record<string, unknown>> {
  // A file may hold the bare JWT or the sidecar's {"token": "..."} answer.
  const jwt = await readTokenArg(arg, '--token');
  try {
    return decodeJwt(jwt) as Record<string, unknown>;
  } catch {
    throw new CliError('--token is not a JWT (give the MAA token, a file holding it, or the /attest/maa JSON answer)');
  }
}

export async function policyExplainCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { policy: { type: 'string' }, token: { type: 'string' } } });
  if (positionals.length || !values.policy || !values.token) throw new CliError(`usage: ${usage}`);
  const policy = policyFromText((await readInput(values.policy, 'policy')).toString('utf8'));
  const claims = await tokenClaims(values.token);
  const ex = explainPolicy(policy, claims);
  for (const l of ex.lines) io.out(l);
  if (ex.hints.length) {
    io.out('');
    io.out('hints:');
    for (const h of ex.hints) io.out(`  - ${h}`);
  }
  io.out('');
  io.out(ex.granted ? 'RELEASE WOULD BE GRANTED' : 'RELEASE WOULD BE DENIED');
  return ex.granted ? 0 : 1;
}
