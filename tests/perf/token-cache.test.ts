/** MAA token reuse: per endpoint, until exp − margin, single flight, failures and refusals not kept. */
import { ConfigError, InvalidInputError } from '../../src/common/errors';
import { MaaTokenCache, tokenExpiry } from '../../src/maa/token-cache';

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = (claims: object) => `${b64({ alg: 'RS256' })}.${b64(claims)}.c2ln`;

describe('MaaTokenCache', () => {
  let now = 1_000_000_000_000;
  const clock = () => now;
  /** A mint that counts calls and returns a token expiring `ttlS` seconds from now, bound to a fresh object. */
  function minter(ttlS = 600) {
    let n = 0;
    const mint = async () => {
      n++;
      return { token: jwt({ exp: Math.floor(now / 1000) + ttlS, n }), binding: { key: n } };
    };
    return { mint, calls: () => n };
  }

  it('reuses a token with its binding until exp − margin, then mints again', async () => {
    const cache = new MaaTokenCache<{ key: number }>({ marginMs: 300_000, now: clock });
    const m = minter(600);
    const first = await cache.get('maa.example', m.mint);
    expect(first.source).toBe('minted');
    now += 299_000;
    const again = await cache.get('maa.example', m.mint);
    expect(again.source).toBe('cached');
    expect(again.token).toBe(first.token);
    expect(again.binding).toBe(first.binding);
    now += 2_000; // 301 s after minting: inside the 5 min margin before exp
    const fresh = await cache.get('maa.example', m.mint);
    expect(fresh.source).toBe('minted');
    expect(fresh.binding).not.toBe(first.binding);
    expect(m.calls()).toBe(2);
  });

  it('keys by MAA origin: another endpoint (or port) never gets this token; host case does not matter', async () => {
    const cache = new MaaTokenCache<{ key: number }>({ now: clock });
    const m = minter(3600);
    const a = await cache.get('maa-a.example', m.mint);
    const b = await cache.get('maa-b.example', m.mint);
    const c = await cache.get('maa-a.example:8443', m.mint);
    expect(new Set([a.token, b.token, c.token]).size).toBe(3);
    expect((await cache.get('MAA-A.example', m.mint)).token).toBe(a.token);
    expect((await cache.get('https://maa-a.example', m.mint)).token).toBe(a.token);
    expect(m.calls()).toBe(3);
    expect(cache.size).toBe(3);
  });

  it('makes one MAA call for concurrent misses', async () => {
    const cache = new MaaTokenCache<{ key: number }>({ now: clock });
    const m = minter(3600);
    const got = await Promise.all(Array.from({ length: 20 }, () => cache.get('maa.example', m.mint)));
    expect(m.calls()).toBe(1);
    expect(new Set(got.map((g) => g.token)).size).toBe(1);
    expect(got.filter((g) => g.source === 'minted')).toHaveLength(1);
    expect(got.filter((g) => g.source === 'joined')).toHaveLength(19);
  });

  it('does not keep failures: every waiter sees the error, the next call tries again', async () => {
    const cache = new MaaTokenCache<{ key: number }>({ now: clock });
    let calls = 0;
    const failing = async () => {
      calls++;
      throw new Error('MAA down');
    };
    const results = await Promise.allSettled([cache.get('maa.example', failing), cache.get('maa.example', failing)]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(calls).toBe(1);
    const m = minter();
    expect((await cache.get('maa.example', m.mint)).source).toBe('minted');
  });

  it('uses a token already inside the margin once, without storing it', async () => {
    const cache = new MaaTokenCache<{ key: number }>({ marginMs: 300_000, now: clock });
    const m = minter(120);
    await cache.get('maa.example', m.mint);
    await cache.get('maa.example', m.mint);
    expect(m.calls()).toBe(2);
    expect(cache.size).toBe(0);
  });

  it('does not store a token without exp', async () => {
    const cache = new MaaTokenCache<number>({ now: clock });
    let n = 0;
    const mint = async () => ({ token: jwt({ n: ++n }), binding: n });
    await cache.get('maa.example', mint);
    await cache.get('maa.example', mint);
    expect(n).toBe(2);
  });

  it('caps reuse at maxLifetimeMs whatever exp says', async () => {
    const cache = new MaaTokenCache<{ key: number }>({ maxLifetimeMs: 60_000, now: clock });
    const m = minter(30 * 24 * 3600);
    await cache.get('maa.example', m.mint);
    now += 61_000;
    await cache.get('maa.example', m.mint);
    expect(m.calls()).toBe(2);
  });

  it('when disabled, calls MAA every time', async () => {
    const cache = new MaaTokenCache<{ key: number }>({ enabled: false, now: clock });
    const m = minter(3600);
    const a = await cache.get('maa.example', m.mint);
    const b = await cache.get('maa.example', m.mint);
    expect(m.calls()).toBe(2);
    expect(a.binding).not.toBe(b.binding);
    expect(cache.size).toBe(0);
  });

  it('invalidate drops exactly the named token', async () => {
    const cache = new MaaTokenCache<{ key: number }>({ now: clock });
    const m = minter(3600);
    const a = await cache.get('maa.example', m.mint);
    cache.invalidate('maa.example', 'some.other.token');
    expect((await cache.get('maa.example', m.mint)).source).toBe('cached');
    cache.invalidate('maa.example', a.token);
    expect((await cache.get('maa.example', m.mint)).source).toBe('minted');
  });

  it('refuses a bad endpoint before minting, and bad settings at construction', async () => {
    const cache = new MaaTokenCache<{ key: number }>({ now: clock });
    const m = minter();
    await expect(cache.get('http://maa.example', m.mint)).rejects.toThrow(InvalidInputError);
    expect(m.calls()).toBe(0);
    expect(() => new MaaTokenCache({ marginMs: -1 })).toThrow(ConfigError);
    expect(() => new MaaTokenCache({ maxEntries: 0 })).toThrow(ConfigError);
  });

  it('tokenExpiry reads exp, and nothing from garbage', () => {
    expect(tokenExpiry(jwt({ exp: 123 }))).toBe(123);
    expect(tokenExpiry(jwt({ exp: '123' }))).toBeUndefined();
    expect(tokenExpiry('not-a-jwt')).toBeUndefined();
    expect(tokenExpiry('a.!!!.c')).toBeUndefined();
  });

  it('bounds shared mints: a timeout signal on each, and no more shared mints than remembered endpoints', async () => {
    const cache = new MaaTokenCache<{ key: number }>({ now: clock, maxEntries: 2, sharedMintTimeoutMs: 50 });
    const signals: (AbortSignal | undefined)[] = [];
    const pending: (() => void)[] = [];
    const slowMint = (s?: AbortSignal) =>
      new Promise<{ token: string; binding: { key: number } }>((resolve, reject) => {
        signals.push(s);
        s?.addEventListener('abort', () => reject(s.reason), { once: true });
        pending.push(() => resolve({ token: jwt({ exp: Math.floor(now / 1000) + 600 }), binding: { key: 1 } }));
      });
    const a = cache.get('a.attest.azure.net', slowMint);
    const b = cache.get('b.attest.azure.net', slowMint);
    // Two shared mints are running: a third endpoint mints under its caller's own signal.
    const own = new AbortController();
    const c = cache.get('c.attest.azure.net', slowMint, own.signal);
    expect(signals[2]).toBe(own.signal);
    own.abort(new Error('caller gave up'));
    await expect(c).rejects.toThrow('caller gave up');
    // The shared ones time out by themselves even though no caller aborts.
    await expect(a).rejects.toMatchObject({ name: 'TimeoutError' });
    await expect(b).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(signals[0]?.aborted).toBe(true);
  });
});
