/**
 * Assembles and starts the sidecar: evidence source (device or explicit simulation), collateral
 * provider, express app, loopback listener. Used by `skr serve`, `skr local` and the tests alike.
 */
import * as fs from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { SecurityContextSource } from '../certs/sources/security-context';
import { collateralSourceFromArgs } from '../certs/sources/from-args';
import { readSecurityContext } from '../certs/thim';
import type { CollateralSource } from '../certs/types';
import { decodeBase64Strict } from '../common/bytes';
import { ConfigError, DeviceError } from '../common/errors';
import type { EvidenceSource } from '../snp/evidence';
import type { SimulatedPlatform } from '../snp/simulator';
import { CollateralProvider } from '../certs/provider';
import { createHttpsFetch } from '../common/https-fetch';
import { attemptHook, reportingFetch, reportingRequest } from '../common/telemetry';
import { TokenProvider } from '../akv/identity';
import { ReleaseJwsVerifier } from '../akv/jws';
import { KeyReleasePipeline } from '../akv/release';
import { startReleaseFastPath, type ReleaseTuning } from '../akv/release-tuning';
import { SoftwareKekSource } from '../akv/software-kek';
import type { KeyEncryptionKeySource } from '../akv/kek';
import type { Attester } from '../maa/attester';
import { LocalThimSource } from '../certs/sources/local-thim';
import type { TpmClient } from '../tpm';
import { TPM_PT } from '../tpm/constants';
import type { VtpmEvidence } from '../cvm/vtpm-evidence';
import { detectPlatform, type PlatformDetectOptions } from './platform';
import { KeyVaultRelease } from '../akv/vault-release';
import { SevSnpAttester } from '../maa/attester';
import { MaaClient } from '../maa/client';
import { registerSecret } from '../common/redact';
import { createApp } from './app';
import { hostGuardPolicy } from '../common/host-guard';
import { EndpointAllowlist, KidAllowlist } from './allowlist';
import { Semaphore } from './limits';
import { isLoopbackAddress } from './guard';
import { GuardedEvidenceSource, SidecarMetrics, SidecarTelemetry, UpstreamHealth } from './observe';
import { SidecarAttestation } from './attestation-service';
import type { ServerConfig, ServerType } from './config';
import { ReleaseGate } from './release-gate';
import type { GrpcLimits, RunningGrpc } from '../grpc/server';
import { createLogger, type Logger } from './logger';

export interface SidecarOptions {
  config: ServerConfig;
  logger?: Logger;
  /** Where to look for devices (tests point this at temp paths). */
  detect?: PlatformDetectOptions;
  /** Security-context directory: read from on real hosts; written by the simulator in simulate mode. */
  securityContextDir?: string;
  /** A ready-made simulated platform (simulate mode only); one is created from the config otherwise. */
  platform?: SimulatedPlatform;
  /** reference-info-base64 the simulator publishes; default: its own test-signed UVM endorsement. */
  referenceInfoBase64?: string;
  /** Wrapping-key pool and MAA token reuse over config.release (tests and the bench tune them). */
  release?: ReleaseTuning;
  /** Also serve the gRPC key provider on this port (0: any free one) beside the HTTP API (`skr local --grpc-port`). */
  grpcPort?: number;
  /** Bounds of the gRPC server (tests shorten its timeouts). */
  grpcLimits?: Partial<GrpcLimits>;
}

export interface RunningSidecar {
  /** The HTTP API's URL, or `grpc://host:port` when this process serves the gRPC key provider only. */
  url: string;
  port: number;
  /** http, or grpc (config.serverType): what `url` and `port` serve. */
  serverType: ServerType;
  /** The HTTP server (absent when the process serves gRPC only). */
  server?: Server;
  /** The gRPC key provider, when served (server type grpc, or `grpcPort`). */
  grpc?: RunningGrpc;
  evidence: EvidenceSource;
  /** `aci` (SEV-SNP device or its simulation) or `azure-cvm` (vTPM). */
  platformName: 'aci' | 'azure-cvm';
  securityContextDir?: string;
  platform?: SimulatedPlatform;
  logger: Logger;
  metrics: SidecarMetrics;
  health: UpstreamHealth;
  /** True when the simulator made `securityContextDir` in the temp dir: `close` removes it. */
  ownsSecurityContextDir: boolean;
  /** Stop accepting, let in-flight requests finish (up to limits.shutdownGraceMs), then close their sockets. */
  close(): Promise<void>;
}

/** The simulated policy file may hold the base64 ccePolicy or the Rego text itself. */
export function readSecurityPolicyFile(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read security policy ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const compact = text.replace(/\s+/g, '');
  if (compact === '') throw new ConfigError(`security policy ${file} is empty`);
  return decodeBase64Strict(compact) ? compact : Buffer.from(text, 'utf8').toString('base64');
}

interface TpmWatch {
  stop(): void;
}

/** Re-asked every this often while the TPM is not answering, so /status turns OK again once it does. */
const TPM_PROBE_INTERVAL_MS = 2_000;

/**
 * The CVM's TPM in /status (upstream `tpm`): unhealthy from the first command it does not answer (timeout,
 * device gone) until one is answered again. While unhealthy it is probed (a GetCapability through the
 * device gate), so recovery shows without waiting for a request.
 */
function watchTpm(tpm: TpmClient, gate: Semaphore, health: UpstreamHealth, logger: Logger): TpmWatch {
  health.setThreshold('tpm', 1);
  let timer: NodeJS.Timeout | undefined;
  let probing = false;
  const probe = () => {
    if (probing) return;
    probing = true;
    void gate
      .run(() => tpm.getProperty(TPM_PT.NV_BUFFER_MAX))
      .catch(() => undefined)
      .finally(() => {
        probing = false;
      });
  };
  tpm.observe((failure) => {
    if (failure) {
      if (health.healthy('tpm') !== false) logger.error('the TPM is not answering', { error: failure.message });
      health.failure('tpm', failure.message);
      if (!timer) {
        timer = setInterval(probe, TPM_PROBE_INTERVAL_MS);
        timer.unref();
      }
    } else {
      const was = health.healthy('tpm');
      if (was === false) logger.info('the TPM answers again');
      // Shown in /status once it has failed (as the other upstreams appear once used).
      if (was !== undefined) health.success('tpm');
      if (timer) clearInterval(timer);
      timer = undefined;
    }
  });
  return {
    stop: () => {
      if (timer) clearInterval(timer);
      timer = undefined;
    },
  };
}

export async function startSidecar(opts: SidecarOptions): Promise<RunningSidecar> {
  const { config } = opts;
  const logger = opts.logger ?? createLogger({ level: config.logLevel, file: config.logFile });
  registerSecret(config.apiSecret);
  let evidence: EvidenceSource;
  let platform: SimulatedPlatform | undefined;
  let contextDir = opts.securityContextDir;
  let cvmTpm: TpmClient | undefined;
  let cvmEvidence: VtpmEvidence | undefined;
  /** The CVM's TEE, from the HCL report's type (SEV-SNP or TDX). */
  let cvmTee: 'sevsnp' | 'tdx' | undefined;
  /** TDX: the TD quote of a TDREPORT from IMDS; bound to the outbound client once it exists. */
  let tdQuote: ((tdReport: Buffer, signal?: AbortSignal) => Promise<Buffer>) | undefined;
  let ownedContextDir: string | undefined;
  const removeOwnedContextDir = () => {
    if (ownedContextDir) fs.rmSync(ownedContextDir, { recursive: true, force: true });
  };
  if (config.simulate) {
    // The simulator and its test-only keys are loaded only here: `skr serve` without --simulate never loads them.
    const { SimulatedPlatform, simulatedUvmEndorsementBase64 } = await import('../snp/simulator');
    const { writeSecurityContext } = await import('./simulation');
    platform =
      opts.platform ??
      new SimulatedPlatform(config.securityPolicyFile ? { securityPolicyBase64: readSecurityPolicyFile(config.securityPolicyFile) } : {});
    if (!contextDir) {
      // Ours to remove: on close, or right away should the start fail.
      contextDir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-security-context-'));
      ownedContextDir = contextDir;
    }
    writeSecurityContext(contextDir, platform, opts.referenceInfoBase64 ?? simulatedUvmEndorsementBase64(platform.measurement));
    evidence = platform.evidenceSource();
    logger.warn('SIMULATION MODE: reports are signed by a test AMD chain that no relying party trusts', { securityContextDir: contextDir });
  } else {
    const detected = await detectPlatform(config.platform, config.tpm, { tpmTimeoutMs: config.limits.tpmCommandTimeoutMs, ...opts.detect });
    if (detected.name === 'aci') evidence = detected.evidence;
    else {
      cvmTpm = detected.tpm;
      // Loaded only on a CVM; the TPM client is shared by the evidence source and the attester.
      const { VtpmEvidence } = await import('../cvm/vtpm-evidence');
      const { HclEvidenceSource } = await import('../cvm/hcl-evidence-source');
      cvmEvidence = new VtpmEvidence(cvmTpm);
      const { hclTeeOf } = await import('../cvm/hcl');
      cvmTee = hclTeeOf(await cvmEvidence.readHclBytes());
      if (!cvmTee) throw new DeviceError('ERR_HCL_REPORT', 'NV 0x01400001 holds no HCL report of type 2 (SEV-SNP) or 4 (TDX)');
      if (cvmTee === 'tdx') {
        const { fetchTdQuote } = await import('../tdx/imds-quote');
        tdQuote = (r, signal) => fetchTdQuote(r, { baseUrl: config.imdsEndpoint, fetch: createHttpsFetch({ extraCaPem: config.extraCaPem }) }, signal);
      }
      evidence = new HclEvidenceSource(cvmEvidence);
      logger.info('Azure confidential VM', { tee: cvmTee === 'tdx' ? 'Intel TDX' : 'AMD SEV-SNP' });
    }
  }
  const platformName = cvmTpm ? 'azure-cvm' : 'aci';

  const metrics = new SidecarMetrics();
  const health = new UpstreamHealth();
  const telemetry = new SidecarTelemetry(metrics, health);
  const limits = config.limits;
  // One device call at a time, a bounded queue in front (429 beyond it).
  const deviceGate = new Semaphore(1, limits.maxQueuedReports, 'report requests', 1);
  const rawEvidence = evidence;
  evidence = new GuardedEvidenceSource(rawEvidence, deviceGate, telemetry);
  if (tdQuote) {
    // The IMDS call runs outside the device gate: the TPM is free while the host's quoting enclave works.
    const quote = tdQuote;
    const { TdQuoteEvidenceSource } = await import('../cvm/hcl-evidence-source');
    evidence = new TdQuoteEvidenceSource(evidence, (r) => telemetry.stage('collateral', () => quote(r)));
  }
  const releaseSlots = new Semaphore(limits.maxInFlightReleases, limits.maxQueuedReleases, 'key releases and MAA attestations', 1);

  // The parts of the release path (docs/architecture.md), each reporting through `telemetry`.
  const context = readSecurityContext({ ...(contextDir ? { dir: contextDir } : {}), env: config.securityContextEnv });
  // Collateral shares the bounded, redirect-free outbound client (and its extra CAs).
  const outbound = createHttpsFetch({ extraCaPem: config.extraCaPem });
  const fromArgs = collateralSourceFromArgs(config.args.certcache, { fetch: outbound, onAttempt: attemptHook(telemetry, 'collateral') });
  // On a CVM the VCEK chain comes from IMDS THIM unless a certcache is configured.
  const primary: CollateralSource = context.hostAmdCert
    ? new SecurityContextSource({ dir: context.dir, env: config.securityContextEnv })
    : cvmTpm && !config.args.certcache
      ? new LocalThimSource({ fetch: outbound, onAttempt: attemptHook(telemetry, 'collateral') })
      : fromArgs;
  const collateral = new CollateralProvider({
    evidence,
    primary,
    refresh: fromArgs,
    cache: config.certCacheDir ? { dir: config.certCacheDir } : undefined,
    telemetry,
  });
  const tuning = opts.release ?? config.release;
  // A CVM's KEK is the vTPM's key: no software wrapping keys to pre-generate there.
  const fastPath = startReleaseFastPath(platformName === 'azure-cvm' ? { ...tuning, wrappingKeyPoolSize: 0 } : tuning);
  const maa = new MaaClient({ fetch: outbound, userAgent: config.args.maaconfig?.user_agent, telemetry });
  let attester: Attester;
  let keks: KeyEncryptionKeySource;
  let tpmKeks: { close(): Promise<void> } | undefined;
  let tpmWatch: TpmWatch | undefined;
  if (cvmTpm && cvmEvidence) {
    tpmWatch = watchTpm(cvmTpm, deviceGate, health, logger);
    // Transient objects and sessions a previous process left (swtpm keeps them) would fill the TPM's slots.
    const flushed = await deviceGate.run(() => (cvmTpm as TpmClient).recoverHandles()).catch((e: unknown) => {
      logger.warn('could not list the TPM\'s transient handles at start-up', { error: (e as Error).message });
      return [];
    });
    if (flushed.length) logger.info('flushed TPM handles left by an earlier process', { handles: flushed.map((h) => `0x${h.toString(16)}`) });
    // The vTPM's ephemeral key is the KEK (CVM-PROTOCOL §7): same TPM connection, same gate as the
    // attester and the evidence source, so one TPM sequence runs at a time. The attester certifies the
    // KEK's loaded key, so a release never binds a key the KEK does not hold.
    const { TpmKekSource } = await import('../cvm/tpm-kek');
    const tpmKek = new TpmKekSource(cvmTpm, deviceGate);
    keks = tpmKek;
    tpmKeks = tpmKek;
    const { AzureGuestAttester } = await import('../cvm/guest-attester');
    const { GuestAttestation } = await import('../cvm/guest-attestation');
    attester = new AzureGuestAttester({
      guest: new GuestAttestation(cvmTpm, cvmEvidence, (message, meta) => logger.debug(message, meta)),
      chainFor: (report, signal) => collateral.chainForReport(report, signal),
      fetch: outbound,
      userAgent: config.args.maaconfig?.user_agent,
      tpmGate: deviceGate,
      telemetry,
      keks: tpmKek,
      ...(tdQuote ? { tdQuote } : {}),
    });
  } else {
    attester = new SevSnpAttester({ collateral, maa, referenceInfoBase64: context.referenceInfoBase64 });
    keks = new SoftwareKekSource(fastPath.wrappingKeyPool);
  }
  let tdxVm: Attester | undefined;
  if (cvmTee === 'tdx') {
    const { TdxVmAttester } = await import('../cvm/tdx-vm-attester');
    tdxVm = new TdxVmAttester({ evidence, maa, fetch: outbound });
  }
  const attestation = new SidecarAttestation({
    evidence,
    collateral,
    attester,
    referenceInfoBase64: context.referenceInfoBase64,
    platform: platformName,
    ...(cvmTee ? { tee: cvmTee } : {}),
    ...(tdxVm ? { tdxVm } : {}),
  });
  const tokens = new TokenProvider({
    clientId: config.args.identity?.client_id,
    ...(config.imdsEndpoint ? { imdsEndpoint: config.imdsEndpoint } : {}),
    ...(config.workloadIdentity ? { workload: config.workloadIdentity } : {}),
    extraCaPem: config.extraCaPem,
    telemetry,
  });
  const release = new KeyReleasePipeline({
    attester,
    keks,
    // SKR_RELEASE_ENC applies on a CVM (the vTPM decrypts with the OAEP hash it names); on ACI requests
    // that name no enc keep the pipeline default CKM_RSA_AES_KEY_WRAP, as the reference sidecar does.
    ...(platformName === 'azure-cvm' ? { enc: config.releaseEnc } : {}),
    vault: new KeyVaultRelease({
      tokens,
      // The SDK sets no per-attempt timeout of its own: bound each vault call here.
      fetch: reportingFetch(outbound, 'vault', telemetry, { timeoutMs: limits.vaultAttemptTimeoutMs, stage: 'vault' }),
      // The direct POST skips fetch's Response/Headers/stream objects; same bounds, attempts and stage.
      request: reportingRequest(outbound.request, 'vault', telemetry, { stage: 'vault' }),
      managedHsmEndpoints: config.managedHsmEndpoints,
      relaxedChallengeEndpoints: config.loopbackVaultEndpoints,
      attemptTimeoutMs: limits.vaultAttemptTimeoutMs,
    }),
    jws: new ReleaseJwsVerifier({ extraCaPem: config.extraCaPem }),
    maaTokenReuse: fastPath.maaTokenReuse,
    telemetry,
  });
  metrics.attach({ releases: releaseSlots, device: deviceGate, cache: () => collateral.stats() });
  let shuttingDown = false;
  const kidAllowlist = config.allowedKids ? new KidAllowlist(config.allowedKids) : undefined;
  // One gate for both APIs: the same allowlists, slots, deadline, audit line and counters.
  const gate = new ReleaseGate({
    release,
    logger,
    metrics,
    maaAllowlist: new EndpointAllowlist('maa', config.allowedMaa),
    akvAllowlist: new EndpointAllowlist('akv', config.allowedAkv),
    ...(kidAllowlist ? { kidAllowlist } : {}),
    deadlineMs: limits.requestDeadlineMs,
    releaseSlots,
  });
  const cleanUpAfterFailedStart = async () => {
    fastPath.close();
    outbound.destroy();
    removeOwnedContextDir();
    tpmWatch?.stop();
    await cvmTpm?.close().catch(() => undefined);
  };
  const grpcPort = config.serverType === 'grpc' ? config.port : opts.grpcPort;
  let grpc: RunningGrpc | undefined;
  if (grpcPort !== undefined) {
    // Loaded only when served: an HTTP-only sidecar never loads grpc-js.
    const { startGrpcServer } = await import('../grpc/server');
    const { KeyProvider } = await import('../grpc/key-provider');
    grpc = await startGrpcServer({
      keyProvider: new KeyProvider({ gate, attestation }),
      logger,
      metrics,
      host: config.grpcHost,
      port: grpcPort,
      limits: { maxMessageBytes: limits.maxBodyBytes, ...opts.grpcLimits },
      ...(config.apiSecret ? { apiSecret: config.apiSecret } : {}),
    }).catch(async (e: unknown) => {
      await cleanUpAfterFailedStart();
      throw e;
    });
    logger.info('gRPC key provider listening', { address: grpc.target, services: ['keyprovider.KeyProviderService', 'key_provider.KeyProviderService'] });
    if (!isLoopbackAddress(config.grpcHost)) logger.warn('SKR_GRPC_HOST is not a loopback address: the gRPC key provider serves callers beyond this container group', { host: config.grpcHost });
  }

  let server: Server | undefined;
  if (config.serverType === 'http') {
    const app = createApp({
      attestation,
      release,
      logger,
      metrics,
      health,
      gate,
      isClosing: () => shuttingDown,
      ...(config.attestMaaKeys ? { attestMaaKeys: config.attestMaaKeys } : {}),
      hostGuard: hostGuardPolicy({ allowedHosts: config.allowedHosts, allowedOrigins: config.allowedOrigins }),
      ...(config.apiSecret ? { apiSecret: config.apiSecret } : {}),
      ...(kidAllowlist ? { kidAllowlist } : {}),
      maxJsonDepth: limits.maxJsonDepth,
      maxBodyBytes: limits.maxBodyBytes,
    });

    server = await new Promise<Server>((resolve, reject) => {
      const s = app.listen(config.port, config.host);
      s.once('listening', () => resolve(s));
      s.once('error', (e: NodeJS.ErrnoException) =>
        reject(new ConfigError(`cannot listen on ${config.host}:${config.port}: ${e.code ?? e.message}`, e)),
      );
    }).catch(async (e: unknown) => {
      await grpc?.close(0);
      await cleanUpAfterFailedStart();
      throw e;
    });
    // Slow or stalled clients cannot hold a socket forever.
    server.headersTimeout = limits.headersTimeoutMs;
    server.requestTimeout = limits.requestTimeoutMs;
    server.keepAliveTimeout = limits.keepAliveTimeoutMs;
    server.maxConnections = limits.maxConnections;
  }
  const port = server ? (server.address() as AddressInfo).port : (grpc as RunningGrpc).port;
  const url = server ? `http://${config.host}:${port}` : `grpc://${(grpc as RunningGrpc).target}`;
  logger.info('sidecar listening', {
    url,
    platform: platformName,
    evidence: evidence.description,
    collateral: primary.name,
    allowedMaa: config.allowedMaa,
    allowedAkv: config.allowedAkv,
    ...(config.allowedKids ? { allowedKids: config.allowedKids, attestMaaKeys: config.attestMaaKeys ?? 'refuse' } : {}),
    ...(config.allowedHosts ? { allowedHosts: config.allowedHosts } : {}),
    ...(config.allowedOrigins ? { allowedOrigins: config.allowedOrigins } : {}),
    callerSecret: config.apiSecret ? 'required' : 'off',
  });
  if (config.allowedKids && config.attestMaaKeys === 'allow') {
    logger.warn('SKR_ATTEST_MAA_KEYS=allow: the attestation routes serve runtime data holding the caller\'s own keys; a token over such data releases keys outside the kid allowlist');
  }

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      shuttingDown = true;
      fastPath.close();
      tpmWatch?.stop();
      const httpClosed = new Promise<void>((done) => {
        if (!server) return done();
        // Requests still running get the grace period; then their sockets are closed.
        const s = server;
        const force = setTimeout(() => s.closeAllConnections(), limits.shutdownGraceMs);
        force.unref();
        s.close(() => {
          clearTimeout(force);
          done();
        });
        s.closeIdleConnections();
      });
      void Promise.all([httpClosed, grpc?.close(limits.shutdownGraceMs)]).then(() => {
        outbound.destroy();
        removeOwnedContextDir();
        // The TPM connection (one at a time on swtpm) is released with the server.
        // The KEK's loaded key is flushed first.
        void (tpmKeks?.close() ?? Promise.resolve())
          .catch(() => undefined)
          .then(() => cvmTpm?.close())
          .catch(() => undefined)
          .then(() => resolve());
      });
    }));
  return { url, port, serverType: config.serverType, server, ...(grpc ? { grpc } : {}), evidence, platformName, securityContextDir: contextDir, platform, logger, metrics, health, close, ownsSecurityContextDir: ownedContextDir !== undefined };
}

