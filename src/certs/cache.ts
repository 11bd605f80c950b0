/**
 * A TCB-keyed cache in front of any CollateralSource: memory, optionally a directory (one JSON file
 * per key, written atomically with mode 0600), freshness from the source's cacheControl (24 h when
 * it gave none), and single-flight so concurrent misses for one key cause one upstream fetch
 * (KDS answers bursts with 429).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { toHex } from '../common/bytes';
import { tcbToHex } from '../snp/tcb';
import type { AmdCertChain, CollateralKey, CollateralSource } from './types';

export const DEFAULT_TTL_SECONDS = 24 * 60 * 60;

export interface CollateralCacheOptions {
  /** Persist entries here (created 0700 if missing). */
  dir?: string;
  /** Freshness when the source gave no cacheControl. Default 24 h. */
  defaultTtlSeconds?: number;
  /** Clock in ms; injectable so expiry is tested without waiting. */
  now?: () => number;
}

export interface CacheStats {
  hits: number;
  misses: number;
  /** Hits served from disk (a subset of hits). */
  diskHits: number;
  /** Upstream fetches actually made. */
  fetches: number;
  /** Disk reads/writes that failed (the cache keeps working from memory). */
  diskErrors: number;
}

interface Entry {
  chain: AmdCertChain;
  expiresAt: number;
}

interface DiskEntry {
  v: 1;
  key: { product: string; chipId: string; tcb: string };
  fetchedAt: number;
  expiresAt: number;
  chain: { vcekPem: string; chainPem: string; tcbm: string; cacheControlSeconds?: number; source: string };
}

export function cacheKeyString(key: CollateralKey): string {
  return `${key.product}-${toHex(key.chipId)}-${tcbToHex(key.tcb)}`;
}

/** Race a promise against a caller's signal without cancelling the shared work. */
function withSignal<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

function fromDisk(raw: string): Entry | undefined {
  const d = JSON.parse(raw) as Partial<DiskEntry>;
  const c = d.chain;
  if (d.v !== 1 || typeof d.expiresAt !== 'number' || !c) return undefined;
  if (typeof c.vcekPem !== 'string' || typeof c.chainPem !== 'string' || typeof c.source !== 'string') return undefined;
  if (typeof c.tcbm !== 'string' || !/^[0-9a-f]{16}$/.test(c.tcbm)) return undefined;
  const chain: AmdCertChain = { vcekPem: c.vcekPem, chainPem: c.chainPem, tcbm: BigInt('0x' + c.tcbm), source: c.source };
  if (typeof c.cacheControlSeconds === 'number') chain.cacheControlSeconds = c.cacheControlSeconds;
  return { chain, expiresAt: d.expiresAt };
}

export class CollateralCache implements CollateralSource {
  readonly name: string;
  private readonly memory = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<AmdCertChain>>();
  private readonly counters: CacheStats = { hits: 0, misses: 0, diskHits: 0, fetches: 0, diskErrors: 0 };
  private readonly now: () => number;
  private readonly ttlSeconds: number;

  constructor(readonly source: CollateralSource, private readonly opts: CollateralCacheOptions = {}) {
    this.name = source.name;
    this.now = opts.now ?? Date.now;
    this.ttlSeconds = opts.defaultTtlSeconds ?? DEFAULT_TTL_SECONDS;
  }

  stats(): CacheStats {
    return { ...this.counters };
  }

  /** CollateralSource view: a cached get. */
  fetch(key: CollateralKey, signal?: AbortSignal): Promise<AmdCertChain> {
    return this.get(key, { signal });
  }

  /** The chain for `key`: fresh cached copy, else one (shared) fetch. `refresh` skips the cached copy. */
  async get(key: CollateralKey, opts: { refresh?: boolean; signal?: AbortSignal } = {}): Promise<AmdCertChain> {
    const k = cacheKeyString(key);
    if (!opts.refresh) {
      const hit = this.lookup(k);
      if (hit) {
        this.counters.hits++;
        return hit;
      }
    }
    this.counters.misses++;
    let p = this.inflight.get(k);
    if (!p) {
      p = this.load(k, key).finally(() => this.inflight.delete(k));
      this.inflight.set(k, p);
    }
    return withSignal(p, opts.signal);
  }

  /** Drop a key (memory and disk), e.g. after its chain failed verification. */
  invalidate(key: CollateralKey): void {
    const k = cacheKeyString(key);
    this.memory.delete(k);
    if (this.opts.dir) fs.rmSync(this.fileFor(k), { force: true });
  }

  private lookup(k: string): AmdCertChain | undefined {
    const now = this.now();
    const m = this.memory.get(k);
    if (m && m.expiresAt > now) return m.chain;
    if (m) this.memory.delete(k);
    if (!this.opts.dir) return undefined;
    let e: Entry | undefined;
    try {
      e = fromDisk(fs.readFileSync(this.fileFor(k), 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.counters.diskErrors++;
      return undefined;
    }
    if (!e || e.expiresAt <= now) return undefined;
    this.memory.set(k, e);
    this.counters.diskHits++;
    return e.chain;
  }

  private async load(k: string, key: CollateralKey): Promise<AmdCertChain> {
    this.counters.fetches++;
    // The shared fetch gets no caller signal: one caller giving up must not fail the others.
    const chain = await this.source.fetch(key);
    const fetchedAt = this.now();
    const ttl = chain.cacheControlSeconds ?? this.ttlSeconds;
    const entry: Entry = { chain, expiresAt: fetchedAt + ttl * 1000 };
    this.memory.set(k, entry);
    if (this.opts.dir) this.persist(k, key, entry, fetchedAt);
    return chain;
  }

  private fileFor(k: string): string {
    return path.join(this.opts.dir as string, `${k}.json`);
  }

  private persist(k: string, key: CollateralKey, e: Entry, fetchedAt: number): void {
    const dir = this.opts.dir as string;
    const file = this.fileFor(k);
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const body: DiskEntry = {
      v: 1,
      key: { product: key.product, chipId: toHex(key.chipId), tcb: tcbToHex(key.tcb) },
      fetchedAt,
      expiresAt: e.expiresAt,
      chain: {
        vcekPem: e.chain.vcekPem,
        chainPem: e.chain.chainPem,
        tcbm: tcbToHex(e.chain.tcbm),
        source: e.chain.source,
        ...(e.chain.cacheControlSeconds !== undefined ? { cacheControlSeconds: e.chain.cacheControlSeconds } : {}),
      },
    };
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      fs.writeFileSync(tmp, JSON.stringify(body), { mode: 0o600, flag: 'wx' });
      fs.renameSync(tmp, file);
    } catch {
      this.counters.diskErrors++;
      fs.rmSync(tmp, { force: true });
    }
  }
}
