/**
 * Picks the evidence source the platform offers, in the order the kernel's interfaces were
 * introduced newest-first: configfs-tsm (provider sev_guest), /dev/sev-guest, legacy /dev/sev.
 * Never falls back to simulation: that must be asked for explicitly.
 */
import { access, constants } from 'node:fs/promises';
import { DeviceError } from '../common/errors';
import type { EvidenceSource } from './evidence';
import { ConfigfsTsmSource } from './sources/configfs-tsm';
import { LegacySevSource } from './sources/legacy-sev';
import { SevGuestSource } from './sources/sev-guest';

export const NO_DEVICE_MESSAGE = 'no SEV-SNP device found; use --simulate for local development';

export interface DetectOptions {
  configfsRoot?: string;
  sevGuestPath?: string;
  sevPath?: string;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

export async function detectEvidenceSource(opts: DetectOptions = {}): Promise<EvidenceSource> {
  const configfsRoot = opts.configfsRoot ?? '/sys/kernel/config/tsm/report';
  const sevGuestPath = opts.sevGuestPath ?? '/dev/sev-guest';
  const sevPath = opts.sevPath ?? '/dev/sev';
  if (await ConfigfsTsmSource.isAvailable(configfsRoot)) return new ConfigfsTsmSource({ root: configfsRoot });
  if (await exists(sevGuestPath)) return new SevGuestSource(sevGuestPath);
  if (await exists(sevPath)) return new LegacySevSource(sevPath);
  throw new DeviceError('ERR_NO_DEVICE', `${NO_DEVICE_MESSAGE} (looked for ${configfsRoot}, ${sevGuestPath}, ${sevPath})`);
}
