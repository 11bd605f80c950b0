/**
 * The kid allowlist cannot be bypassed through /attest/maa: with SKR_ALLOWED_KIDS set, a workload
 * cannot get a token over runtime data holding its own wrapping keys (with which it could release
 * any key straight from the vault) unless the operator opts in with SKR_ATTEST_MAA_KEYS=allow.
 * Real sidecars on loopback, the real MAA emulator behind them.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { startMaaEmulator, type MaaEmulator } from '../../src/emulators/maa';
import { loadServerConfig } from '../../src/server/config';
import { createLogger } from '../../src/server/logger';
import { holdsWrappingKeys, mayHoldWrappingKeys, topLevelMembers } from '../../src/server/runtime-keys';
import { startSidecar, type RunningSidecar } from '../../src/server/sidecar';
import { SimulatedPlatform, TEST_ONLY_UVM_ROOT_SHA256 } from '../../src/snp/simulator';
import { postJson } from '../helpers/sidecar';

const RSA_JWK = { kty: 'RSA', kid: 'mine', key_ops: ['encrypt'], e: 'AQAB', n: 'sXch' };

describe('which runtime data holds wrapping keys', () => {
  const holds = (text: string) => holdsWrappingKeys(Buffer.from(text, 'utf8'));

  it.each([
    ['an RSA JWKS', JSON.stringify({ keys: [RSA_JWK] })],
    ['an EC key', '{"keys":[{"kty":"EC","crv":"P-384"}]}'],
    ['an entry without kty', '{"keys":[{"n":"sXch","e":"AQAB"}]}'],
    ['a key that is not an array', JSON.stringify({ keys: RSA_JWK })],
    ['a string', '{"keys":"x"}'],
    ['another letter case', '{"Keys":[{}]}'],
    ['upper case', '{"KEYS":[1]}'],
    ['an escaped name', '{"k\\u0065ys":[1]}'],
    ['a Kelvin sign', '{"\\u212Aeys":[1]}'],
    ['a NUL-terminated name', '{"keys\\u0000junk":[1]}'],
    ['a repeat JSON.parse would hide', `{"keys":${JSON.stringify([RSA_JWK])},"keys":[]}`],
    ['keys after strings holding braces', '{"a":"{\\"x\\":[","b":{"c":["}"]},"keys":[1]}'],
    ['a BOM and whitespace', `\uFEFF \n{ "purpose" : 1 ,\t"keys" : [ 1 ] }\n`],
    ['keys after a deeply nested member', `{"a":${'['.repeat(100_000)}${']'.repeat(100_000)},"keys":[1]}`],
  ])('refuses %s', (_name, text) => {
    expect(holds(text)).toBe(true);
  });

  it.each([
    ['no keys', '{"purpose":"x"}'],
    ['an empty object', '{}'],
    ['an empty keys array', '{"keys":[]}'],
    ['keys null', '{"keys":null}'],
    ['keys nested deeper', JSON.stringify({ claims: { keys: [RSA_JWK] } })],
    ['keys inside a string', '{"a":"\\"keys\\":[1]"}'],
    ['a similar name', '{"key":[1],"keyset":[1]}'],
    ['a top-level array', JSON.stringify([{ keys: [RSA_JWK] }])],
    ['a top-level string', '"{\\"keys\\":[1]}"'],
  ])('allows %s', (_name, text) => {
    expect(holds(text)).toBe(false);
  });

  it('lists every top-level member, repeats included', () => {
    expect(topLevelMembers('{"a":1,"b":{"c":[2]},"a":"x"}')).toEqual([
      { name: 'a', raw: '1' },
      { name: 'b', raw: '{"c":[2]}' },
      { name: 'a', raw: '"x"' },
    ]);
    expect(topLevelMembers('[1]')).toEqual([]);
  });

  it('fails closed (400) on runtime data that is not JSON', () => {
    expect(() => holds('{"keys":[1]')).toThrow(/runtime_data must be base64 of JSON text/);
    expect(() => holdsWrappingKeys(Buffer.from([0x7b, 0xff, 0x7d]))).toThrow(/base64 of JSON text/);
  });
});

describe('which evidence runtime data may hold wrapping keys (the caller takes it to MAA itself)', () => {
  it.each([
    ['strict JSON with keys', Buffer.from('{"keys":[{"kty":"RSA"}]}')],
    ['a trailing comma', Buffer.from('{"keys":[{"kty":"RSA"}],}')],
    ['a comment and an escaped name', Buffer.from('/* x */ {"K\u0065YS":[1]}')],
    ['invalid UTF-8 inside a string', Buffer.concat([Buffer.from('{"keys":[1],"x":"'), Buffer.from([0xff]), Buffer.from('"}')])],
  ])('refuses %s', (_n, data) => {
    expect(mayHoldWrappingKeys(data)).toBe(true);
  });

  it.each([
    ['plain text', Buffer.from('hello')],
    ['binary', Buffer.from('00ff10fe7b7d', 'hex')],
    ['strict JSON naming keys only in a value', Buffer.from('{"note":"keys"}')],
    ['strict JSON without keys', Buffer.from('{"nonce":"abc"}')],
  ])('allows %s', (_n, data) => {
    expect(mayHoldWrappingKeys(data)).toBe(false);
  });
});

describe('configuration', () => {
  it('SKR_ATTEST_MAA_KEYS wins over SkrSideCarArgs.attest_maa_keys; both default to refuse', () => {
    expect(loadServerConfig({}, {}).attestMaaKeys).toBeUndefined();
    expect(loadServerConfig({ sidecarArgs: '{"attest_maa_keys":"allow"}' }, {}).attestMaaKeys).toBe('allow');
    expect(loadServerConfig({ sidecarArgs: '{"attest_maa_keys":"allow"}' }, { SKR_ATTEST_MAA_KEYS: 'REFUSE' }).attestMaaKeys).toBe('refuse');
  });

  it.each([
    [{ SKR_ATTEST_MAA_KEYS: 'yes' }, /SKR_ATTEST_MAA_KEYS "yes" is not allow or refuse/],
    [{ SkrSideCarArgs: '{"attest_maa_keys":"on"}' }, /SkrSideCarArgs.attest_maa_keys "on" is not allow or refuse/],
    [{ SkrSideCarArgs: '{"attest_maa_keys":true}' }, /SkrSideCarArgs.attest_maa_keys must be "allow" or "refuse"/],
  ])('refuses %j', (env, msg) => {
    expect(() => loadServerConfig({}, env)).toThrow(msg);
  });
});

describe('POST /attest/maa with a kid allowlist', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-maa-keys-'));
  const ca = loadOrCreateLocalCa(dir);
  const platform = new SimulatedPlatform();
  let maa: MaaEmulator;
  let guarded: RunningSidecar;
  let optedIn: RunningSidecar;
  let noKidList: RunningSidecar;

  async function sidecar(name: string, env: NodeJS.ProcessEnv): Promise<RunningSidecar> {
    const base = loadServerConfig({ port: '0', simulate: true }, env);
    const config = { ...base, extraCaPem: [ca.certPem], allowedMaa: [...base.allowedMaa, maa.endpoint] };
    return startSidecar({ config, platform, logger: createLogger({ silent: true }), securityContextDir: path.join(dir, name) });
  }

  beforeAll(async () => {
    maa = await startMaaEmulator({ ca, trustedArkPem: [platform.arkPem], trustedUvmRootFingerprints: [TEST_ONLY_UVM_ROOT_SHA256] });
    guarded = await sidecar('guarded', { SKR_ALLOWED_KIDS: 'only-this' });
    optedIn = await sidecar('opted-in', { SKR_ALLOWED_KIDS: 'only-this', SKR_ATTEST_MAA_KEYS: 'allow' });
    noKidList = await sidecar('no-kid-list', {});
  });
  afterAll(async () => {
    for (const s of [guarded, optedIn, noKidList]) await s.close();
    await maa.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const attest = (s: RunningSidecar, runtime: string) =>
    postJson(`${s.url}/attest/maa`, { maa_endpoint: maa.endpoint, runtime_data: Buffer.from(runtime, 'utf8').toString('base64') });

  it('refuses runtime data holding a wrapping JWKS with 403 naming the settings; nothing reaches MAA', async () => {
    const issued = maa.issuedTokens.length;
    for (const runtime of [JSON.stringify({ keys: [RSA_JWK] }), `{"KEYS":[{"kty":"RSA"}]}`, `{"keys":[{"kty":"RSA"}],"keys":[]}`]) {
      const res = await attest(guarded, runtime);
      expect(res.status).toBe(403);
      expect(res.json.error).toMatch(/runtime_data has a top-level "keys" member \(keys a vault could wrap a released key to\): with a kid allowlist set \(SKR_ALLOWED_KIDS or SkrSideCarArgs\.allowlist\.kid\) it is refused, since an MAA token over it would release keys outside the allowlist/);
      expect(res.json.error).toMatch(/set SKR_ATTEST_MAA_KEYS=allow \(or SkrSideCarArgs\.attest_maa_keys: "allow"\) to permit it/);
    }
    expect(maa.issuedTokens.length).toBe(issued);
    const metrics = await (await fetch(`${guarded.url}/metrics`)).text();
    expect(metrics).toMatch(/^skr_refused_requests_total\{reason="runtime_keys"\} 3$/m);
  });

  it('still mints tokens over runtime data without keys', async () => {
    for (const runtime of ['{"purpose":"x"}', '{"keys":[]}', JSON.stringify({ claims: { keys: [RSA_JWK] } })]) {
      const res = await attest(guarded, runtime);
      expect(res.status).toBe(200);
      expect(String(res.json.token).split('.')).toHaveLength(3);
    }
  });

  it('malformed runtime data is refused with 400 before anything is sent', async () => {
    const issued = maa.issuedTokens.length;
    const res = await attest(guarded, '{"keys":[{"kty":"RSA"}]');
    expect(res.status).toBe(400);
    expect(res.json.error).toMatch(/runtime_data must be base64 of JSON text/);
    expect(maa.issuedTokens.length).toBe(issued);
  });

  it('/attest/raw and /attest/combined refuse such runtime data too: their evidence could be taken to MAA directly', async () => {
    const keys = Buffer.from(JSON.stringify({ keys: [RSA_JWK] })).toString('base64');
    for (const route of ['/attest/raw', '/attest/combined']) {
      const refused = await postJson(`${guarded.url}${route}`, { runtime_data: keys });
      expect([route, refused.status]).toEqual([route, 403]);
      expect(refused.json.error).toMatch(/evidence over it, taken to MAA, would release keys outside the allowlist; set SKR_ATTEST_MAA_KEYS=allow/);
      const plain = await postJson(`${guarded.url}${route}`, { runtime_data: Buffer.from('{"nonce":"1"}').toString('base64') });
      expect([route, plain.status]).toEqual([route, 200]);
      const opted = await postJson(`${optedIn.url}${route}`, { runtime_data: keys });
      expect([route, opted.status]).toEqual([route, 200]);
    }
  });

  it('with SKR_ATTEST_MAA_KEYS=allow, or without a kid allowlist, the token carries the keys', async () => {
    for (const s of [optedIn, noKidList]) {
      const res = await attest(s, JSON.stringify({ keys: [RSA_JWK] }));
      expect(res.status).toBe(200);
      const payload = JSON.parse(Buffer.from(String(res.json.token).split('.')[1], 'base64url').toString('utf8')) as Record<string, unknown>;
      expect(payload['x-ms-runtime']).toEqual({ keys: [RSA_JWK] });
    }
  });
});
