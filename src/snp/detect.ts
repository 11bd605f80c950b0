/**
 * Picks the evidence source the platform offers, in the order the kernel's interfaces were
 * introduced newest-first: configfs-tsm (provider sev_guest), /dev/sev-guest, legacy /dev/sev.
 * Never falls back to simulation: that must be asked for explicitly. A device node found is opened
 * once here, so one the sidecar's user cannot use stops start-up instead of the first request.
 */
import { access, constants, open, stat } from 'node:fs/promises';
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

/**
 * Open the device read/write (the report ioctls need both) and close it again. On EACCES/EPERM the
 * message says who runs the sidecar, who may use the device, and the two ways to fix it.
 */
export async function checkDeviceAccess(devicePath: string): Promise<void> {
  let handle;
  try {
    handle = await open(devicePath, constants.O_RDWR);
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code ?? 'unknown error';
    let message = `cannot open ${devicePath} for reading and writing (${errno})`;
    if (errno === 'EACCES' || errno === 'EPERM') {
      const st = await stat(devicePath).catch(() => undefined);
      const device = st ? `; the device is uid ${st.uid} gid ${st.gid} mode 0${(st.mode & 0o777).toString(8)}` : '';
      message +=
        `: the sidecar runs as uid ${process.getuid?.() ?? '?'} gid ${process.getgid?.() ?? '?'}${device}. ` +
        `Run the sidecar container as root (securityContext.runAsUser: 0), or give its user the device's group` +
        `${st ? ` (gid ${st.gid})` : ''} (securityContext.runAsGroup, or supplementalGroups on Kubernetes)`;
    }
    throw new DeviceError('ERR_DEVICE_ACCESS', message, { errno, cause: e });
  }
  await handle.close();
}

export async function detectEvidenceSource(opts: DetectOptions = {}): Promise<EvidenceSource> {
  const configfsRoot = opts.configfsRoot ?? '/sys/kernel/config/tsm/report';
  const sevGuestPath = opts.sevGuestPath ?? '/dev/sev-guest';
  const sevPath = opts.sevPath ?? '/dev/sev';
  if (await ConfigfsTsmSource.isAvailable(configfsRoot)) return new ConfigfsTsmSource({ root: configfsRoot });
  if (await exists(sevGuestPath)) {
    await checkDeviceAccess(sevGuestPath);
    return new SevGuestSource(sevGuestPath);
  }
  if (await exists(sevPath)) {
    await checkDeviceAccess(sevPath);
    return new LegacySevSource(sevPath);
  }
  throw new DeviceError('ERR_NO_DEVICE', `${NO_DEVICE_MESSAGE} (looked for ${configfsRoot}, ${sevGuestPath}, ${sevPath})`);
}
