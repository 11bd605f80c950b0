/**
 * The secret registry behind redactText (src/common/redact.ts): every registered value is replaced
 * wherever it sits, the longest one wins where values share a beginning, lifetimes are honoured, and
 * the registry stays bounded. The wiring into answers and logs is tested in tests/hardening/redaction.test.ts.
 */
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { REDACTED, redactText, registerSecret, registeredSecretCount } from '../../src/common/redact';

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
/** Opaque base64url values, at least 12 characters (shorter ones are never registered). */
const secretArb = fc.string({ unit: fc.constantFrom(...B64URL), minLength: 12, maxLength: 90 });
/** Text between secrets: characters no secret contains, so no match can start or end inside it. */
const fillerArb = fc.string({ unit: fc.constantFrom(' ', '|', ':', '<', '>', '{', '}', '"', ',', '\n', 'é'), maxLength: 20 });

/** What redaction must produce: each occurrence replaced, the longest value first. */
function reference(text: string, values: string[]): string {
  let out = text;
  for (const v of [...values].sort((a, b) => b.length - a.length)) out = out.split(v).join(REDACTED);
  return out;
}

describe('redactText: the registry of secrets', () => {
  it('replaces every occurrence of every registered value, and nothing else (property)', () => {
    fc.assert(
      fc.property(fc.uniqueArray(secretArb, { minLength: 1, maxLength: 12 }), fc.array(fc.tuple(fillerArb, fc.nat()), { maxLength: 30 }), fillerArb, (values, pieces, tail) => {
        // No value inside another: then the order of replacement cannot matter.
        fc.pre(values.every((a) => values.every((b) => a === b || !b.includes(a))));
        for (const v of values) registerSecret(v);
        const text = pieces.map(([f, n]) => f + values[n % values.length]).join('') + tail;
        const out = redactText(text);
        expect(out).toBe(reference(text, values));
        for (const v of values) expect(out).not.toContain(v);
      }),
      { numRuns: 300 },
    );
  });

  it('at one position the longest registered value wins (a whole token over its beginning)', () => {
    const whole = `shared${randomBytes(24).toString('hex')}`;
    const start = whole.slice(0, 20);
    registerSecret(start);
    registerSecret(whole);
    expect(redactText(`a ${whole} b ${start} c`)).toBe(`a ${REDACTED} b ${REDACTED} c`);
  });

  it('finds values that share their first characters with many others', () => {
    const header = 'eyJhbGciOiJSUzI1NiJ9';
    const tokens = Array.from({ length: 200 }, () => `${header}.${randomBytes(30).toString('base64url')}`);
    for (const t of tokens) registerSecret(t);
    const pick = [tokens[0], tokens[117], tokens[199]];
    const out = redactText(pick.join(' and '));
    expect(out).toBe([REDACTED, REDACTED, REDACTED].join(' and '));
  });

  it('keeps the longer life when a value is registered again with a shorter one', () => {
    const v = `twice${randomBytes(20).toString('hex')}`;
    registerSecret(v);
    registerSecret(v, { ttlMs: 0 });
    expect(redactText(v)).toBe(REDACTED);
    const w = `expiring${randomBytes(20).toString('hex')}`;
    registerSecret(w, { ttlMs: 0 });
    expect(redactText(`x ${w} y`)).toBe(`x ${w} y`);
  });

  it('stays bounded: past 1024 values the oldest are forgotten first', () => {
    const first = `oldest${randomBytes(20).toString('hex')}`;
    registerSecret(first);
    const later = Array.from({ length: 1100 }, (_, i) => `later${i}x${randomBytes(12).toString('hex')}`);
    for (const v of later) registerSecret(v);
    expect(registeredSecretCount()).toBe(1024);
    expect(redactText(first)).toBe(first);
    expect(redactText(later[1099])).toBe(REDACTED);
    expect(redactText(later[100])).toBe(REDACTED);
  });
});
