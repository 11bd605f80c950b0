import fc from 'fast-check';
import {
  buildReleasePolicy, decodeReleasePolicy, encodeReleasePolicy, evaluateReleasePolicy, failedConditions, lookupClaim,
  parseReleasePolicy, type ClaimOperator, type PolicyValue, type ReleasePolicy,
} from '../../src/akv/policy';
import { InvalidInputError } from '../../src/common/errors';
import { containerClaims, HOSTDATA, SHARED_MAA } from '../helpers/maa-claims';

const MAA = SHARED_MAA;

/** One-condition policy under MAA. */
function single(claim: string, op: ClaimOperator, value: PolicyValue): ReleasePolicy {
  return parseReleasePolicy({ version: '1.0.0', anyOf: [{ authority: MAA, allOf: [{ claim, [op]: value }] }] });
}

const grant = (p: ReleasePolicy, claims: Record<string, unknown>) => evaluateReleasePolicy(p, claims).granted;

function policyErrorAt(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(InvalidInputError);
    return e as InvalidInputError;
  }
  throw new Error('expected ERR_RELEASE_POLICY');
}

describe('release policy: the reference example shape', () => {
  // Same shape as the reference's importkeyconfig.json claims turned into a policy by its importkey tool.
  const policy = buildReleasePolicy({
    authority: 'sharedeus2.eus2.attest.azure.net',
    anyOfGroups: [[
      { claim: 'x-ms-sevsnpvm-hostdata', equals: HOSTDATA },
      { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' },
      { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' },
      { claim: 'x-ms-sevsnpvm-vmpl', equals: '0' },
    ]],
  });

  it('builds version 1.0.0 with one allOf authority per group and https:// authority', () => {
    expect(policy).toEqual({
      version: '1.0.0',
      anyOf: [{
        authority: MAA,
        allOf: [
          { claim: 'x-ms-sevsnpvm-hostdata', equals: HOSTDATA },
          { claim: 'x-ms-compliance-status', equals: 'azure-compliant-uvm' },
          { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' },
          { claim: 'x-ms-sevsnpvm-vmpl', equals: '0' },
        ],
      }],
    });
  });

  it('grants a real-shaped token (string policy values vs boolean/number claims)', () => {
    const ev = evaluateReleasePolicy(policy, containerClaims());
    expect(ev.granted).toBe(true);
    expect(ev.tokenIssuer).toBe(MAA);
    expect(ev.authorities[0]).toMatchObject({ issuerMatches: true, granted: true });
    expect(ev.authorities[0].conditions.map((c) => [c.claim, c.pass, c.group])).toEqual([
      ['x-ms-sevsnpvm-hostdata', true, 'allOf'],
      ['x-ms-compliance-status', true, 'allOf'],
      ['x-ms-sevsnpvm-is-debuggable', true, 'allOf'],
      ['x-ms-sevsnpvm-vmpl', true, 'allOf'],
    ]);
    expect(failedConditions(ev)).toEqual([]);
  });

  it('denies a debuggable guest, a non-zero VMPL or other hostdata, naming the failed condition', () => {
    for (const [over, claim] of [
      [{ 'x-ms-sevsnpvm-is-debuggable': true }, 'x-ms-sevsnpvm-is-debuggable'],
      [{ 'x-ms-sevsnpvm-vmpl': 1 }, 'x-ms-sevsnpvm-vmpl'],
      [{ 'x-ms-sevsnpvm-hostdata': '00'.repeat(32) }, 'x-ms-sevsnpvm-hostdata'],
    ] as const) {
      const ev = evaluateReleasePolicy(policy, containerClaims(over));
      expect(ev.granted).toBe(false);
      const failed = failedConditions(ev);
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ claim, present: true, pass: false, operator: 'equals' });
      expect(failed[0].actual).toEqual(over[claim as keyof typeof over]);
    }
  });

  it('round-trips through encode/decode as base64url JSON with the JSON content type', () => {
    const enc = encodeReleasePolicy(policy);
    expect(enc.contentType).toBe('application/json; charset=utf-8');
    expect(enc.data).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(JSON.parse(Buffer.from(enc.data, 'base64url').toString('utf8'))).toEqual(policy);
    expect(decodeReleasePolicy(enc)).toEqual(policy);
  });
});

describe('release policy: operators', () => {
  const cases: [ClaimOperator, PolicyValue, unknown, boolean][] = [
    // equals / notEquals, same types
    ['equals', 'sevsnpvm', 'sevsnpvm', true],
    ['equals', 'sevsnpvm', 'SevSnpVm', false],
    ['equals', 3, 3, true],
    ['equals', 3, 4, false],
    ['equals', true, true, true],
    ['equals', false, true, false],
    ['notEquals', 'a', 'b', true],
    ['notEquals', 'a', 'a', false],
    ['notEquals', 1, 2, true],
    ['notEquals', false, false, false],
    // canonical string forms
    ['equals', 'false', false, true],
    ['equals', 'true', false, false],
    ['equals', 'False', false, false],
    ['equals', '0', 0, true],
    ['equals', '0', 1, false],
    ['equals', '1.5', 1.5, true],
    ['equals', 0, '0', true],
    ['equals', false, 'false', true],
    ['equals', '00', 0, false],
    ['notEquals', 'false', false, false],
    ['notEquals', '0', 1, true],
    // booleans never equal numbers
    ['equals', true, 1, false],
    ['notEquals', true, 1, true],
    // ordering with numbers and numeric strings
    ['less', 5, 4, true],
    ['less', 5, 5, false],
    ['lessOrEquals', 5, 5, true],
    ['lessOrEquals', '5', 6, false],
    ['greater', '2', 3, true],
    ['greater', 2, '3', true],
    ['greater', 3, 3, false],
    ['greaterOrEquals', 3, 3, true],
    ['greaterOrEquals', '3', '2', false],
    ['greaterOrEquals', '1.5', 2, true],
    ['greaterOrEquals', '9007199254740993', '9007199254740992', false],
    ['greater', '9007199254740992', '9007199254740993', true],
    // ordering on non-numeric or boolean claims fails
    ['greater', 1, 'abc', false],
    ['greaterOrEquals', 0, true, false],
    // non-scalar claims are incomparable
    ['equals', '[object Object]', { a: 1 }, false],
    ['notEquals', 'x', { a: 1 }, false],
    ['notEquals', 'x', null, false],
    ['equals', 'null', null, false],
  ];
  it.each(cases)('%s %j against claim %j → %s', (op, value, actual, expected) => {
    const p = single('c', op, value);
    expect(grant(p, { iss: MAA, c: actual })).toBe(expected);
  });

  it('a missing claim never matches, except under exists:false', () => {
    for (const op of ['equals', 'notEquals', 'less', 'lessOrEquals', 'greater', 'greaterOrEquals'] as ClaimOperator[]) {
      const ev = evaluateReleasePolicy(single('absent', op, op === 'equals' || op === 'notEquals' ? 'x' : 1), { iss: MAA });
      expect(ev.granted).toBe(false);
      expect(ev.authorities[0].conditions[0]).toMatchObject({ present: false, pass: false, actual: undefined });
    }
    expect(grant(single('absent', 'exists', false), { iss: MAA })).toBe(true);
    expect(grant(single('absent', 'exists', true), { iss: MAA })).toBe(false);
  });

  it('exists true/false (booleans or "true"/"false" strings) on present claims, including null and objects', () => {
    for (const v of [0, false, null, '', { a: 1 }]) {
      expect(grant(single('c', 'exists', true), { iss: MAA, c: v })).toBe(true);
      expect(grant(single('c', 'exists', 'true'), { iss: MAA, c: v })).toBe(true);
      expect(grant(single('c', 'exists', false), { iss: MAA, c: v })).toBe(false);
      expect(grant(single('c', 'exists', 'FALSE'), { iss: MAA, c: v })).toBe(false);
    }
  });
});

describe('release policy: claim paths', () => {
  it('descends into nested objects for dotted names (confidential-VM tokens)', () => {
    const cvm = {
      iss: MAA, 'x-ms-attestation-type': 'azurevm',
      'x-ms-isolation-tee': { 'x-ms-attestation-type': 'sevsnpvm', 'x-ms-compliance-status': 'azure-compliant-cvm' },
    };
    const p = parseReleasePolicy({
      version: '1.0.0',
      anyOf: [{ authority: MAA, allOf: [
        { claim: 'x-ms-isolation-tee.x-ms-attestation-type', equals: 'sevsnpvm' },
        { claim: 'x-ms-isolation-tee.x-ms-compliance-status', equals: 'azure-compliant-cvm' },
      ] }],
    });
    expect(grant(p, cvm)).toBe(true);
    expect(grant(p, containerClaims())).toBe(false);
    expect(grant(single('x-ms-sevsnpvm-uvm-endorsement.x-ms-sevsnpvm-guestsvn', 'greaterOrEquals', 100), containerClaims())).toBe(true);
  });

  it('prefers the literal top-level key, and resolves keys that themselves contain dots', () => {
    const claims = { 'a.b': 'literal', a: { b: 'nested', 'c.d': { e: 'deep' } } };
    expect(lookupClaim(claims, 'a.b')).toEqual({ present: true, value: 'literal' });
    expect(lookupClaim(claims, 'a.c.d.e')).toEqual({ present: true, value: 'deep' });
    expect(lookupClaim({ a: { b: 'nested' } }, 'a.b')).toEqual({ present: true, value: 'nested' });
    // backtracks when the longer literal prefix leads nowhere
    expect(lookupClaim({ 'a.b': 1, a: { b: { c: 2 } } }, 'a.b.c')).toEqual({ present: true, value: 2 });
  });

  it('does not index arrays, and never reads inherited properties', () => {
    expect(lookupClaim({ a: ['x'] }, 'a.0').present).toBe(false);
    expect(lookupClaim({}, 'constructor').present).toBe(false);
    expect(lookupClaim({}, '__proto__').present).toBe(false);
    expect(lookupClaim({ a: 'str' }, 'a.length').present).toBe(false);
    expect(grant(single('toString', 'exists', true), { iss: MAA })).toBe(false);
  });
});

describe('release policy: nesting and authorities', () => {
  const nested = parseReleasePolicy({
    version: '1.0.0',
    anyOf: [{
      authority: MAA,
      allOf: [
        { claim: 'x-ms-attestation-type', equals: 'sevsnpvm' },
        { anyOf: [
          { claim: 'x-ms-sevsnpvm-hostdata', equals: 'aa'.repeat(32) },
          { allOf: [
            { claim: 'x-ms-sevsnpvm-hostdata', equals: HOSTDATA },
            { claim: 'x-ms-sevsnpvm-guestsvn', greaterOrEquals: '2' },
          ] },
        ] },
      ],
    }],
  });

  it('evaluates nested allOf/anyOf and reports leaf paths with their immediate group', () => {
    const ev = evaluateReleasePolicy(nested, containerClaims());
    expect(ev.granted).toBe(true);
    expect(ev.authorities[0].conditions.map((c) => [c.path, c.group, c.pass])).toEqual([
      ['anyOf[0].allOf[0]', 'allOf', true],
      ['anyOf[0].allOf[1].anyOf[0]', 'anyOf', false],
      ['anyOf[0].allOf[1].anyOf[1].allOf[0]', 'allOf', true],
      ['anyOf[0].allOf[1].anyOf[1].allOf[1]', 'allOf', true],
    ]);
    expect(grant(nested, containerClaims({ 'x-ms-sevsnpvm-guestsvn': 1 }))).toBe(false);
    expect(grant(nested, containerClaims({ 'x-ms-sevsnpvm-guestsvn': 1, 'x-ms-sevsnpvm-hostdata': 'aa'.repeat(32) }))).toBe(true);
  });

  it('an authority-level anyOf needs one passing condition', () => {
    const p = parseReleasePolicy({ version: '1.0.0', anyOf: [{ authority: MAA, anyOf: [
      { claim: 'x-ms-sevsnpvm-vmpl', equals: 3 }, { claim: 'x-ms-sevsnpvm-is-debuggable', equals: 'false' },
    ] }] });
    expect(grant(p, containerClaims())).toBe(true);
    expect(grant(p, containerClaims({ 'x-ms-sevsnpvm-is-debuggable': true }))).toBe(false);
  });

  it('accepts version 0.2 (older Managed HSM keys) with the same semantics', () => {
    const p = parseReleasePolicy({ version: '0.2', anyOf: [{ authority: MAA, allOf: [{ claim: 'x-ms-sevsnpvm-vmpl', equals: '0' }] }] });
    expect(p.version).toBe('0.2');
    expect(grant(p, containerClaims())).toBe(true);
  });

  it('matches the issuer ignoring trailing slashes and scheme/host case, but nothing else', () => {
    const withSlash = parseReleasePolicy({ version: '1.0.0', anyOf: [{ authority: `${MAA}/`, allOf: [{ claim: 'x-ms-sevsnpvm-vmpl', equals: '0' }] }] });
    expect(grant(withSlash, containerClaims())).toBe(true);
    expect(grant(withSlash, containerClaims({ iss: `${MAA}/` }))).toBe(true);
    expect(grant(withSlash, containerClaims({ iss: 'HTTPS://SharedEus2.eus2.attest.azure.net' }))).toBe(true);
    for (const iss of ['https://shareduks.uks.attest.azure.net', `${MAA}:8443`, `${MAA}/x`, 'http://sharedeus2.eus2.attest.azure.net', 42]) {
      const ev = evaluateReleasePolicy(withSlash, containerClaims({ iss }));
      expect(ev.granted).toBe(false);
      expect(ev.authorities[0]).toMatchObject({ issuerMatches: false, granted: false });
      expect(ev.authorities[0].tree.pass).toBe(true);
    }
    const noIss = containerClaims();
    delete noIss.iss;
    expect(evaluateReleasePolicy(withSlash, noIss)).toMatchObject({ granted: false });
    expect(evaluateReleasePolicy(withSlash, noIss).tokenIssuer).toBeUndefined();
  });

  it('with several authorities only the token issuer\'s entry can grant', () => {
    const other = 'https://shareduks.uks.attest.azure.net';
    const p = parseReleasePolicy({
      version: '1.0.0',
      anyOf: [
        { authority: other, allOf: [{ claim: 'x-ms-sevsnpvm-vmpl', equals: '0' }] },
        { authority: MAA, allOf: [{ claim: 'x-ms-sevsnpvm-vmpl', equals: '3' }] },
      ],
    });
    const ev = evaluateReleasePolicy(p, containerClaims());
    expect(ev.granted).toBe(false);
    expect(ev.authorities.map((a) => [a.issuerMatches, a.granted, a.tree.pass])).toEqual([[false, false, true], [true, false, false]]);
    // failedConditions looks at the issuer's entry only
    expect(failedConditions(ev).map((c) => c.path)).toEqual(['anyOf[1].allOf[0]']);
    expect(grant(p, containerClaims({ iss: other }))).toBe(true);
    expect(grant(p, containerClaims({ 'x-ms-sevsnpvm-vmpl': 3 }))).toBe(true);
  });
});

describe('release policy: parsing', () => {
  const ok = { version: '1.0.0', anyOf: [{ authority: MAA, allOf: [{ claim: 'x-ms-sevsnpvm-vmpl', equals: '0' }] }] };
  const withCond = (cond: unknown) => ({ version: '1.0.0', anyOf: [{ authority: MAA, allOf: [{ claim: 'a', equals: 'b' }, { anyOf: [cond] }] }] });

  it('accepts JSON text, bytes and objects, normalising key case to camelCase', () => {
    expect(parseReleasePolicy(JSON.stringify(ok))).toEqual(ok);
    expect(parseReleasePolicy(Buffer.from(JSON.stringify(ok)))).toEqual(ok);
    const lower = { Version: '1.0.0', anyof: [{ Authority: MAA, allof: [{ Claim: 'x-ms-sevsnpvm-vmpl', EQUALS: '0' }] }] };
    expect(parseReleasePolicy(lower)).toEqual(ok);
  });

  it.each([
    ['not JSON', '{', /not valid JSON/],
    ['not an object', '[]', /\(root\): must be a JSON object/],
    ['unknown version', { ...ok, version: '2.0' }, /release policy version: must be one of "1.0.0", "0.2"/],
    ['missing version', { anyOf: ok.anyOf }, /release policy version:/],
    ['empty anyOf', { version: '1.0.0', anyOf: [] }, /release policy anyOf: must hold at least one authority/],
    ['top-level allOf', { version: '1.0.0', allOf: [] }, /release policy allOf: the top level is an anyOf/],
    ['unknown top-level key', { ...ok, extra: 1 }, /release policy extra: unknown key/],
    ['authority not a string', { version: '1.0.0', anyOf: [{ authority: 1, allOf: [] }] }, /anyOf\[0\]\.authority: must be a non-empty https URL/],
    ['authority over http', { version: '1.0.0', anyOf: [{ authority: 'http://x', allOf: ok.anyOf[0].allOf }] }, /anyOf\[0\]\.authority: "http:\/\/x" is not an https URL/],
    ['authority without conditions', { version: '1.0.0', anyOf: [{ authority: MAA }] }, /anyOf\[0\]: an authority needs "allOf" or "anyOf"/],
    ['authority with both', { version: '1.0.0', anyOf: [{ authority: MAA, allOf: ok.anyOf[0].allOf, anyOf: ok.anyOf[0].allOf }] }, /anyOf\[0\]: .*not both/],
    ['empty condition list', { version: '1.0.0', anyOf: [{ authority: MAA, allOf: [] }] }, /anyOf\[0\]\.allOf: must hold at least one condition/],
    ['conditions not an array', { version: '1.0.0', anyOf: [{ authority: MAA, allOf: {} }] }, /anyOf\[0\]\.allOf: must be an array/],
    ['unknown operator', withCond({ claim: 'x', matches: 'y' }), /anyOf\[0\]\.allOf\[1\]\.anyOf\[0\]\.matches: unknown key "matches"/],
    ['no operator', withCond({ claim: 'x' }), /anyOf\[0\]\.allOf\[1\]\.anyOf\[0\]: claim "x" has no operator/],
    ['two operators', withCond({ claim: 'x', equals: 'a', notEquals: 'b' }), /anyOf\[0\]\.allOf\[1\]\.anyOf\[0\]: claim "x" has 2 operators/],
    ['object value', withCond({ claim: 'x', equals: { a: 1 } }), /anyOf\[0\]\.allOf\[1\]\.anyOf\[0\]\.equals: value must be a string, number or boolean/],
    ['null value', withCond({ claim: 'x', equals: null }), /anyOf\[0\]\.allOf\[1\]\.anyOf\[0\]\.equals: value must be/],
    ['non-numeric ordering', withCond({ claim: 'x', greater: 'abc' }), /anyOf\[0\]\.allOf\[1\]\.anyOf\[0\]\.greater: ordering operators need a number/],
    ['boolean ordering', withCond({ claim: 'x', less: true }), /\.less: ordering operators need a number/],
    ['bad exists', withCond({ claim: 'x', exists: 'yes' }), /anyOf\[0\]\.allOf\[1\]\.anyOf\[0\]\.exists: must be true or false/],
    ['empty claim', withCond({ claim: '', equals: 'a' }), /anyOf\[0\]\.allOf\[1\]\.anyOf\[0\]\.claim: must be a non-empty string/],
    ['claim with empty segment', withCond({ claim: 'a..b', equals: 'a' }), /\.claim: "a\.\.b" has an empty dotted segment/],
    ['group with extra key', withCond({ allOf: [{ claim: 'a', equals: 'b' }], claim: 'c' }), /anyOf\[0\]\.allOf\[1\]\.anyOf\[0\]: a group condition holds exactly one/],
    ['condition not an object', withCond('x'), /anyOf\[0\]\.allOf\[1\]\.anyOf\[0\]: a condition must be an object/],
    ['duplicate keys by case', withCond({ claim: 'x', equals: 'a', Equals: 'b' }), /\.Equals: duplicate key "equals"/],
  ])('refuses %s with ERR_RELEASE_POLICY naming the path', (_name, input, message) => {
    const e = policyErrorAt(() => parseReleasePolicy(input));
    expect(e.code).toBe('ERR_RELEASE_POLICY');
    expect(e.message).toMatch(message);
  });

  it('refuses absurd nesting depth', () => {
    let cond: unknown = { claim: 'a', equals: 'b' };
    for (let i = 0; i < 40; i++) cond = { allOf: [cond] };
    const e = policyErrorAt(() => parseReleasePolicy({ version: '1.0.0', anyOf: [{ authority: MAA, allOf: [cond] }] }));
    expect(e.message).toMatch(/nested deeper than/);
  });

  it('decodeReleasePolicy refuses bad base64url, non-JSON content types and invalid policies', () => {
    expect(policyErrorAt(() => decodeReleasePolicy({ data: 'not base64!' })).message).toMatch(/not base64url/);
    expect(policyErrorAt(() => decodeReleasePolicy({ data: Buffer.from(JSON.stringify(ok)).toString('base64url'), contentType: 'text/plain' }))
      .message).toMatch(/not application\/json/);
    expect(policyErrorAt(() => decodeReleasePolicy({ data: Buffer.from('{"version":"9"}').toString('base64url') })).message)
      .toMatch(/version/);
  });

  it('buildReleasePolicy keeps an explicit https authority, emits one authority entry per group, and refuses empty groups', () => {
    const p = buildReleasePolicy({ authority: `${MAA}/`, anyOfGroups: [[{ claim: 'a', equals: '1' }], [{ claim: 'b', equals: '2' }]] });
    expect(p.anyOf).toEqual([
      { authority: `${MAA}/`, allOf: [{ claim: 'a', equals: '1' }] },
      { authority: `${MAA}/`, allOf: [{ claim: 'b', equals: '2' }] },
    ]);
    expect(grant(p, { iss: MAA, b: 2 })).toBe(true);
    expect(policyErrorAt(() => buildReleasePolicy({ authority: MAA, anyOfGroups: [] })).message).toMatch(/at least one authority/);
    expect(policyErrorAt(() => buildReleasePolicy({ authority: MAA, anyOfGroups: [[]] })).message).toMatch(/anyOf\[0\]\.allOf: must hold/);
  });
});

describe('release policy: properties', () => {
  const policy = parseReleasePolicy({
    version: '1.0.0',
    anyOf: [
      { authority: MAA, allOf: [
        { claim: 'x-ms-sevsnpvm-vmpl', lessOrEquals: '0' },
        { claim: 'a.b.c', notEquals: 'x' },
        { anyOf: [{ claim: 'iss', exists: true }, { claim: 'n', greater: 5 }, { claim: 'b', equals: false }] },
      ] },
      { authority: 'https://other.example', anyOf: [{ claim: 'z', exists: false }] },
    ],
  });

  it('evaluation never throws on arbitrary claims and grants only via the issuer\'s authority', () => {
    fc.assert(fc.property(
      fc.dictionary(fc.oneof(fc.constantFrom('iss', 'a', 'b', 'n', 'z', 'x-ms-sevsnpvm-vmpl', 'a.b', '__proto__'), fc.string()), fc.jsonValue()),
      (claims) => {
        const ev = evaluateReleasePolicy(policy, claims as Record<string, unknown>);
        expect(ev.authorities).toHaveLength(2);
        if (ev.granted) expect(ev.authorities.some((a) => a.issuerMatches && a.tree.pass)).toBe(true);
        if (typeof claims.iss !== 'string') expect(ev.granted).toBe(false);
      },
    ));
  });

  it('evaluation never throws for non-object claims values', () => {
    for (const v of [null, undefined, 1, 'x', [], [1]]) {
      expect(evaluateReleasePolicy(policy, v as unknown as Record<string, unknown>).granted).toBe(false);
    }
  });

  it('encode/decode round-trips any valid built policy', () => {
    const cond = fc.record({ claim: fc.stringMatching(/^[a-z][a-z0-9-]{0,15}(\.[a-z0-9-]{1,8}){0,2}$/), equals: fc.string({ maxLength: 20 }) });
    fc.assert(fc.property(fc.array(fc.array(cond, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 3 }), (groups) => {
      const p = buildReleasePolicy({ authority: 'maa.example:8443', anyOfGroups: groups });
      expect(decodeReleasePolicy(encodeReleasePolicy(p))).toEqual(p);
    }));
  });
});
