/**
 * Intel's TDX collateral over HTTP, only when the operator named a base URL (Intel PCS
 * `https://api.trustedservices.intel.com/tdx/certification/v4`, or a cache with the same API such as
 * Azure's THIM): `GET {base}/tcb?fmspc=…` (issuer chain in `TCB-Info-Issuer-Chain`) and
 * `GET {base}/qe/identity` (`SGX-Enclave-Identity-Issuer-Chain`), both URL-encoded PEM. Bounded reads
 * through the shared collateral GET (src/certs/sources/http.ts); cached per FMSPC in memory and
 * optionally on disk (one JSON file per FMSPC, written atomically, mode 0600) until the earlier of the
 * two documents' nextUpdate, like src/certs/cache.ts. Nothing here trusts what it stores: every use
 * verifies signatures, chain and dates again (src/tdx/collateral.ts).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { getOk, type HttpSourceOptions } from '../certs/sources/http';
import { decodeUtf8 } from '../common/bounded-body';
import { UpstreamError } from '../common/errors';
import { MAX_COLLATERAL_DOC_BYTES, type SignedCollateral, type TdxCollateral } from './collateral';
import { pcsQeIdentityUrl, pcsTcbInfoUrl } from './pck';

const UPSTREAM = 'intel-pcs';

export interface TdxCollateralSourceOptions extends Omit<HttpSourceOptions, 'baseUrl'> {
  /** The PCS-shaped API root, e.g. https://api.trustedservices.intel.com/tdx/certification/v4. */
  baseUrl: string;
  /** Persist fetched collateral here (created 0700). */
  cacheDir?: string;
  /** Clock in ms (expiry tests). */
  now?: () => number;
}

export interface TdxCollateralStats {
  hits: number;
  diskHits: number;
  fetches: number;
  diskErrors: number;
}

interface Entry {
  collateral: TdxCollateral;
  expiresAt: number;
}

interface DiskEntry {
  v: 1;
  fmspc: string;
  fetchedAt: number;
  expiresAt: number;
  source: string;
  tcbInfo: SignedCollateral;
  qeIdentity: SignedCollateral;
}

const FMSPC = /^[0-9a-f]{12}$/;

/** nextUpdate of a body as served (unverified: only to decide how long to keep it). */
function nextUpdateOf(body: string, member: string): number | undefined {
  try {
    const v = (JSON.parse(body) as Record<string, Record<string, unknown>>)[member]?.['nextUpdate'];
    const t = typeof v === 'string' ? Date.parse(v) : NaN;
    return Number.isNaN(t) ? undefined : t;
  } catch {
    return undefined;
  }
}

const isSigned = (x: unknown): x is SignedCollateral =>
  typeof x === 'object' && x !== null && typeof (x as SignedCollateral).body === 'string' && typeof (x as SignedCollateral).issuerChainPem === 'string';

export class TdxCollateralSource {
  private readonly memory = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<TdxCollateral>>();
  private readonly counters: TdxCollateralStats = { hits: 0, diskHits: 0, fetches: 0, diskErrors: 0 };
  private readonly now: () => number;

  constructor(private readonly opts: TdxCollateralSourceOptions) {
    this.now = opts.now ?? Date.now;
  }

  stats(): TdxCollateralStats {
    return { ...this.counters };
  }

  /** Collateral for `fmspc`: a copy whose nextUpdate has not passed, else one (shared) fetch. */
  async get(fmspc: string, opts: { refresh?: boolean } = {}): Promise<TdxCollateral> {
    const key = fmspc.toLowerCase();
    if (!FMSPC.test(key)) throw new UpstreamError(UPSTREAM, `FMSPC "${fmspc.slice(0, 20)}" is not 6 bytes of hex`);
    if (!opts.refresh) {
      const hit = this.lookup(key);
      if (hit) {
        this.counters.hits++;
        return hit;
      }
    }
    let p = this.inflight.get(key);
    if (!p) {
      p = this.load(key).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  /** Drop an FMSPC's copy (memory and disk), e.g. after it failed verification. */
  invalidate(fmspc: string): void {
    const key = fmspc.toLowerCase();
    this.memory.delete(key);
    if (this.opts.cacheDir && FMSPC.test(key)) fs.rmSync(this.fileFor(key), { force: true });
  }

  private fileFor(key: string): string {
    return path.join(this.opts.cacheDir as string, `tdx-${key}.json`);
  }

  private lookup(key: string): TdxCollateral | undefined {
    const now = this.now();
    const m = this.memory.get(key);
    if (m && m.expiresAt > now) return m.collateral;
    if (m) this.memory.delete(key);
    if (!this.opts.cacheDir) return undefined;
    let d: Partial<DiskEntry>;
    try {
      const file = this.fileFor(key);
      if (fs.statSync(file).size > 4 * MAX_COLLATERAL_DOC_BYTES) return undefined;
      d = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<DiskEntry>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.counters.diskErrors++;
      return undefined;
    }
    if (d.v !== 1 || d.fmspc !== key || typeof d.expiresAt !== 'number' || d.expiresAt <= now || !isSigned(d.tcbInfo) || !isSigned(d.qeIdentity)) return undefined;
    const collateral: TdxCollateral = { tcbInfo: d.tcbInfo, qeIdentity: d.qeIdentity, source: `cache (${typeof d.source === 'string' ? d.source : '?'})` };
    this.memory.set(key, { collateral, expiresAt: d.expiresAt });
    this.counters.diskHits++;
    return collateral;
  }

  private async fetchDoc(url: string, chainHeader: string, signal: AbortSignal): Promise<SignedCollateral> {
    const { body, headers } = await getOk(url, UPSTREAM, this.opts, {}, signal);
    const what = `GET ${new URL(url).host}${new URL(url).pathname}`;
    if (body.length > MAX_COLLATERAL_DOC_BYTES) throw new UpstreamError(UPSTREAM, `${what}: body of ${body.length} bytes exceeds ${MAX_COLLATERAL_DOC_BYTES}`, { code: 'ERR_UPSTREAM_MALFORMED' });
    const encoded = headers.get(chainHeader);
    if (!encoded) throw new UpstreamError(UPSTREAM, `${what}: no ${chainHeader} header`, { code: 'ERR_UPSTREAM_MALFORMED' });
    let issuerChainPem: string;
    try {
      issuerChainPem = decodeURIComponent(encoded);
    } catch (e) {
      throw new UpstreamError(UPSTREAM, `${what}: ${chainHeader} is not URL-encoded PEM`, { code: 'ERR_UPSTREAM_MALFORMED', cause: e });
    }
    return { body: decodeUtf8(body, { upstream: UPSTREAM, what }), issuerChainPem };
  }

  private async load(key: string): Promise<TdxCollateral> {
    this.counters.fetches++;
    const tcbUrl = pcsTcbInfoUrl(key, this.opts.baseUrl);
    // Both or neither: the first failure cancels the other fetch (and its retries), so nothing runs on after the caller has its answer.
    const both = new AbortController();
    const fetchOrCancel = (url: string, header: string) => this.fetchDoc(url, header, both.signal).catch((e: unknown) => {
      both.abort();
      throw e;
    });
    const [tcbInfo, qeIdentity] = await Promise.all([
      fetchOrCancel(tcbUrl, 'TCB-Info-Issuer-Chain'),
      fetchOrCancel(pcsQeIdentityUrl(this.opts.baseUrl), 'SGX-Enclave-Identity-Issuer-Chain'),
    ]);
    const source = this.opts.baseUrl.replace(/\/+$/, '');
    const collateral: TdxCollateral = { tcbInfo, qeIdentity, source };
    const a = nextUpdateOf(tcbInfo.body, 'tcbInfo');
    const b = nextUpdateOf(qeIdentity.body, 'enclaveIdentity');
    const fetchedAt = this.now();
    // Kept until the earlier nextUpdate; without a readable one, not kept (verification will say why).
    if (a !== undefined && b !== undefined && Math.min(a, b) > fetchedAt) {
      const expiresAt = Math.min(a, b);
      this.memory.set(key, { collateral, expiresAt });
      if (this.opts.cacheDir) this.persist(key, { v: 1, fmspc: key, fetchedAt, expiresAt, source, tcbInfo, qeIdentity });
    }
    return collateral;
  }

  private persist(key: string, d: DiskEntry): void {
    const dir = this.opts.cacheDir as string;
    const file = this.fileFor(key);
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      fs.writeFileSync(tmp, JSON.stringify(d), { mode: 0o600, flag: 'wx' });
      fs.renameSync(tmp, file);
    } catch {
      this.counters.diskErrors++;
      fs.rmSync(tmp, { force: true });
    }
  }
}
