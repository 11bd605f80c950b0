/**
 * `skr doctor`: the preflight to run in the container or on the VM before opening a ticket. One line per
 * check, ok or FAIL with the fix, each check bounded in time:
 *   platform    the SEV-SNP device (or the vTPM and its HCL report) answers
 *   collateral  THIM / the security context gives the VCEK chain, and it verifies the report
 *   identity    a token for the vault's resource, and which identity it names
 *   maa         MAA is reachable and issues a token for this platform's evidence
 *   vault       the vault is reachable and accepts the identity (reads a key)
 *   key         (--kid) the key exists, is exportable, its release policy can be read
 *   policy      (--kid) a fresh MAA token satisfies that policy; when not, the explanation a 403 carries
 * The parts are the ones `skr release` builds (../release-setup.ts); nothing is released. Exit 0 only when
 * every check passes; 1 naming the first failure; 2 for a usage error.
 */
import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { decodeJwt } from 'jose';
import type { KeyPolicyRead, ReleaseExplanation } from '../../akv/release-explanation';
import { explainRefusal, GET_PERMISSION_FIX } from '../../akv/release-explanation';
import { explainVerdict } from '../../akv/policy-explain';
import { parseKid } from '../../akv/release';
import { TrustStore } from '../../certs/roots';
import { verifyReport } from '../../certs/verify';
import { clip } from '../../common/clip';
import { parseEndpoint, type Endpoint } from '../../common/endpoint';
import { SkrError } from '../../common/errors';
import { createHttpsFetch } from '../../common/https-fetch';
import { describeErrorChain } from '../../common/redact';
import { parseReport } from '../../snp/report';
import { tcbToHex } from '../../snp/tcb';
import { loadServerConfig } from '../../server/config';
import { CliError, type Out } from '../io';
import { DEFAULT_TPM, detectPlatform, readCaFiles, RELEASE_OPTIONS, vaultParts, type Platform, type PlatformChoice } from '../release-setup';

export const usage =
  'skr doctor --maa HOST --akv HOST [--kid NAME[/VERSION]] [--platform auto|aci|azure-cvm] [--tpm /dev/tpmrm0|tcp:127.0.0.1:PORT] [--simulate]\n' +
  '      [--imds URL] [--client-id ID] [--ca FILE] [--managed-hsm] [--state-file FILE] [--timeout SECONDS] [--json]\n' +
  '      preflight on this VM/container: platform, collateral, identity, MAA, vault and (--kid) the key and its release policy,\n' +
  '      one line per check with the fix; --state-file takes endpoints, CA and platform from `skr local`. Exit 0 only when all pass.';

export type CheckName = 'platform' | 'collateral' | 'identity' | 'maa' | 'vault' | 'key' | 'policy';
export type CheckStatus = 'ok' | 'FAIL' | 'skip';

export interface CheckResult {
  name: CheckName;
  status: CheckStatus;
  detail: string;
  /** What to do about a FAIL. */
  fix?: string;
  /** policy: why the fresh token does not satisfy the key's release policy (the shape of a 403's `explanation`). */
  explanation?: ReleaseExplanation;
}

/** What `--json` prints. */
export interface DoctorReport {
  ok: boolean;
  /** The first check that failed (null when all passed). */
  firstFailure: CheckName | null;
  checks: CheckResult[];
}

const DEFAULT_TIMEOUT_S = 30;
const MAX_STATE_FILE_BYTES = 64 * 1024;
/** A key name no vault holds: GET on it proves the vault answers and accepts the identity (404, not 401/403). */
const PROBE_KEY = 'skr-doctor-probe';

/** A check's failure, with its fix. */
class CheckFailed extends Error {
  constructor(message: string, readonly fix: string, readonly explanation?: ReleaseExplanation) {
    super(message);
  }
}

function messageOf(e: unknown): string {
  if (e instanceof CheckFailed) return e.message;
  const text = e instanceof SkrError ? `${e.code}: ${describeErrorChain(e)}` : e instanceof Error ? describeErrorChain(e) : String(e);
  return clip(text, 400);
}

/** `fn` under its own deadline: the signal aborts, and the check fails even if `fn` ignores the signal. */
async function bounded<T>(seconds: number, what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      ac.abort(new Error('timeout'));
      reject(new Error(`${what} did not answer within ${seconds} s`));
    }, seconds * 1000);
  });
  try {
    return await Promise.race([fn(ac.signal), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

interface LocalStateFile {
  platform?: string;
  maaEndpoint?: string;
  vaultEndpoint?: string;
  hsmEndpoint?: string;
  imdsUrl?: string;
  caCertPath?: string;
  tpm?: { endpoint?: string };
}

/** `skr local`'s state file (written by that command; read here without loading any emulator). */
function readStateFile(file: string): LocalStateFile {
  let text: string;
  try {
    const st = fs.statSync(file);
    if (st.size > MAX_STATE_FILE_BYTES) throw new CliError(`--state-file ${file} is ${st.size} bytes: not a state file of skr local`);
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`cannot read --state-file ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new CliError(`--state-file ${file} is not JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new CliError(`--state-file ${file} is not a JSON object`);
  const o = v as Record<string, unknown>;
  const str = (k: string): string | undefined => {
    if (o[k] === undefined) return undefined;
    if (typeof o[k] !== 'string') throw new CliError(`--state-file ${file}: ${k} is not a string`);
    return o[k] as string;
  };
  const tpm = o.tpm as { endpoint?: unknown } | undefined;
  return {
    platform: str('platform'),
    maaEndpoint: str('maaEndpoint'),
    vaultEndpoint: str('vaultEndpoint'),
    hsmEndpoint: str('hsmEndpoint'),
    imdsUrl: str('imdsUrl'),
    caCertPath: str('caCertPath'),
    ...(tpm && typeof tpm === 'object' && typeof tpm.endpoint === 'string' ? { tpm: { endpoint: tpm.endpoint } } : {}),
  };
}

/** The claims of a token worth naming: identifiers, never the token. */
function identityOf(token: string): string {
  try {
    const c = decodeJwt(token) as Record<string, unknown>;
    const parts: string[] = [];
    for (const k of ['oid', 'appid', 'azp', 'tid'] as const) if (typeof c[k] === 'string') parts.push(`${k}=${clip(c[k] as string, 64)}`);
    if (typeof c.xms_mirid === 'string') parts.push(`identity ${clip(c.xms_mirid.split('/').pop() ?? '', 64)}`);
    return parts.length ? parts.join(', ') : 'a token without oid/appid claims';
  } catch {
    return 'a token that is not a JWT';
  }
}

function maaSummary(token: string): string {
  const c = decodeJwt(token) as Record<string, unknown>;
  const tee = c['x-ms-isolation-tee'] as Record<string, unknown> | undefined;
  const type = [c['x-ms-attestation-type'], tee?.['x-ms-attestation-type']].filter((x) => typeof x === 'string').join('/');
  const status = c['x-ms-compliance-status'] ?? tee?.['x-ms-compliance-status'];
  return `iss ${clip(String(c.iss), 120)}, attestation type ${clip(type || '?', 40)}${typeof status === 'string' ? `, ${clip(status, 40)}` : ''}`;
}

/** TDX: the quote IMDS makes of this TDREPORT verifies to Intel's pinned root and carries this TDREPORT. */
async function checkTdQuote(p: Platform, tdReportBytes: Buffer, signal: AbortSignal): Promise<string> {
  const { verifyTdQuote, checkTdReportBinding } = await import('../../tdx/verify');
  const { IntelTrustStore } = await import('../../tdx/roots');
  const { parseTdReport } = await import('../../tdx/tdreport');
  const roots = p.simulated ? [(await import('../../tdx/simulator')).TEST_ONLY_INTEL_ROOT_PEM] : [];
  const { quote, from } = await (p.tdQuote as NonNullable<Platform['tdQuote']>)(tdReportBytes, signal);
  const v = verifyTdQuote(quote, { trust: new IntelTrustStore({ extraRootsPem: roots }) });
  checkTdReportBinding(v.quote, parseTdReport(tdReportBytes));
  return `TD quote from ${from} verifies to ${v.rootLabel}${p.simulated ? ' (SIMULATED test-only root)' : ''} and carries this TDREPORT; TCB status not checked (needs Intel's TCB info for FMSPC ${v.pckInfo.fmspc ?? '?'})`;
}

export async function doctorCommand(args: string[], io: Out): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        ...RELEASE_OPTIONS,
        platform: { type: 'string' },
        'state-file': { type: 'string' },
        timeout: { type: 'string' },
        json: { type: 'boolean' },
      },
    });
  } catch (e) {
    throw new CliError(`${(e as Error).message}\nusage: ${usage}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length) throw new CliError(`unexpected ${JSON.stringify(positionals[0])}\nusage: ${usage}`);
  const state = values['state-file'] ? readStateFile(values['state-file']) : undefined;
  const maaRaw = values.maa ?? state?.maaEndpoint;
  const akvRaw = values.akv ?? (values['managed-hsm'] ? state?.hsmEndpoint : state?.vaultEndpoint);
  if (!maaRaw || !akvRaw) throw new CliError(`give --maa and --akv (or --state-file of skr local)\nusage: ${usage}`);
  let maa: Endpoint;
  let akv: Endpoint;
  try {
    maa = parseEndpoint('maa', maaRaw);
    akv = parseEndpoint('akv', akvRaw);
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  const kid = values.kid !== undefined ? (() => {
    try {
      return parseKid(values.kid as string);
    } catch (e) {
      throw new CliError((e as Error).message);
    }
  })() : undefined;
  const seconds = values.timeout === undefined ? DEFAULT_TIMEOUT_S : Number(values.timeout);
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 600) throw new CliError(`--timeout ${values.timeout}: give seconds, 1 to 600`);

  const choice = platformChoice(values, state);
  const imds = values.imds ?? state?.imdsUrl;
  const extraCaPem = readCaFiles([...(values.ca ?? []), ...(state?.caCertPath ? [state.caCertPath] : [])]);
  const settings = loadServerConfig({ port: '0' });

  const fetch = createHttpsFetch({ extraCaPem });
  const { tokens, vault } = vaultParts({ akv, extraCaPem, ...(values['client-id'] ? { clientId: values['client-id'] } : {}), ...(imds ? { imds } : {}), ...(values['managed-hsm'] ? { managedHsm: true } : {}) }, fetch);
  const results: CheckResult[] = [];
  const passed = (n: CheckName) => results.some((r) => r.name === n && r.status === 'ok');
  async function check(name: CheckName, needs: CheckName[], fix: string, fn: (signal: AbortSignal) => Promise<string>): Promise<void> {
    const missing = needs.filter((n) => !passed(n));
    if (missing.length) {
      results.push({ name, status: 'skip', detail: `needs ${missing.join(', ')}` });
      return;
    }
    try {
      results.push({ name, status: 'ok', detail: await bounded(seconds, name, fn) });
    } catch (e) {
      const f = e instanceof CheckFailed ? e : undefined;
      results.push({ name, status: 'FAIL', detail: messageOf(e), fix: f?.fix ?? fix, ...(f?.explanation ? { explanation: f.explanation } : {}) });
    }
  }

  let platform: Platform | undefined;
  let report: Buffer | undefined;
  let maaToken: string | undefined;
  let keyRead: KeyPolicyRead | undefined;
  try {
    await check('platform', [], 'run inside a confidential container group (SEV-SNP: /dev/sev-guest or configfs-tsm) or on an Azure confidential VM ' +
      `(vTPM ${DEFAULT_TPM}, as root or in group tss); for a local stack give --state-file or --simulate`, async (signal) => {
      platform = await detectPlatform(choice, fetch, settings.securityContextEnv);
      const ev = await platform.evidence(signal);
      report = ev.report;
      if (platform.tee === 'tdx') {
        const { parseTdReport } = await import('../../tdx/tdreport');
        return `${platform.name}: ${ev.what} answered (MRTD ${parseTdReport(ev.report).mrTd.toString('hex').slice(0, 16)}…)`;
      }
      const r = parseReport(ev.report);
      return `${platform.name}: ${ev.what} answered (reported TCB ${tcbToHex(r.reportedTcb)}, VMPL ${r.vmpl})`;
    });

    const collateralFix = platform?.tee === 'tdx'
      ? 'the VM must reach IMDS (169.254.169.254): /acc/tdquote turns the TDREPORT into a TD quote signed by the quoting enclave'
      : platform?.name.includes('confidential VM')
        ? 'the VM must reach IMDS (169.254.169.254): THIM serves the VCEK chain of this TCB'
        : 'the container group\'s security context (UVM_HOST_AMD_CERTIFICATE / host-amd-cert-base64) or THIM must give the VCEK chain of this TCB';
    await check('collateral', ['platform'], collateralFix, async (signal) => {
      const p = platform as Platform;
      if (p.tee === 'tdx' && p.tdQuote) return checkTdQuote(p, report as Buffer, signal);
      const { chain, from } = await p.collateral(report as Buffer, signal);
      const roots = p.simulated ? Object.values((await import('../../snp/simulator')).TEST_ONLY_ROOTS).map((r) => r.arkPem) : [];
      const v = verifyReport(report as Buffer, chain, new TrustStore({ extraRootsPem: roots }));
      return `VCEK chain from ${from} verifies the report (${v.product}${p.simulated ? ', SIMULATED test-only roots' : ''})`;
    });

    const resource = vault.resourceFor(akv);
    await check('identity', [], `assign a managed identity to the VM or container group${values['client-id'] ? '' : ' (a user-assigned one: --client-id)'}; IMDS must be reachable`, async (signal) => {
      const t = await tokens.getAccessToken(resource, signal);
      return `${tokens.mode} token for ${resource}: ${identityOf(t.token)}`;
    });

    await check('maa', ['platform', 'collateral'], `check --maa ${maa.host} (the MAA instance of the key's release policy) and that this machine reaches it (DNS, egress 443)`, async (signal) => {
      const p = platform as Platform;
      const kek = await p.keks.take();
      try {
        maaToken = await p.attester.attest(maa, kek.runtimeData, signal);
      } catch (e) {
        const m = messageOf(e);
        throw new CheckFailed(m.includes(maa.host) ? m : `MAA ${maa.host}: ${m}`, `check --maa ${maa.host} (the MAA instance of the key's release policy) and that this machine reaches it (DNS, egress 443)`);
      }
      return `MAA ${maa.host} issued a token: ${maaSummary(maaToken)}`;
    });

    await check('vault', ['identity'], `check --akv ${akv.host} and that this machine reaches it (DNS, egress 443, the vault's network rules)`, async (signal) => {
      const read = await vault.readKey(akv, kid?.name ?? PROBE_KEY, kid?.version, undefined, signal);
      if (kid) keyRead = read;
      if (read.ok || read.reason === 'not-found') return `vault ${akv.host} answered and accepts the identity (${resource})`;
      if (read.reason === 'forbidden') throw new CheckFailed(`vault ${akv.host} answered, but the identity may not read keys (needed to explain a refused release and to check a key): ${read.detail}`, GET_PERMISSION_FIX);
      if (read.status === 401) throw new CheckFailed(`vault ${akv.host} did not accept the identity's token: ${read.detail}`, 'the identity must be in the vault\'s tenant, and the token for the vault\'s resource (--managed-hsm for a Managed HSM)');
      throw new CheckFailed(read.detail.includes(akv.host) ? read.detail : `vault ${akv.host}: ${read.detail}`, `check --akv ${akv.host} and that this machine reaches it (DNS, egress 443, the vault's network rules)`);
    });

    if (kid) {
      const kidText = `${kid.name}${kid.version ? `/${kid.version}` : ''}`;
      await check('key', ['vault'], '', async () => {
        const read = keyRead as KeyPolicyRead;
        if (!read.ok) throw new CheckFailed(read.detail, `import the key (skr import-key) or check --kid ${kidText}`);
        if (!read.exportable) throw new CheckFailed(`key ${kidText} is not exportable`, 'create or import the key exportable, with a release policy (skr import-key)');
        if (!read.policy) throw new CheckFailed(`key ${kidText} has no release policy`, 'create or import the key exportable, with a release policy (skr import-key)');
        return `key ${read.keyId} exists, is exportable, and its release policy was read (${read.policy.anyOf.length} authorit${read.policy.anyOf.length === 1 ? 'y' : 'ies'})`;
      });
      await check('policy', ['maa', 'key'], '', async () => {
        const read = keyRead as Extract<KeyPolicyRead, { ok: true }>;
        const claims = decodeJwt(maaToken as string) as Record<string, unknown>;
        const verdict = explainVerdict(read.policy as NonNullable<typeof read.policy>, claims);
        if (verdict.granted) return `a fresh MAA token satisfies the release policy of ${kidText} (anyOf[${verdict.closestBranch?.index ?? 0}])`;
        const explanation = explainRefusal(read, maaToken as string, '');
        throw new CheckFailed(explanation.summary, explanation.hints.length ? explanation.hints.join('; ') : 'change the key\'s release policy or the deployment so the token\'s claims satisfy it (skr policy explain)', explanation);
      });
    }
  } finally {
    await (platform as Platform | undefined)?.close();
    fetch.destroy();
  }

  const first = results.find((r) => r.status === 'FAIL');
  const out: DoctorReport = { ok: first === undefined && results.every((r) => r.status === 'ok'), firstFailure: first?.name ?? null, checks: results };
  if (values.json) {
    io.out(JSON.stringify(out, null, 2));
  } else {
    for (const r of results) {
      io.out(`${r.status.padEnd(4)}  ${r.name.padEnd(10)}  ${r.detail}`);
      if (r.fix) io.out(`${' '.repeat(18)}fix: ${r.fix}`);
    }
  }
  if (first) {
    io.err(`skr doctor: FAILED at ${first.name}: ${first.detail}`);
    return 1;
  }
  io.err(`skr doctor: all ${results.length} checks passed`);
  return 0;
}

/** --platform / --tpm / --simulate, or the state file's platform; conflicting choices are a usage error. */
function platformChoice(v: { platform?: string; tpm?: string; simulate?: boolean; imds?: string }, state: LocalStateFile | undefined): PlatformChoice {
  const imds = v.imds ?? state?.imdsUrl;
  const base: PlatformChoice = imds ? { imds } : {};
  const kind = v.platform ?? (state?.platform === 'azure-cvm' ? 'azure-cvm' : state?.platform === 'aci' ? 'aci' : 'auto');
  if (!['auto', 'aci', 'azure-cvm'].includes(kind)) throw new CliError(`--platform ${kind}: give auto, aci or azure-cvm`);
  if (kind === 'aci' && v.tpm) throw new CliError('--platform aci takes no --tpm');
  if (kind === 'azure-cvm' && v.simulate) throw new CliError('--platform azure-cvm takes --tpm, not --simulate');
  if (kind === 'azure-cvm') return { ...base, tpm: v.tpm ?? state?.tpm?.endpoint ?? DEFAULT_TPM };
  // A state file of an aci stack means its simulated platform.
  const simulate = v.simulate === true || (!v.tpm && state?.platform === 'aci');
  return { ...base, ...(v.tpm ? { tpm: v.tpm } : {}), ...(simulate ? { simulate: true } : {}) };
}
