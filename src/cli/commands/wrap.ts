/**
 * `skr wrap`: the reference's `-infile -keypath -outfile` mode. Wraps a file (layer options) to the
 * key `<key path>-info.json` names, RSA-OAEP-SHA256, and writes the annotation packet base64: the value
 * of an image's `org.opencontainers.image.enc.keys.provider.attestation-agent` annotation.
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { wrapWithKeyInfo } from '../../grpc/key-info';
import { MAX_OPTSDATA_BYTES } from '../../grpc/envelope';
import { wipe } from '../../common/bytes';
import { CliError, readInput, type Out } from '../io';

export const usage =
  'skr wrap --in FILE --key-path PATH --out FILE\n' +
  '      wrap FILE (an image layer\'s options) to the RSA key PATH-info.json names ({public_key_path, kms_endpoint,\n' +
  '      attester_endpoint}) with RSA-OAEP-SHA256; writes the key provider\'s annotation packet, base64, to --out';

export async function wrapCommand(args: string[], io: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { in: { type: 'string' }, 'key-path': { type: 'string' }, out: { type: 'string' } },
  });
  if (positionals.length) throw new CliError(`unexpected argument "${positionals[0].slice(0, 80)}"\nusage: ${usage}`);
  if (!values.in || !values['key-path'] || !values.out) throw new CliError(`--in, --key-path and --out are required\nusage: ${usage}`);
  const data = await readInput(values.in, 'input file');
  try {
    if (data.length === 0) throw new CliError(`input file ${values.in} is empty`);
    if (data.length > MAX_OPTSDATA_BYTES) throw new CliError(`input file ${values.in} is larger than ${MAX_OPTSDATA_BYTES} bytes (layer options are small)`);
    const packet = wrapWithKeyInfo(data, values['key-path']);
    try {
      fs.writeFileSync(values.out, packet.toString('base64'), { mode: 0o644 });
    } catch (e) {
      throw new CliError(`cannot write ${values.out}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, 1);
    }
  } finally {
    wipe(data);
  }
  io.err(`skr wrap: the wrapped data is saved to ${values.out}`);
  return 0;
}
