import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CollateralCache, cacheKeyString } from '../../src/certs/cache';
import type { AmdCertChain, CollateralKey, CollateralSource } from '../../src/certs/types';

/** A CollateralSource that counts calls and answers after the test releases it. */
class CountingSource implements CollateralSource {
  readonly name = 'counting';
  calls = 0;
  cacheControlSeconds?: number;
  private release?: () => void;
  private gate?: Promise<void>;
  fail = false;

  hold(): void {
    this.gate = new Promise((r) => (this.release = r));
  }
  open(): void {
    this.release?.();
    this.gate = undefined;
  }

  async fetch(key: CollateralKey): Promise<AmdCertChain> {
    this.calls++;
    if (this.gate) await this.gate;
    if (this.fail) throw new Error('upstream down');
    return {
      vcekPem: `vcek-${this.calls}`,
      chainPem: 'chain',
      tcbm: key.tcb,
      source: this.name,
      ...(this.cacheControlSeconds !== undefined ? { cacheControlSeconds: this.cacheControlSeconds } : {}),
    };
  }
}

const key: CollateralKey = { product: 'Milan', chipId: Buffer.alloc(64, 7), tcb: 0x7308000000000003n };

describe('CollateralCache', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-cache-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('makes one upstream fetch for 10 concurrent misses of one key', async () => {
    const src = new CountingSource();
    const cache = new CollateralCache(src);
    src.hold();
    const all = Promise.all(Array.from({ length: 10 }, () => cache.get(key)));
    src.open();
    const got = await all;
    expect(src.calls).toBe(1);
    expect(new Set(got.map((c) => c.vcekPem))).toEqual(new Set(['vcek-1']));
    expect(cache.stats()).toMatchObject({ misses: 10, hits: 0, fetches: 1 });
    await cache.get(key);
    expect(cache.stats()).toMatchObject({ hits: 1, fetches: 1 });
  });

  it('keys by product, chip id and TCB', async () => {
    const src = new CountingSource();
    const cache = new CollateralCache(src);
    await cache.get(key);
    await cache.get({ ...key, tcb: 0x7308000000000004n });
    await cache.get({ ...key, product: 'Genoa' });
    await cache.get({ ...key, chipId: Buffer.alloc(64, 8) });
    await cache.get(key);
    expect(src.calls).toBe(4);
    expect(cacheKeyString(key)).toBe(`Milan-${'07'.repeat(64)}-7308000000000003`);
  });

  it('persists across instances with mode 0600 and atomic writes', async () => {
    const src = new CountingSource();
    src.cacheControlSeconds = 3600;
    await new CollateralCache(src, { dir }).get(key);
    const files = fs.readdirSync(dir);
    expect(files).toEqual([`${cacheKeyString(key)}.json`]);
    expect(fs.statSync(path.join(dir, files[0])).mode & 0o777).toBe(0o600);

    const src2 = new CountingSource();
    const second = new CollateralCache(src2, { dir });
    const c = await second.get(key);
    expect(src2.calls).toBe(0);
    expect(c).toMatchObject({ vcekPem: 'vcek-1', tcbm: key.tcb, cacheControlSeconds: 3600, source: 'counting' });
    expect(second.stats()).toMatchObject({ hits: 1, diskHits: 1, misses: 0 });
  });

  it('expires entries after cacheControl seconds, else after the 24 h default', async () => {
    let now = 1_000_000;
    const src = new CountingSource();
    src.cacheControlSeconds = 60;
    const cache = new CollateralCache(src, { dir, now: () => now });
    await cache.get(key);
    now += 59_000;
    await cache.get(key);
    expect(src.calls).toBe(1);
    now += 2_000;
    await cache.get(key);
    expect(src.calls).toBe(2);

    const src2 = new CountingSource();
    const dflt = new CollateralCache(src2, { now: () => now });
    await dflt.get(key);
    now += 24 * 3600 * 1000 - 1;
    await dflt.get(key);
    expect(src2.calls).toBe(1);
    now += 2;
    await dflt.get(key);
    expect(src2.calls).toBe(2);
  });

  it('ignores an expired or corrupt disk entry', async () => {
    let now = 0;
    const src = new CountingSource();
    src.cacheControlSeconds = 10;
    await new CollateralCache(src, { dir, now: () => now }).get(key);
    now = 11_000;
    const later = new CollateralCache(src, { dir, now: () => now });
    await later.get(key);
    expect(src.calls).toBe(2);
    fs.writeFileSync(path.join(dir, `${cacheKeyString(key)}.json`), '{not json');
    const third = new CollateralCache(src, { dir, now: () => now });
    await third.get(key);
    expect(src.calls).toBe(3);
    expect(third.stats().diskErrors).toBe(1);
  });

  it('refresh bypasses the cached copy; failures are not cached', async () => {
    const src = new CountingSource();
    const cache = new CollateralCache(src);
    await cache.get(key);
    expect((await cache.get(key, { refresh: true })).vcekPem).toBe('vcek-2');
    expect((await cache.get(key)).vcekPem).toBe('vcek-2');
    src.fail = true;
    await expect(cache.get({ ...key, tcb: 1n })).rejects.toThrow('upstream down');
    src.fail = false;
    await expect(cache.get({ ...key, tcb: 1n })).resolves.toMatchObject({ tcbm: 1n });
  });

  it("lets one caller give up without failing the others' shared fetch", async () => {
    const src = new CountingSource();
    const cache = new CollateralCache(src);
    src.hold();
    const ac = new AbortController();
    const quitter = cache.get(key, { signal: ac.signal });
    const stayer = cache.get(key);
    ac.abort(new Error('client went away'));
    await expect(quitter).rejects.toThrow('client went away');
    src.open();
    await expect(stayer).resolves.toMatchObject({ vcekPem: 'vcek-1' });
    expect(src.calls).toBe(1);
  });
});
