/**
 * Sidecar configuration: the reference's env vars (`Port`, `LogLevel`, `LogFile`, `SkrSideCarArgs`)
 * and our own (`SKR_*`, the identity and security-context variables) overridden by CLI flags.
 * Parsed once at start-up into a frozen, fully-typed object. This is the one module of the
 * production path that reads the process environment; every other part takes its settings from
 * the object built here.
 */
import * as fs from 'node:fs';
import { isIP } from 'node:net';
import { ConfigError } from '../common/errors';
import { decodeBase64Strict } from '../common/bytes';
import { hostGuardPolicy } from '../common/host-guard';
import { releaseTuningFromEnv, type ReleaseTuning } from '../akv/release-tuning';
import { isReleaseEnc, RELEASE_ENCS, type ReleaseEnc } from '../akv/wrap';
import type { WorkloadIdentitySettings } from '../akv/identity';
import { SECURITY_CONTEXT_ENV, type SecurityContextEnv } from '../certs/thim';
import { DEFAULT_AKV_ALLOWLIST, DEFAULT_MAA_ALLOWLIST, EndpointAllowlist, KidAllowlist } from './allowlist';
import type { LogLevel } from './logger';
import { parseAttestMaaKeys, type AttestMaaKeys } from './runtime-keys';
import type { TpmEndpoint } from '../cvm/detect';

export type CertCacheEndpointType = 'AMD' | 'AzCache' | 'LocalTHIM';

/** Where the sidecar runs: ACI/AKS container groups (SEV-SNP device), an Azure confidential VM (vTPM), or detect. */
export type PlatformChoice = 'auto' | 'aci' | 'azure-cvm';
export const PLATFORM_CHOICES: readonly PlatformChoice[] = ['auto', 'aci', 'azure-cvm'];

/** The TPM of an Azure confidential VM: its resource-manager device, or a swtpm / simulated paravisor TCP port (local use). */
export type { TpmEndpoint };
export const DEFAULT_TPM_DEVICE = '/dev/tpmrm0';

export function parsePlatform(s: string | undefined): PlatformChoice {
  if (s === undefined || s.trim() === '') return 'auto';
  const v = s.trim().toLowerCase();
  if (!(PLATFORM_CHOICES as readonly string[]).includes(v)) throw new ConfigError(`platform "${s.slice(0, 40)}" is not one of ${PLATFORM_CHOICES.join(', ')}`);
  return v as PlatformChoice;
}

/**
 * `--tpm` / SKR_TPM: `tcp:HOST:PORT` (loopback only: TPM commands travel in the clear) or a device path
 * (`device:/dev/tpmrm0` or just `/dev/tpmrm0`).
 */
export function parseTpmEndpoint(s: string | undefined): TpmEndpoint | undefined {
  if (s === undefined || s.trim() === '') return undefined;
  const v = s.trim();
  const tcp = /^tcp:(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(v);
  if (tcp) {
    const host = tcp[1] ?? tcp[2];
    const port = parsePort(tcp[3]);
    if (!['127.0.0.1', 'localhost', '::1'].includes(host.toLowerCase())) {
      throw new ConfigError(`TPM endpoint ${v.slice(0, 80)}: only loopback hosts (127.0.0.1, localhost, ::1) are allowed: TPM commands travel in the clear`);
    }
    if (port === 0) throw new ConfigError(`TPM endpoint ${v.slice(0, 80)}: port 0 is not a port to connect to`);
    return { kind: 'tcp', host: host.toLowerCase() === 'localhost' ? '127.0.0.1' : host, port };
  }
  const path = v.startsWith('device:') ? v.slice('device:'.length) : v;
  if (!path.startsWith('/')) throw new ConfigError(`TPM endpoint "${v.slice(0, 80)}" is neither tcp:HOST:PORT nor a device path such as /dev/tpmrm0`);
  return { kind: 'device', path };
}

/** `SkrSideCarArgs` JSON, exactly the reference's field names. Every part is optional. */
export interface SkrSideCarArgs {
  certcache?: {
    endpoint_type?: CertCacheEndpointType;
    endpoint?: string;
    tee_type?: string;
    api_version?: string;
    client_id?: string;
  };
  identity?: { client_id?: string };
  maaconfig?: { user_agent?: string };
  /**
   * Our addition (the reference has none): hosts `maa_endpoint` / `akv_endpoint` may name, and the
   * keys that may be released. Each list, when given, replaces the default (see allowlist.ts).
   */
  allowlist?: { maa?: string[]; akv?: string[]; kid?: string[]; hosts?: string[]; origins?: string[] };
  /** Ours too: with a kid allowlist, may the attestation routes serve runtime data holding keys (runtime-keys.ts). */
  attest_maa_keys?: AttestMaaKeys;
}

/** Winston levels (logger.ts), mapped from the reference's logrus names. */
const REFERENCE_LEVELS: Record<string, LogLevel> = {
  trace: 'silly',
  debug: 'debug',
  info: 'info',
  warning: 'warn',
  warn: 'warn',
  error: 'error',
  fatal: 'error',
  panic: 'error',
  silly: 'silly',
};

export function parseLogLevel(s: string | undefined, fallback: LogLevel = 'info'): LogLevel {
  if (s === undefined || s.trim() === '') return fallback;
  const lvl = REFERENCE_LEVELS[s.trim().toLowerCase()];
  if (!lvl) throw new ConfigError(`LogLevel "${s}" is not one of trace, debug, info, warning, error, fatal, panic`);
  return lvl;
}

export function parsePort(s: string | number | undefined, fallback = 8080): number {
  if (s === undefined || s === '') return fallback;
  const n = typeof s === 'number' ? s : Number(String(s).trim());
  if (!Number.isInteger(n) || n < 0 || n > 65535 || (typeof s === 'string' && !/^\s*\d+\s*$/.test(s))) {
    throw new ConfigError(`port "${s}" is not a number from 0 to 65535`);
  }
  return n;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optString(o: Record<string, unknown>, key: string, where: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new ConfigError(`SkrSideCarArgs.${where}.${key} must be a string`);
  return v;
}

/**
 * Parse `SkrSideCarArgs`: base64 of JSON as the reference takes it; plain JSON is accepted too
 * because people paste it that way. Empty → {}.
 */
export function parseSkrSideCarArgs(raw: string | undefined): SkrSideCarArgs {
  if (raw === undefined || raw.trim() === '') return {};
  const text = raw.trim();
  let json: string;
  if (text.startsWith('{')) {
    json = text;
  } else {
    const bytes = decodeBase64Strict(text);
    if (!bytes) throw new ConfigError('SkrSideCarArgs is neither base64 nor JSON');
    json = bytes.toString('utf8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (e) {
    throw new ConfigError(`SkrSideCarArgs is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(parsed)) throw new ConfigError('SkrSideCarArgs must be a JSON object');
  const out: SkrSideCarArgs = {};
  if (parsed.certcache !== undefined && parsed.certcache !== null) {
    if (!isObject(parsed.certcache)) throw new ConfigError('SkrSideCarArgs.certcache must be an object');
    const c = parsed.certcache;
    const endpointType = optString(c, 'endpoint_type', 'certcache');
    if (endpointType !== undefined && !['AMD', 'AzCache', 'LocalTHIM'].includes(endpointType)) {
      throw new ConfigError(`SkrSideCarArgs.certcache.endpoint_type "${endpointType}" is not AMD, AzCache or LocalTHIM`);
    }
    out.certcache = {
      endpoint_type: endpointType as CertCacheEndpointType | undefined,
      endpoint: optString(c, 'endpoint', 'certcache'),
      tee_type: optString(c, 'tee_type', 'certcache'),
      api_version: optString(c, 'api_version', 'certcache'),
      client_id: optString(c, 'client_id', 'certcache'),
    };
  }
  if (parsed.identity !== undefined && parsed.identity !== null) {
    if (!isObject(parsed.identity)) throw new ConfigError('SkrSideCarArgs.identity must be an object');
    out.identity = { client_id: optString(parsed.identity, 'client_id', 'identity') };
  }
  if (parsed.maaconfig !== undefined && parsed.maaconfig !== null) {
    if (!isObject(parsed.maaconfig)) throw new ConfigError('SkrSideCarArgs.maaconfig must be an object');
    out.maaconfig = { user_agent: optString(parsed.maaconfig, 'user_agent', 'maaconfig') };
  }
  if (parsed.allowlist !== undefined && parsed.allowlist !== null) {
    if (!isObject(parsed.allowlist)) throw new ConfigError('SkrSideCarArgs.allowlist must be an object');
    const a = parsed.allowlist;
    out.allowlist = {};
    for (const k of ['maa', 'akv', 'kid', 'hosts', 'origins'] as const) {
      const v = a[k];
      if (v === undefined || v === null) continue;
      if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new ConfigError(`SkrSideCarArgs.allowlist.${k} must be an array of strings`);
      out.allowlist[k] = v as string[];
    }
  }
  if (parsed.attest_maa_keys !== undefined && parsed.attest_maa_keys !== null) {
    const v = parsed.attest_maa_keys;
    if (typeof v !== 'string') throw new ConfigError('SkrSideCarArgs.attest_maa_keys must be "allow" or "refuse"');
    const mode = guarded(() => parseAttestMaaKeys(v, 'SkrSideCarArgs.attest_maa_keys'));
    if (mode) out.attest_maa_keys = mode;
  }
  return out;
}

/** Bounds on what one caller can make the sidecar do. */
export interface ServerLimits {
  /** Deadline for one request, covering every upstream call it makes. */
  requestDeadlineMs: number;
  /** /key/release and /attest/maa requests running at once; more wait in a queue. */
  maxInFlightReleases: number;
  /** Requests waiting for one of those slots (the wait counts against the deadline); more get 429. */
  maxQueuedReleases: number;
  /** Report requests waiting for the (serialised) device; more get 429. */
  maxQueuedReports: number;
  /** Nesting depth of request JSON. */
  maxJsonDepth: number;
  /** Time for a client to send its request headers / whole request (node's server timeouts). */
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  /** On SIGTERM, how long in-flight requests may still run before their sockets are closed. */
  shutdownGraceMs: number;
  /** Request body size (bytes) the routes accept; beyond it 413. */
  maxBodyBytes: number;
  /** One vault HTTP attempt; the SDK retries (2×, backoff + jitter, Retry-After) within the request deadline. */
  vaultAttemptTimeoutMs: number;
  /** Open client connections at once (SKR_MAX_CONNECTIONS); beyond it new ones are closed at once. */
  maxConnections: number;
  /** Idle keep-alive sockets are closed after this, well before headersTimeoutMs. */
  keepAliveTimeoutMs: number;
  /** One TPM command on a CVM (--tpm-timeout / SKR_TPM_TIMEOUT_SECONDS); past it the TPM connection is reopened. */
  tpmCommandTimeoutMs: number;
}

export const DEFAULT_LIMITS: Readonly<ServerLimits> = Object.freeze({
  requestDeadlineMs: 60_000,
  maxInFlightReleases: 16,
  maxQueuedReleases: 256,
  maxQueuedReports: 64,
  maxJsonDepth: 32,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  shutdownGraceMs: 10_000,
  maxBodyBytes: 1024 * 1024,
  vaultAttemptTimeoutMs: 30_000,
  maxConnections: 2048,
  keepAliveTimeoutMs: 2_000,
  tpmCommandTimeoutMs: 30_000,
});

/** What one `skr serve` process serves, as the reference's -server_type: the HTTP API or the gRPC key provider. */
export type ServerType = 'http' | 'grpc';
/** The reference's port for its gRPC key provider (what ocicrypt key-provider configs name). */
export const DEFAULT_GRPC_PORT = 50000;

export function parseServerType(s: string | undefined): ServerType {
  const v = (s ?? 'http').trim().toLowerCase();
  if (v === 'http' || v === 'grpc') return v;
  throw new ConfigError(`server type "${(s ?? '').slice(0, 40)}" is not http or grpc`);
}

/** SKR_GRPC_HOST: the address the gRPC key provider listens on (an IP literal; default 127.0.0.1). */
export function parseGrpcHost(s: string | undefined): string {
  if (s === undefined || s.trim() === '') return '127.0.0.1';
  const v = s.trim();
  if (isIP(v) === 0) throw new ConfigError(`SKR_GRPC_HOST "${v.slice(0, 60)}" is not an IP address`);
  return v;
}

export interface ServerConfig {
  /** Always loopback: the sidecar serves only its own container group. */
  host: '127.0.0.1';
  port: number;
  /** http (default) or grpc: one server type per process. */
  serverType: ServerType;
  /** Listen address of the gRPC key provider (SKR_GRPC_HOST; default 127.0.0.1). */
  grpcHost: string;
  logLevel: LogLevel;
  logFile?: string;
  simulate: boolean;
  securityPolicyFile?: string;
  args: SkrSideCarArgs;
  /** Directory for the on-disk collateral cache, when set. */
  certCacheDir?: string;
  /** Extra CA certificates (PEM) trusted for outbound HTTPS on top of the system roots. */
  extraCaPem: string[];
  /** IMDS origin for managed-identity tokens (default the real 169.254.169.254; `skr local` sets its emulator). */
  imdsEndpoint?: string;
  /** host:port vault endpoints to treat as Managed HSM although their names do not say so (local emulators). */
  managedHsmEndpoints: string[];
  /** host:port loopback vault emulators, whose challenge names Azure's resource on another domain. */
  loopbackVaultEndpoints: string[];
  /** Allowed maa_endpoint / akv_endpoint patterns and, when set, allowed kids. */
  allowedMaa: string[];
  allowedAkv: string[];
  allowedKids?: string[];
  /** With a kid allowlist: `allow` lets the attestation routes serve runtime data holding keys (default refuse). */
  attestMaaKeys?: AttestMaaKeys;
  /** Host names (any port) and Origins served besides loopback names; see src/common/host-guard.ts. */
  allowedHosts?: string[];
  allowedOrigins?: string[];
  /** When set, every route but /status needs `Authorization: Bearer <apiSecret>`. */
  apiSecret?: string;
  limits: ServerLimits;
  /** Wrapping-key pool and MAA token reuse (SKR_WRAPPING_KEY_POOL_SIZE, SKR_MAA_TOKEN_REUSE[_MARGIN_SECONDS]). */
  release: ReleaseTuning;
  /** Workload identity (AKS) settings when AZURE_FEDERATED_TOKEN_FILE is set; managed identity otherwise. */
  workloadIdentity?: WorkloadIdentitySettings;
  /** `enc` sent to the vault on every release (SKR_RELEASE_ENC; default RSA_AES_KEY_WRAP_256 = OAEP-SHA-256). */
  releaseEnc: ReleaseEnc;
  /** UVM_SECURITY_CONTEXT_DIR and the older UVM_* variables the security context falls back to. */
  securityContextEnv: SecurityContextEnv;
  /** --platform / SKR_PLATFORM (default auto). */
  platform: PlatformChoice;
  /** --tpm / SKR_TPM: the Azure CVM's TPM; default /dev/tpmrm0. */
  tpm?: TpmEndpoint;
}

export interface ConfigFlags {
  port?: string;
  /** http | grpc (--server-type; skr.sh maps ServerType to it). */
  serverType?: string;
  logLevel?: string;
  logFile?: string;
  simulate?: boolean;
  securityPolicy?: string;
  sidecarArgs?: string;
  certCacheDir?: string;
  /** Files holding extra CA certificates (PEM). */
  extraCaFiles?: string[];
  /** Per-request deadline in seconds. */
  requestDeadline?: string;
  /** auto | aci | azure-cvm. */
  platform?: string;
  /** tcp:HOST:PORT or a device path. */
  tpm?: string;
  /** Per TPM command, in seconds. */
  tpmTimeout?: string;
}

/** Comma/whitespace separated list from an env var; undefined when unset or blank. */
export function parseList(raw: string | undefined): string[] | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  return raw.split(/[,\s]+/).filter(Boolean);
}

/** Run a validator that throws plain Errors, as a ConfigError. */
function guarded<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
}

function checkAllowlists(cfg: { allowedMaa: string[]; allowedAkv: string[]; allowedKids?: string[] }): void {
  try {
    new EndpointAllowlist('maa', cfg.allowedMaa);
    new EndpointAllowlist('akv', cfg.allowedAkv);
    if (cfg.allowedKids) new KidAllowlist(cfg.allowedKids);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
}

function readSecret(env: NodeJS.ProcessEnv): string | undefined {
  let secret = env.SKR_API_SECRET;
  if (!secret && env.SKR_API_SECRET_FILE) {
    try {
      secret = fs.readFileSync(env.SKR_API_SECRET_FILE, 'utf8');
    } catch (e) {
      throw new ConfigError(`cannot read SKR_API_SECRET_FILE ${env.SKR_API_SECRET_FILE}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
  }
  if (secret === undefined || secret.trim() === '') return undefined;
  const s = secret.trim();
  if (s.length < 16 || /\s/.test(s)) throw new ConfigError('SKR_API_SECRET must be at least 16 characters without whitespace');
  return s;
}

export function parseDeadlineSeconds(s: string | undefined, fallbackMs: number, what = 'request deadline'): number {
  if (s === undefined || s.trim() === '') return fallbackMs;
  const n = Number(s.trim());
  if (!Number.isFinite(n) || n <= 0 || n > 3600) throw new ConfigError(`${what} "${s.slice(0, 20)}" is not a number of seconds from 0 to 3600`);
  return Math.round(n * 1000);
}

function readCaFiles(files: string[]): string[] {
  return files.map((f) => {
    let text: string;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch (e) {
      throw new ConfigError(`cannot read CA file ${f}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    if (!text.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(`CA file ${f} holds no PEM certificate`);
    return text;
  });
}

/** Workload identity settings from the environment @azure/identity's AKS path reads; undefined when not on AKS. */
export function workloadIdentityFromEnv(env: NodeJS.ProcessEnv = process.env): WorkloadIdentitySettings | undefined {
  if (!env.AZURE_FEDERATED_TOKEN_FILE) return undefined;
  return {
    tokenFilePath: env.AZURE_FEDERATED_TOKEN_FILE,
    ...(env.AZURE_CLIENT_ID ? { clientId: env.AZURE_CLIENT_ID } : {}),
    ...(env.AZURE_TENANT_ID ? { tenantId: env.AZURE_TENANT_ID } : {}),
    ...(env.AZURE_AUTHORITY_HOST ? { authorityHost: env.AZURE_AUTHORITY_HOST } : {}),
  };
}

/** Release fast-path settings from the environment (for `skr local`, which takes no other env settings). */
export function releaseTuningFromProcess(env: NodeJS.ProcessEnv = process.env): ReleaseTuning {
  return releaseTuningFromEnv(env);
}

/** SKR_RELEASE_ENC: one of the three key_hsm `enc` values; default RSA_AES_KEY_WRAP_256 (CVM-PROTOCOL §7). */
export function parseReleaseEnc(raw: string | undefined, source = 'SKR_RELEASE_ENC'): ReleaseEnc {
  if (raw === undefined || raw.trim() === '') return 'RSA_AES_KEY_WRAP_256';
  const v = raw.trim();
  if (!isReleaseEnc(v)) throw new ConfigError(`${source} "${v.slice(0, 64)}" is not one of ${RELEASE_ENCS.join(', ')}`);
  return v;
}

function securityContextEnvOf(env: NodeJS.ProcessEnv): SecurityContextEnv {
  const out: SecurityContextEnv = {};
  for (const k of SECURITY_CONTEXT_ENV) if (env[k] !== undefined) out[k] = env[k];
  return out;
}

export function parseMaxConnections(s: string | undefined): number {
  if (s === undefined || s.trim() === '') return DEFAULT_LIMITS.maxConnections;
  const n = Number(s.trim());
  if (!Number.isInteger(n) || n < 1 || n > 1_000_000) throw new ConfigError(`SKR_MAX_CONNECTIONS "${s.slice(0, 20)}" is not a whole number from 1 to 1000000`);
  return n;
}

/** Flags win over env; env follows the reference's names. */
export function loadServerConfig(flags: ConfigFlags, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const serverType = parseServerType(flags.serverType);
  const cfg: ServerConfig = {
    host: '127.0.0.1',
    port: parsePort(flags.port ?? env.Port, serverType === 'grpc' ? DEFAULT_GRPC_PORT : 8080),
    serverType,
    grpcHost: parseGrpcHost(env.SKR_GRPC_HOST),
    logLevel: parseLogLevel(flags.logLevel ?? env.LogLevel),
    simulate: flags.simulate === true,
    args: parseSkrSideCarArgs(flags.sidecarArgs ?? env.SkrSideCarArgs),
    managedHsmEndpoints: [],
    loopbackVaultEndpoints: [],
    extraCaPem: readCaFiles(flags.extraCaFiles ?? (env.SKR_EXTRA_CA_FILE ? [env.SKR_EXTRA_CA_FILE] : [])),
    allowedMaa: [],
    allowedAkv: [],
    limits: { ...DEFAULT_LIMITS },
    release: releaseTuningFromEnv(env),
    securityContextEnv: securityContextEnvOf(env),
    releaseEnc: parseReleaseEnc(env.SKR_RELEASE_ENC),
    platform: parsePlatform(flags.platform ?? env.SKR_PLATFORM),
  };
  const tpm = parseTpmEndpoint(flags.tpm ?? env.SKR_TPM);
  if (tpm) cfg.tpm = tpm;
  if (cfg.simulate && cfg.platform === 'azure-cvm') {
    throw new ConfigError('--simulate simulates an ACI container group; for a simulated Azure confidential VM run `skr local --platform azure-cvm`');
  }
  if (cfg.tpm && cfg.simulate) throw new ConfigError('--tpm does not go with --simulate (which simulates an ACI container group)');
  if (cfg.tpm && cfg.platform === 'aci') throw new ConfigError('--tpm only applies to an Azure confidential VM (--platform azure-cvm or auto)');
  const workload = workloadIdentityFromEnv(env);
  if (workload) cfg.workloadIdentity = workload;
  const lists = cfg.args.allowlist ?? {};
  cfg.allowedMaa = parseList(env.SKR_ALLOWED_MAA) ?? lists.maa ?? [...DEFAULT_MAA_ALLOWLIST];
  cfg.allowedAkv = parseList(env.SKR_ALLOWED_AKV) ?? lists.akv ?? [...DEFAULT_AKV_ALLOWLIST];
  const kids = parseList(env.SKR_ALLOWED_KIDS) ?? lists.kid;
  if (kids) cfg.allowedKids = kids;
  checkAllowlists(cfg);
  const attestMaaKeys = guarded(() => parseAttestMaaKeys(env.SKR_ATTEST_MAA_KEYS, 'SKR_ATTEST_MAA_KEYS')) ?? cfg.args.attest_maa_keys;
  if (attestMaaKeys) cfg.attestMaaKeys = attestMaaKeys;
  const hosts = parseList(env.SKR_ALLOWED_HOSTS) ?? lists.hosts;
  const origins = parseList(env.SKR_ALLOWED_ORIGINS) ?? lists.origins;
  guarded(() => hostGuardPolicy({ allowedHosts: hosts, allowedOrigins: origins }));
  if (hosts) cfg.allowedHosts = hosts;
  if (origins) cfg.allowedOrigins = origins;
  const secret = readSecret(env);
  if (secret) cfg.apiSecret = secret;
  cfg.limits.requestDeadlineMs = parseDeadlineSeconds(flags.requestDeadline ?? env.SKR_REQUEST_DEADLINE_SECONDS, DEFAULT_LIMITS.requestDeadlineMs);
  cfg.limits.maxConnections = parseMaxConnections(env.SKR_MAX_CONNECTIONS);
  cfg.limits.tpmCommandTimeoutMs = parseDeadlineSeconds(flags.tpmTimeout ?? env.SKR_TPM_TIMEOUT_SECONDS, DEFAULT_LIMITS.tpmCommandTimeoutMs, 'TPM command timeout');
  const logFile = flags.logFile ?? env.LogFile;
  if (logFile) cfg.logFile = logFile;
  if (flags.securityPolicy) cfg.securityPolicyFile = flags.securityPolicy;
  const cacheDir = flags.certCacheDir ?? env.SKR_CERT_CACHE_DIR;
  if (cacheDir) cfg.certCacheDir = cacheDir;
  if (cfg.securityPolicyFile && !cfg.simulate) {
    throw new ConfigError('--security-policy only applies to the simulated platform: add --simulate');
  }
  return Object.freeze(cfg);
}
