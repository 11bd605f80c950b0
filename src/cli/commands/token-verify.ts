import { parseArgs } from 'node:util';
import { decodeProtectedHeader } from 'jose';
import { createHttpsFetch } from '../../common/https-fetch';
import { InvalidInputError, UpstreamError, VerificationError } from '../../common/errors';
import { JwksCache, authorityOrigin, verifyMaaToken } from '../../maa/verify-token';
import { CliError, readInput, type Out } from '../io';
import { parseRfc3339 } from '../time';
import { readTokenArg } from '../token-input';

export const usage =
  'skr token verify TOKEN|FILE --authority URL [--jwks FILE] [--ca FILE]... [--at TIME]\n' +
  '      verify an MAA token: RS256 signature with the authority\'s keys (from its OpenID metadata, or --jwks FILE offline),\n' +
  '      issuer = --authority, nbf/exp at --at (RFC 3339; default now). Prints the claims (JSON); exit 1 names the failing step.\n' +
  '      --ca trusts an extra CA for the authority\'s TLS (the local emulators\' CA: caCertPath in the skr local state file).';

/** Node's TLS verification failures: the fix is almost always the emulator CA. */
const TLS_TRUST = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|certificate/i;

export async function tokenVerifyCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      authority: { type: 'string' },
      jwks: { type: 'string' },
      ca: { type: 'string', multiple: true },
      at: { type: 'string' },
    },
  });
  if (positionals.length !== 1 || !values.authority) throw new CliError(`usage: ${usage}`);
  let origin: string;
  try {
    origin = authorityOrigin(values.authority);
  } catch (e) {
    if (e instanceof InvalidInputError) throw new CliError(`--authority: ${e.message}`);
    throw e;
  }
  if (values.jwks && values.ca?.length) throw new CliError('--ca is for fetching the keys online; with --jwks nothing is fetched');
  const at = values.at !== undefined ? parseRfc3339(values.at, '--at') : undefined;
  const now = at ?? new Date();
  const token = await readTokenArg(positionals[0], 'the token');
  let jwks: { document: unknown; name: string } | undefined;
  if (values.jwks) {
    try {
      jwks = { document: JSON.parse((await readInput(values.jwks, 'JWKS')).toString('utf8')) as unknown, name: `--jwks ${values.jwks}` };
    } catch (e) {
      if (e instanceof CliError) throw e;
      throw new CliError(`--jwks ${values.jwks} is not JSON (save the document the authority's jwks_uri serves, e.g. ${origin}/certs)`);
    }
  }
  const extraCaPem = [];
  for (const f of values.ca ?? []) extraCaPem.push((await readInput(f, 'CA')).toString('utf8'));
  const fetch = jwks ? undefined : createHttpsFetch({ extraCaPem, keepAlive: false });
  try {
    const claims = await verifyMaaToken(token, {
      authority: origin,
      now,
      ...(jwks ? { jwks } : { fetch, jwksCache: new JwksCache({ retries: 1, timeoutMs: 10_000 }) }),
    });
    const { kid } = decodeProtectedHeader(token);
    io.out(JSON.stringify(claims, null, 2));
    const exp = typeof claims.exp === 'number' ? new Date(claims.exp * 1000).toISOString() : '?';
    io.err(
      `OK: MAA token signed by key "${String(kid)}" of ${origin} (${jwks ? jwks.name : 'keys from its OpenID metadata'}), ` +
        `issuer matches, valid at ${now.toISOString()} (${at ? '--at' : 'now'}) until ${exp}`,
    );
    return 0;
  } catch (e) {
    if (e instanceof VerificationError) {
      io.err(`FAILED at ${e.step}: ${e.message}`);
      return 1;
    }
    if (e instanceof UpstreamError) {
      const hint = TLS_TRUST.test(e.message)
        ? `; the authority's TLS certificate is not trusted: for a local emulator pass --ca with its CA (caCertPath in the skr local state file)`
        : '';
      io.err(`FAILED at maa-jwks: cannot fetch the signing keys of ${origin}: ${e.message}${hint}`);
      return 1;
    }
    throw e;
  } finally {
    fetch?.destroy();
  }
}
