import { policyDigest } from '../../snp/host-data';
import { CliError, readInput, type Out } from '../io';

export const usage = 'skr policy digest [FILE|-]   sha256 hex of a base64 ccePolicy (the HOST_DATA value)';

export async function policyDigestCommand(args: string[], io: Out): Promise<number> {
  if (args.length > 1) throw new CliError(`usage: ${usage}`);
  const text = (await readInput(args[0] ?? '-', 'policy')).toString('utf8');
  io.out(policyDigest(text));
  return 0;
}
