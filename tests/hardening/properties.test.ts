/**
 * Property-based tests (fast-check, bounded runs): random and mutated input to the parsers and
 * decoders that see attacker-controlled bytes. Each may accept its input or refuse it with a typed
 * SkrError; nothing else (no TypeError, RangeError or stack overflow) may escape.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { verifyReleaseJws } from '../../src/akv/jws';
import { createReleaseSigner, signReleaseJws } from '../../src/emulators/akv/release-signer';
import { decodeKeyHsm, encodeKeyHsm } from '../../src/akv/key-hsm';
import { buildReleasePolicy, evaluateReleasePolicy, parseReleasePolicy } from '../../src/akv/policy';
import { decodeBase64Strict } from '../../src/common/bytes';
import { SkrError } from '../../src/common/errors';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { parseSevSnpVmRequest } from '../../src/maa/request';
import { jsonDepthExceeds } from '../../src/server/limits';
import { buildReport, parseReport, REPORT_SIZE } from '../../src/snp/report';

const RUNS = { numRuns: 1500, seed: 6006 };

/** Run `fn`; a thrown value must be an SkrError. */
function onlyTyped(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    typedError(e);
  }
}

/** The same for an async decoder. */
async function onlyTypedAsync(fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    typedError(e);
  }
}

function typedError(e: unknown): void {
  if (!(e instanceof SkrError)) throw new Error(`untyped ${(e as Error)?.name}: ${(e as Error)?.message}`);
  expect(typeof e.code).toBe('string');
  expect(e.status).toBeGreaterThanOrEqual(400);
}

/** Flip, insert or delete bytes at random places of a valid input. */
function mutated(base: Uint8Array): fc.Arbitrary<Buffer> {
  return fc
    .array(fc.tuple(fc.nat({ max: base.length }), fc.integer({ min: 0, max: 255 }), fc.constantFrom('flip', 'insert', 'delete')), { minLength: 1, maxLength: 8 })
    .map((edits) => {
      const b = Array.from(base);
      for (const [at, v, op] of edits) {
        const i = Math.min(at, b.length);
        if (op === 'flip' && i < b.length) b[i] ^= v || 1;
        else if (op === 'insert') b.splice(i, 0, v);
        else if (op === 'delete' && b.length) b.splice(Math.min(i, b.length - 1), 1);
      }
      return Buffer.from(b);
    });
}

const mutatedText = (s: string) => mutated(Buffer.from(s, 'utf8')).map((b) => b.toString('latin1'));

describe('report parser', () => {
  const valid = buildReport({ version: 3 });

  it('random bytes of any length: a report or a typed error', () => {
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 2048 }), fc.uint8Array({ minLength: REPORT_SIZE, maxLength: REPORT_SIZE })), (b) => onlyTyped(() => parseReport(b))), RUNS);
  });

  it('mutated valid reports: a report or a typed error', () => {
    fc.assert(fc.property(mutated(valid), (b) => onlyTyped(() => parseReport(b))), RUNS);
  });
});

describe('base64 and JSON depth', () => {
  it('decodeBase64Strict never throws and round-trips what it accepts', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.base64String(), fc.uint8Array().map((b) => Buffer.from(b).toString('base64url'))), (s) => {
        const out = decodeBase64Strict(s);
        if (out) expect(out.toString('base64').replace(/=+$/, '')).toBe(s.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '').trim());
      }),
      RUNS,
    );
  });

  it('jsonDepthExceeds agrees with the real nesting depth of any JSON value', () => {
    const depth = (v: unknown): number => (v !== null && typeof v === 'object' ? 1 + Math.max(0, ...Object.values(v as object).map(depth)) : 0);
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 12 }), fc.integer({ min: 0, max: 12 }), (v, max) => {
        expect(jsonDepthExceeds(JSON.stringify(v), max)).toBe(depth(v) > max);
      }),
      RUNS,
    );
  });
});

describe('release JWS and key_hsm decoders', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-props-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const ca = loadOrCreateLocalCa(dir);
  const signer = createReleaseSigner(ca, { dns: ['v.vault.azure.net'] });
  const keyHsm = encodeKeyHsm({ kid: 'k', enc: 'CKM_RSA_AES_KEY_WRAP', ciphertext: Buffer.alloc(296, 7) });
  const jws = signReleaseJws({ response: { key: { key: { kty: 'oct-HSM', key_hsm: keyHsm } } } }, signer);
  const verify = (s: string) => verifyReleaseJws(s, { vaultHost: 'v.vault.azure.net', extraCaPem: [ca.certPem] });

  it('the valid JWS verifies (the mutations below start from something that works)', async () => {
    expect(await verify(jws)).toHaveProperty('response');
  });

  it('mutated or random JWS: only typed errors', async () => {
    await fc.assert(fc.asyncProperty(fc.oneof(mutatedText(jws), fc.string(), fc.array(fc.base64String(), { maxLength: 4 }).map((p) => p.join('.'))), (s) => onlyTypedAsync(() => verify(s))), { ...RUNS, numRuns: 600 });
  });

  it('mutated or random key_hsm: a decoded key_hsm or a typed error', () => {
    const json = Buffer.from(keyHsm, 'base64url').toString('utf8');
    fc.assert(
      fc.property(
        fc.oneof(mutatedText(keyHsm), fc.string(), mutatedText(json).map((j) => Buffer.from(j, 'latin1').toString('base64url')), fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v)).toString('base64url'))),
        (s) => onlyTyped(() => decodeKeyHsm(s)),
      ),
      RUNS,
    );
  });
});

describe('release policy parser and evaluator, MAA request parser', () => {
  const policy = buildReleasePolicy({ authority: 'https://a.attest.azure.net', anyOfGroups: [[{ claim: 'x-ms-sevsnpvm-hostdata', equals: 'ab' }, { claim: 'x-ms-runtime.keys', equals: '1' }]] });
  const policyText = JSON.stringify(policy);

  it('random or mutated policies: a policy or a typed error', () => {
    fc.assert(fc.property(fc.oneof(mutatedText(policyText), fc.jsonValue(), fc.string()), (p) => onlyTyped(() => parseReleasePolicy(p))), RUNS);
  });

  it('evaluating any claims object never throws', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.oneof(fc.constantFrom('iss', 'x-ms-sevsnpvm-hostdata', 'x-ms-runtime'), fc.string()), fc.jsonValue()), (claims) => {
        const ev = evaluateReleasePolicy(policy, { iss: 'https://a.attest.azure.net', ...claims });
        expect(typeof ev.granted).toBe('boolean');
      }),
      RUNS,
    );
  });

  it('random MAA request bodies: a request or a typed error', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => onlyTyped(() => parseSevSnpVmRequest(v))), RUNS);
  });
});
