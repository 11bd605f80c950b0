/** The wrapping-key pool: fills in the background, hands every key out once, refills, survives failures. */
import { ConfigError } from '../../src/common/errors';
import { rsaJwkThumbprint, type WrappingKey } from '../../src/akv/wrapping-key';
import { WrappingKeyPool } from '../../src/akv/wrapping-key-pool';

/** A generator of distinct stand-in keys (the pool never looks inside a key). */
function counter(opts: { failAt?: number[] } = {}) {
  let n = 0;
  const generate = async (): Promise<WrappingKey> => {
    n++;
    if (opts.failAt?.includes(n)) throw new Error(`generation ${n} failed`);
    return { kid: `k${n}` } as unknown as WrappingKey;
  };
  return { generate, calls: () => n };
}

describe('WrappingKeyPool', () => {
  it('fills to its size in the background, and refills after each take', async () => {
    const g = counter();
    const pool = new WrappingKeyPool({ size: 3, generate: g.generate }).start();
    await pool.idle();
    expect(pool.stats()).toMatchObject({ available: 3, refilled: 3 });
    const k = await pool.take();
    expect(k.kid).toBe('k1');
    expect(pool.stats()).toMatchObject({ fromPool: 1, onDemand: 0 });
    await pool.idle();
    expect(pool.stats().available).toBe(3);
    expect(g.calls()).toBe(4);
    pool.close();
  });

  it('never hands the same key out twice', async () => {
    const pool = new WrappingKeyPool({ size: 2, generate: counter().generate }).start();
    const kids: string[] = [];
    for (let i = 0; i < 12; i++) {
      kids.push((await pool.take()).kid);
      if (i % 3 === 0) await pool.idle();
    }
    expect(new Set(kids).size).toBe(kids.length);
    pool.close();
  });

  it('generates on demand when empty instead of waiting for the refill', async () => {
    const g = counter();
    const pool = new WrappingKeyPool({ size: 0, generate: g.generate }).start();
    await pool.idle();
    expect(g.calls()).toBe(0);
    const a = await pool.take();
    const b = await pool.take();
    expect(a.kid).not.toBe(b.kid);
    expect(pool.stats()).toMatchObject({ available: 0, fromPool: 0, onDemand: 2 });
    pool.close();
  });

  it('after a failed background generation, the next take still gets a key and refilling resumes', async () => {
    const errors: unknown[] = [];
    const g = counter({ failAt: [2] });
    const pool = new WrappingKeyPool({ size: 3, generate: g.generate, onError: (e) => errors.push(e) }).start();
    await pool.idle();
    expect(errors).toHaveLength(1);
    expect(pool.stats().available).toBe(1);
    await pool.take();
    await pool.idle();
    expect(pool.stats().available).toBe(3);
    pool.close();
  });

  it('stops refilling when closed; releases finishing during shutdown still get a fresh key', async () => {
    const g = counter();
    const pool = new WrappingKeyPool({ size: 4, generate: g.generate }).start();
    pool.close();
    await pool.idle();
    expect(pool.stats().available).toBe(0);
    const before = g.calls();
    expect(before).toBeLessThanOrEqual(1);
    const k = await pool.take();
    expect(k.kid).toBe(`k${before + 1}`); // generated for this take, not left over from the pool
    expect(g.calls()).toBe(before + 1);
    await pool.idle();
    expect(pool.stats().available).toBe(0); // no refill after close
  });

  it.each([-1, 1.5, 33, Number.NaN])('refuses size %p', (size) => {
    expect(() => new WrappingKeyPool({ size })).toThrow(ConfigError);
  });

  it('by default pre-generates real RSA-2048 keys with their RFC 7638 kid', async () => {
    const pool = new WrappingKeyPool({ size: 1 }).start();
    await pool.idle();
    const k = await pool.take();
    expect(k.privateKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    const jwk = k.runtimeJwks.keys[0];
    expect(k.kid).toBe(rsaJwkThumbprint(jwk.n, jwk.e));
    expect(JSON.parse(k.runtimeData.toString('utf8'))).toEqual(k.runtimeJwks);
    pool.close();
    await pool.idle();
  });
});
