/**
 * Evidence from Linux configfs-tsm (kernel 6.7+, Documentation/ABI/testing/configfs-tsm-report):
 * mkdir an entry under /sys/kernel/config/tsm/report, check `provider`, write `privlevel` and `inblob`,
 * read `outblob` (the report) and `auxblob` (the host's certificate table), and make sure `generation`
 * moved only by our own writes (any other writer to the same entry would make the outputs not ours).
 * All file access goes through ConfigfsClient so tests can supply a fake kernel through the same interface.
 */
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { DeviceError, InvalidInputError } from '../../common/errors';
import type { ErrorCode } from '../../common/error-codes';
import { parseCertTable } from '../cert-table';
import type { Evidence, EvidenceSource, ReportRequest } from '../evidence';
import { REPORT_SIZE } from '../report';

export const DEFAULT_CONFIGFS_TSM_ROOT = '/sys/kernel/config/tsm/report';
export const SEV_GUEST_PROVIDER = 'sev_guest';
const REPORT_DATA_SIZE = 64;

/** The file operations configfs-tsm needs; the real one is node:fs/promises. */
export interface ConfigfsClient {
  mkdir(p: string): Promise<void>;
  rmdir(p: string): Promise<void>;
  readFile(p: string): Promise<Buffer>;
  writeFile(p: string, data: Buffer | string): Promise<void>;
}

export const nodeConfigfsClient: ConfigfsClient = {
  mkdir: async (p) => {
    await fsp.mkdir(p);
  },
  rmdir: (p) => fsp.rmdir(p),
  readFile: (p) => fsp.readFile(p),
  writeFile: (p, data) => fsp.writeFile(p, data),
};

export interface ConfigfsTsmOptions {
  /** Default /sys/kernel/config/tsm/report. */
  root?: string;
  client?: ConfigfsClient;
}

function errnoOf(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function deviceError(code: ErrorCode, what: string, e: unknown): DeviceError {
  const errno = errnoOf(e);
  const detail = e instanceof Error ? e.message : String(e);
  return new DeviceError(code, `configfs-tsm: ${what}: ${detail}`, { errno, cause: e });
}

function entryName(): string {
  return `skr-${process.pid}-${randomBytes(6).toString('hex')}`;
}

export class ConfigfsTsmSource implements EvidenceSource {
  readonly kind = 'configfs-tsm' as const;
  readonly description: string;
  private readonly root: string;
  private readonly client: ConfigfsClient;

  constructor(opts: ConfigfsTsmOptions = {}) {
    this.root = opts.root ?? DEFAULT_CONFIGFS_TSM_ROOT;
    this.client = opts.client ?? nodeConfigfsClient;
    this.description = `configfs-tsm ${this.root}`;
  }

  /** True when `root` accepts a new entry whose provider is sev_guest. Never throws; cleans up its probe. */
  static async isAvailable(root: string = DEFAULT_CONFIGFS_TSM_ROOT, client: ConfigfsClient = nodeConfigfsClient): Promise<boolean> {
    const dir = path.join(root, entryName());
    try {
      await client.mkdir(dir);
    } catch {
      return false;
    }
    try {
      const provider = (await client.readFile(path.join(dir, 'provider'))).toString('utf8').trim();
      return provider === SEV_GUEST_PROVIDER;
    } catch {
      return false;
    } finally {
      await client.rmdir(dir).catch(() => undefined);
    }
  }

  async getReport(req: ReportRequest): Promise<Evidence> {
    if (req.reportData.length !== REPORT_DATA_SIZE) {
      throw new InvalidInputError('ERR_REPORT_DATA', `REPORT_DATA must be ${REPORT_DATA_SIZE} bytes, got ${req.reportData.length}`);
    }
    if (req.vmpl !== undefined && (!Number.isInteger(req.vmpl) || req.vmpl < 0 || req.vmpl > 3)) {
      throw new InvalidInputError('ERR_VMPL', `VMPL must be 0-3, got ${req.vmpl}`);
    }
    const dir = path.join(this.root, entryName());
    const attr = (name: string) => path.join(dir, name);
    try {
      await this.client.mkdir(dir);
    } catch (e) {
      throw deviceError('ERR_CONFIGFS', `cannot create report entry ${dir}`, e);
    }
    try {
      const provider = await this.read(attr('provider'), 'provider');
      const name = provider.toString('utf8').trim();
      if (name !== SEV_GUEST_PROVIDER) {
        throw new DeviceError('ERR_CONFIGFS_PROVIDER', `configfs-tsm provider is "${name}", not "${SEV_GUEST_PROVIDER}": this is not an SEV-SNP guest`);
      }
      const before = await this.generation(attr('generation'));
      let writes = 0;
      if (req.vmpl !== undefined) {
        await this.write(attr('privlevel'), String(req.vmpl), 'privlevel');
        writes++;
      }
      await this.write(attr('inblob'), Buffer.from(req.reportData), 'inblob');
      writes++;

      const report = await this.read(attr('outblob'), 'outblob');
      let aux: Buffer | undefined;
      if (req.extended) aux = await this.readAux(attr('auxblob'));

      const after = await this.generation(attr('generation'));
      if (after !== before + writes) {
        throw new DeviceError(
          'ERR_CONFIGFS_RACE',
          `configfs-tsm: generation went from ${before} to ${after} but we wrote ${writes} time(s): another writer used ${dir} concurrently, its outputs are not ours`,
        );
      }
      if (report.length !== REPORT_SIZE) {
        throw new DeviceError('ERR_CONFIGFS_REPORT', `configfs-tsm: outblob is ${report.length} bytes, expected a ${REPORT_SIZE}-byte SEV-SNP report`);
      }
      const certTable = aux && aux.length > 0 ? this.certTable(aux) : undefined;
      return certTable && certTable.length > 0 ? { report, certTable } : { report };
    } finally {
      // Entries hold kernel memory and would otherwise leak; a failed rmdir must not mask the real error.
      await this.client.rmdir(dir).catch(() => undefined);
    }
  }

  private async read(p: string, what: string): Promise<Buffer> {
    try {
      return await this.client.readFile(p);
    } catch (e) {
      throw deviceError('ERR_CONFIGFS', `reading ${what} failed`, e);
    }
  }

  private async write(p: string, data: Buffer | string, what: string): Promise<void> {
    try {
      await this.client.writeFile(p, data);
    } catch (e) {
      throw deviceError('ERR_CONFIGFS', `writing ${what} failed`, e);
    }
  }

  /** auxblob is absent on kernels/providers without one, and empty when the host supplied no certificates. */
  private async readAux(p: string): Promise<Buffer | undefined> {
    try {
      return await this.client.readFile(p);
    } catch (e) {
      if (errnoOf(e) === 'ENOENT') return undefined;
      throw deviceError('ERR_CONFIGFS', 'reading auxblob failed', e);
    }
  }

  private certTable(aux: Buffer) {
    try {
      return parseCertTable(aux);
    } catch (e) {
      throw deviceError('ERR_CONFIGFS_AUXBLOB', 'the host\'s certificate table (auxblob) is malformed', e);
    }
  }

  private async generation(p: string): Promise<number> {
    const text = (await this.read(p, 'generation')).toString('utf8').trim();
    if (!/^\d+$/.test(text)) throw new DeviceError('ERR_CONFIGFS', `configfs-tsm: generation "${text}" is not a number`);
    return Number(text);
  }
}
