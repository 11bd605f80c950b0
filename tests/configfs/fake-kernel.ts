/**
 * A fake configfs-tsm over a temp dir, behind the same ConfigfsClient interface as the real one:
 * mkdir creates an entry with `provider` and `generation`; each write to `inblob`/`privlevel` bumps
 * the generation; reading `outblob`/`auxblob` makes (once per generation, as the kernel caches) a report
 * from a SimulatedPlatform and its certificate table. Hooks let tests inject races and failures.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ConfigfsClient } from '../../src/snp/sources/configfs-tsm';
import { buildCertTable } from '../../src/snp/cert-table';
import type { SimulatedPlatform } from '../../src/snp/simulator';

interface EntryState {
  generation: number;
  inblob?: Buffer;
  privlevel: number;
  cached?: { generation: number; outblob: Buffer; auxblob: Buffer };
}

export interface FakeKernelOptions {
  provider?: string;
  /** Called before an attribute is read; may throw or poke the entry (e.g. a concurrent write). */
  beforeRead?: (attr: string, entry: string, kernel: FakeConfigfsKernel) => void;
  /** Hide auxblob (older kernel). */
  noAuxblob?: boolean;
  /** Host supplies no certificates: auxblob reads empty. */
  noCerts?: boolean;
}

function errno(code: string, message: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: ${message}`) as NodeJS.ErrnoException;
  e.code = code;
  return e;
}

export class FakeConfigfsKernel implements ConfigfsClient {
  readonly entries = new Map<string, EntryState>();
  /** Every call, in order, as `op name` (name = attribute or entry). */
  readonly calls: string[] = [];

  constructor(readonly root: string, private readonly platform: SimulatedPlatform, private readonly opts: FakeKernelOptions = {}) {}

  private locate(p: string): { entry: string; attr: string; state: EntryState } {
    const rel = path.relative(this.root, p).split(path.sep);
    const state = this.entries.get(rel[0]);
    if (rel.length !== 2 || !state) throw errno('ENOENT', p);
    return { entry: rel[0], attr: rel[1], state };
  }

  private persistGeneration(entry: string, state: EntryState): void {
    fs.writeFileSync(path.join(this.root, entry, 'generation'), `${state.generation}\n`);
  }

  /** Simulate another process writing to an entry. */
  bump(entry: string): void {
    const state = this.entries.get(entry)!;
    state.generation++;
    this.persistGeneration(entry, state);
  }

  async mkdir(p: string): Promise<void> {
    if (path.dirname(p) !== this.root) throw errno('ENOENT', p);
    fs.mkdirSync(p); // EEXIST / ENOENT like the kernel
    const entry = path.basename(p);
    this.calls.push(`mkdir ${entry}`);
    const state: EntryState = { generation: 0, privlevel: 0 };
    this.entries.set(entry, state);
    fs.writeFileSync(path.join(p, 'provider'), `${this.opts.provider ?? 'sev_guest'}\n`);
    this.persistGeneration(entry, state);
  }

  async rmdir(p: string): Promise<void> {
    const entry = path.basename(p);
    this.calls.push(`rmdir ${entry}`);
    if (!this.entries.delete(entry)) throw errno('ENOENT', p);
    fs.rmSync(p, { recursive: true });
  }

  async writeFile(p: string, data: Buffer | string): Promise<void> {
    const { entry, attr, state } = this.locate(p);
    this.calls.push(`write ${attr}`);
    const buf = Buffer.from(data);
    if (attr === 'inblob') {
      if (buf.length > 64) throw errno('EINVAL', 'inblob is at most 64 bytes');
      state.inblob = Buffer.concat([buf, Buffer.alloc(64 - buf.length)]);
    } else if (attr === 'privlevel') {
      const v = Number(buf.toString().trim());
      if (!Number.isInteger(v) || v < 0 || v > 3) throw errno('EINVAL', 'privlevel');
      state.privlevel = v;
    } else {
      throw errno('EACCES', `${attr} is read-only`);
    }
    state.generation++;
    this.persistGeneration(entry, state);
  }

  async readFile(p: string): Promise<Buffer> {
    const { entry, attr, state } = this.locate(p);
    this.calls.push(`read ${attr}`);
    this.opts.beforeRead?.(attr, entry, this);
    if (attr === 'outblob' || attr === 'auxblob') {
      if (attr === 'auxblob' && this.opts.noAuxblob) throw errno('ENOENT', p);
      if (!state.inblob) throw errno('EINVAL', 'no inblob written');
      if (state.cached?.generation !== state.generation) {
        const ev = this.platform.getEvidence({ reportData: state.inblob, vmpl: state.privlevel, extended: true });
        const auxblob = this.opts.noCerts ? Buffer.alloc(0) : buildCertTable((ev.certTable ?? []).map((c) => ({ kind: c.kind as 'vcek', data: c.data })));
        state.cached = { generation: state.generation, outblob: ev.report, auxblob };
      }
      return Buffer.from(attr === 'outblob' ? state.cached.outblob : state.cached.auxblob);
    }
    return fs.readFileSync(p);
  }
}
