/**
 * Lazy access to the native `sev_guest` addon (native/src/sev_guest.c). It is loaded only when a
 * device-backed evidence source is used, so a machine where it did not build still runs
 * `--simulate`; errors it raises become DeviceErrors with the errno and firmware word kept.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DeviceError, InvalidInputError, SkrError } from '../common/errors';

export interface SevGuestAddon {
  getReport(devicePath: string, userData: Buffer, vmpl: number): Promise<Buffer>;
  getExtReport(devicePath: string, userData: Buffer, vmpl: number): Promise<{ report: Buffer; certs: Buffer }>;
  getLegacyReport(devicePath: string, userData: Buffer, vmpl: number): Promise<Buffer>;
}

/** Shape of the addon's rejections (see native/src/sev_guest.c). */
interface AddonError extends Error {
  code?: string;
  errno?: number;
  syscall?: string;
  fwErr?: string;
}

// Two levels up from src/snp (ts-jest) and from dist/snp (tsc) is the package root.
const PACKAGE_ROOT = path.join(__dirname, '..', '..');
export const ADDON_PATH = path.join(PACKAGE_ROOT, 'native', 'build', 'Release', 'sev_guest.node');
export const BUILD_LOG_PATH = path.join(PACKAGE_ROOT, 'native', 'build-error.log');

export interface LoadOptions {
  addonPath?: string;
  buildLogPath?: string;
}

const loaded = new Map<string, SevGuestAddon>();

/** The line of a node-gyp log most likely to say why the build failed, or undefined. */
export function firstUsefulLogLine(log: string): string | undefined {
  const lines = log.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  const pick =
    lines.find((l) => /:\s*(fatal )?error:/i.test(l)) ??
    lines.find((l) => /ERR!.*\bError:/.test(l)) ??
    lines.find((l) => /ERR!/.test(l) && !/ERR! not ok$/.test(l)) ??
    lines[0];
  return pick === undefined ? undefined : pick.slice(0, 300);
}

function unavailable(addonPath: string, buildLogPath: string, cause: unknown): DeviceError {
  let detail = '';
  try {
    const line = firstUsefulLogLine(fs.readFileSync(buildLogPath, 'utf8'));
    if (line !== undefined) detail = `; build log ${buildLogPath} says: "${line}"`;
  } catch {
    // No build log: the addon was never built, or was deleted after a good build.
  }
  const why = cause instanceof Error ? cause.message.split('\n')[0] : String(cause);
  return new DeviceError(
    'ERR_NATIVE_UNAVAILABLE',
    `the native SEV-SNP addon did not build or cannot load (${addonPath}: ${why})${detail}; ` +
      'reinstall with gcc, make and python3 available, or run with --simulate',
    { cause },
  );
}

/** Load (once per path) the addon, or throw DeviceError ERR_NATIVE_UNAVAILABLE. */
export function loadAddon(opts: LoadOptions = {}): SevGuestAddon {
  const addonPath = opts.addonPath ?? ADDON_PATH;
  const hit = loaded.get(addonPath);
  if (hit) return hit;
  const mod: { exports: Partial<SevGuestAddon> } = { exports: {} };
  try {
    // What require() does for a .node file, without a dynamic require.
    process.dlopen(mod, addonPath);
  } catch (e) {
    throw unavailable(addonPath, opts.buildLogPath ?? BUILD_LOG_PATH, e);
  }
  const { getReport, getExtReport, getLegacyReport } = mod.exports;
  if (typeof getReport !== 'function' || typeof getExtReport !== 'function' || typeof getLegacyReport !== 'function') {
    throw unavailable(addonPath, opts.buildLogPath ?? BUILD_LOG_PATH, new Error('the addon lacks the expected exports'));
  }
  const addon = mod.exports as SevGuestAddon;
  loaded.set(addonPath, addon);
  return addon;
}

/** Map whatever the addon threw or rejected with to a typed error. */
export function toDeviceError(e: unknown): SkrError {
  if (e instanceof SkrError) return e;
  const a = (e ?? {}) as AddonError;
  const message = typeof a.message === 'string' && a.message ? a.message : String(e);
  if (a.code === 'ERR_INVALID_ARG_TYPE' || a.code === 'ERR_OUT_OF_RANGE') {
    return new InvalidInputError('ERR_DEVICE_ARGUMENT', message, e);
  }
  let firmwareError: bigint | undefined;
  if (typeof a.fwErr === 'string' && /^0x[0-9a-f]+$/i.test(a.fwErr)) firmwareError = BigInt(a.fwErr);
  const errno = typeof a.errno === 'number' && typeof a.code === 'string' ? a.code : undefined;
  return new DeviceError('ERR_DEVICE', message, { errno, firmwareError, cause: e });
}

/**
 * One device request at a time: the firmware handles a single guest message at once and the host
 * throttles, so concurrent callers queue here instead of racing in the kernel.
 */
export class DeviceLock {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    // The next caller waits for this one to settle, whatever the outcome.
    this.tail = result.catch(() => undefined);
    return result;
  }
}
