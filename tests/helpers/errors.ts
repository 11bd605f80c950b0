import { VerificationError } from '../../src/common/errors';

/** The VerificationError step `fn` fails at, or undefined when it succeeds; other errors propagate. */
export function stepOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof VerificationError) return e.step;
    throw e;
  }
  return undefined;
}
