/**
 * A simulated SEV-SNP platform that behaves like hardware: it signs ATTESTATION_REPORTs with a VCEK
 * (ECDSA P-384/SHA-384, r and s little-endian), issues that VCEK from a test AMD hierarchy carrying AMD's
 * extensions, binds HOST_DATA to the security policy, and hands out the certificate table of an extended
 * report. Everything is TEST ONLY: the chain is rooted in committed, public keys.
 */
import { createHash, createPrivateKey, createPublicKey, KeyObject, randomBytes, sign as cryptoSign } from 'node:crypto';
import { dersOfPem, pemOf } from '../../asn1/x509';
import { decodeBase64Strict } from '../../common/bytes';
import { InvalidInputError } from '../../common/errors';
import { CERT_GUIDS } from '../cert-table';
import type { CertTableEntry, Evidence, EvidenceSource, ReportRequest, ThimCertificates } from '../evidence';
import { buildReport, Len, REPORT_SIZE, ReportFields, SIGNATURE_OFFSET, SIGNED_LENGTH } from '../report';
import { encodeTcb, Product, TcbParts, tcbToHex } from '../tcb';
import { defaultChipId, defaultTcb, deriveVcekKey, mintAmdRoots, mintVcek, PRODUCT_INFO, type HwidForm } from './amd-chain';
import { DEFAULT_SECURITY_POLICY_BASE64 } from './default-policy';
import { TEST_ONLY_ARK_KEY_PEM, TEST_ONLY_ASK_KEY_PEM, TEST_ONLY_VCEK_KEY_PEM } from './test-only-keys';
import { TEST_ONLY_ROOTS } from './test-only-roots';

/** GUIDs of the certificate table (PROTOCOLS §3), under the name the simulator exported first. */
export { CERT_GUIDS as CERT_TABLE_GUID } from '../cert-table';

export const SIMULATED_DESCRIPTION = 'simulated SEV-SNP platform (test AMD chain)';

type KeyInput = KeyObject | string;

export interface SimulatedPlatformOptions {
  product?: Product;
  /** 64 bytes; default is deterministic per product (Turin: 8 significant bytes, then zeros). */
  chipId?: Buffer;
  /** TCB as parts (product layout) or as the packed u64; default realistic per product. */
  tcb?: TcbParts | bigint;
  /** 48 bytes; default deterministic. */
  measurement?: Buffer;
  /** Base64 of the security policy text (like ACI's ccePolicy); HOST_DATA = sha256(decoded). */
  securityPolicyBase64?: string;
  /** Guest policy; default 0x3001f (SMT allowed, ABI 0.31, no debug). */
  policy?: bigint;
  guestSvn?: number;
  familyId?: Buffer;
  imageId?: Buffer;
  /** 2 or later; default 3. Version 2 reports leave the CPUID bytes zero. */
  reportVersion?: number;
  /**
   * Other keys (PEM or KeyObject). ARK/ASK: a fresh root and intermediate are minted instead of the
   * committed ones. VCEK: used as-is for every TCB instead of the per-(chip, TCB) derived key.
   */
  keys?: { ark?: KeyInput; ask?: KeyInput; vcek?: KeyInput };
  /** How issued VCEKs carry the hwid extension: raw (as KDS does, the default) or DER OCTET STRING-wrapped. */
  hwidForm?: HwidForm;
}

/** Per-certificate choices for `vcekFor`: validity window and hwid form (default: the platform's). */
export interface VcekIssueOptions {
  notBefore?: Date;
  notAfter?: Date;
  hwidForm?: HwidForm;
}

/** A VCEK certificate with its key, as a platform at some TCB would have. */
export interface IssuedVcek {
  tcb: bigint;
  der: Buffer;
  pem: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

const FIRMWARE_VERSION = { major: 1, minor: 55, build: 21 } as const;

function toKey(k: KeyInput): KeyObject {
  return typeof k === 'string' ? createPrivateKey(k) : k;
}

function checkLen(name: string, b: Buffer, len: number): Buffer {
  if (b.length !== len) throw new InvalidInputError('ERR_SIMULATOR_OPTION', `${name} must be ${len} bytes, got ${b.length}`);
  return Buffer.from(b);
}

let defaultKeys: { ark: KeyObject; ask: KeyObject; vcekSeed: KeyObject } | undefined;
function testOnlyKeys(): { ark: KeyObject; ask: KeyObject; vcekSeed: KeyObject } {
  defaultKeys ??= {
    ark: createPrivateKey(TEST_ONLY_ARK_KEY_PEM),
    ask: createPrivateKey(TEST_ONLY_ASK_KEY_PEM),
    vcekSeed: createPrivateKey(TEST_ONLY_VCEK_KEY_PEM),
  };
  return defaultKeys;
}

export class SimulatedPlatform {
  readonly product: Product;
  readonly chipId: Buffer;
  readonly measurement: Buffer;
  readonly securityPolicyBase64: string;
  /** sha256 of the decoded security policy: what every report carries in HOST_DATA. */
  readonly hostData: Buffer;
  readonly policy: bigint;
  readonly guestSvn: number;
  readonly familyId: Buffer;
  readonly imageId: Buffer;
  readonly reportVersion: number;
  /** Random per platform, like the firmware's per-guest REPORT_ID. */
  readonly reportId: Buffer;
  readonly arkDer: Buffer;
  readonly askDer: Buffer;
  readonly arkPem: string;
  readonly askPem: string;
  /** sha256 of the ARK DER, lowercase hex: what a verifier pins to trust this simulated chain. */
  readonly arkFingerprint: string;

  private readonly askKey: KeyObject;
  private readonly fixedVcekKey?: KeyObject;
  private readonly vcekSeed: KeyObject;
  private readonly hwidForm: HwidForm;
  private current: IssuedVcek;

  constructor(opts: SimulatedPlatformOptions = {}) {
    this.product = opts.product ?? 'Milan';
    const info = PRODUCT_INFO[this.product];
    if (!info) throw new InvalidInputError('ERR_SIMULATOR_OPTION', `unknown product ${String(opts.product)}`);
    this.chipId = opts.chipId ? checkLen('chipId', opts.chipId, Len.chipId) : defaultChipId(this.product);
    this.measurement = opts.measurement
      ? checkLen('measurement', opts.measurement, Len.measurement)
      : createHash('sha384').update('skr-sidecar simulated launch measurement').digest();
    this.securityPolicyBase64 = opts.securityPolicyBase64 ?? DEFAULT_SECURITY_POLICY_BASE64;
    const policyText = decodeBase64Strict(this.securityPolicyBase64);
    if (!policyText) throw new InvalidInputError('ERR_SIMULATOR_OPTION', 'securityPolicyBase64 is not valid base64');
    this.hostData = createHash('sha256').update(policyText).digest();
    this.policy = opts.policy ?? 0x3001fn;
    this.guestSvn = opts.guestSvn ?? 0;
    this.familyId = opts.familyId ? checkLen('familyId', opts.familyId, Len.familyId) : Buffer.alloc(Len.familyId);
    this.imageId = opts.imageId ? checkLen('imageId', opts.imageId, Len.imageId) : Buffer.alloc(Len.imageId);
    this.reportVersion = opts.reportVersion ?? 3;
    if (!Number.isInteger(this.reportVersion) || this.reportVersion < 2) {
      throw new InvalidInputError('ERR_SIMULATOR_OPTION', `reportVersion must be 2 or later, got ${this.reportVersion}`);
    }
    this.reportId = randomBytes(Len.reportId);

    const defaults = testOnlyKeys();
    this.vcekSeed = defaults.vcekSeed;
    if (opts.keys?.ark !== undefined || opts.keys?.ask !== undefined) {
      const arkKey = opts.keys.ark !== undefined ? toKey(opts.keys.ark) : defaults.ark;
      this.askKey = opts.keys.ask !== undefined ? toKey(opts.keys.ask) : defaults.ask;
      const roots = mintAmdRoots(this.product, arkKey, this.askKey);
      this.arkDer = roots.arkDer;
      this.askDer = roots.askDer;
      this.arkPem = pemOf(this.arkDer);
      this.askPem = pemOf(this.askDer);
    } else {
      this.askKey = defaults.ask;
      const committed = TEST_ONLY_ROOTS[this.product];
      this.arkPem = committed.arkPem;
      this.askPem = committed.askPem;
      this.arkDer = dersOfPem(this.arkPem)[0];
      this.askDer = dersOfPem(this.askPem)[0];
    }
    this.arkFingerprint = createHash('sha256').update(this.arkDer).digest('hex');
    if (opts.keys?.vcek !== undefined) this.fixedVcekKey = toKey(opts.keys.vcek);
    this.hwidForm = opts.hwidForm ?? 'raw';

    const tcb = opts.tcb === undefined ? defaultTcb(this.product) : typeof opts.tcb === 'bigint' ? opts.tcb : encodeTcb(opts.tcb, this.product);
    this.current = this.vcekFor(tcb);
  }

  /** REPORTED_TCB (and current/committed/launch TCB) of every report this platform signs now. */
  get reportedTcb(): bigint {
    return this.current.tcb;
  }
  get vcekDer(): Buffer {
    return this.current.der;
  }
  get vcekPem(): string {
    return this.current.pem;
  }
  get vcekPublicKey(): KeyObject {
    return this.current.publicKey;
  }

  /** Issue a VCEK for `tcb` without changing the platform (e.g. a stale certificate for a mismatch test). */
  vcekFor(tcb: TcbParts | bigint, opts: VcekIssueOptions = {}): IssuedVcek {
    const t = typeof tcb === 'bigint' ? tcb : encodeTcb(tcb, this.product);
    const privateKey = this.fixedVcekKey ?? deriveVcekKey(this.vcekSeed, this.product, this.chipId, t);
    const publicKey = createPublicKey(privateKey);
    const der = mintVcek({
      product: this.product, chipId: this.chipId, tcb: t, vcekPublicKey: publicKey, askKey: this.askKey, askDer: this.askDer,
      hwidForm: opts.hwidForm ?? this.hwidForm,
      ...(opts.notBefore ? { notBefore: opts.notBefore } : {}),
      ...(opts.notAfter ? { notAfter: opts.notAfter } : {}),
    });
    return { tcb: t, der, pem: pemOf(der), privateKey, publicKey };
  }

  /**
   * Model a TCB change (firmware/microcode update): reports carry the new TCB from now on and the VCEK
   * is re-issued for it (with the new TCB's key, as on hardware). Returns the new VCEK.
   */
  reissueVcek(tcb: TcbParts | bigint): IssuedVcek {
    this.current = this.vcekFor(tcb);
    return this.current;
  }

  /** The report fields this platform would produce for a request, before signing. */
  reportFields(req: ReportRequest): ReportFields {
    const vmpl = req.vmpl ?? 0;
    if (!Number.isInteger(vmpl) || vmpl < 0 || vmpl > 3) throw new InvalidInputError('ERR_VMPL', `VMPL must be 0-3, got ${vmpl}`);
    if (req.reportData.length !== Len.reportData) {
      throw new InvalidInputError('ERR_REPORT_DATA', `REPORT_DATA must be ${Len.reportData} bytes, got ${req.reportData.length}`);
    }
    const tcb = this.current.tcb;
    const cpuid = this.reportVersion >= 3 ? PRODUCT_INFO[this.product].cpuid : { family: 0, model: 0, stepping: 0 };
    return {
      version: this.reportVersion,
      guestSvn: this.guestSvn,
      policy: this.policy,
      familyId: this.familyId,
      imageId: this.imageId,
      vmpl,
      signatureAlgo: 1,
      currentTcb: tcb,
      platformInfo: 1n, // SMT enabled, as on the real Milan vectors
      signerInfo: 0, // signed by the VCEK
      reportData: Buffer.from(req.reportData),
      measurement: this.measurement,
      hostData: this.hostData,
      idKeyDigest: Buffer.alloc(Len.idKeyDigest),
      authorKeyDigest: Buffer.alloc(Len.authorKeyDigest),
      reportId: this.reportId,
      reportIdMa: Buffer.alloc(Len.reportIdMa, 0xff), // no migration agent
      reportedTcb: tcb,
      cpuidFamId: cpuid.family,
      cpuidModId: cpuid.model,
      cpuidStep: cpuid.stepping,
      chipId: this.chipId,
      committedTcb: tcb,
      currentBuild: FIRMWARE_VERSION.build,
      currentMinor: FIRMWARE_VERSION.minor,
      currentMajor: FIRMWARE_VERSION.major,
      committedBuild: FIRMWARE_VERSION.build,
      committedMinor: FIRMWARE_VERSION.minor,
      committedMajor: FIRMWARE_VERSION.major,
      launchTcb: tcb,
    };
  }

  /** Sign a report made of this platform's defaults overridden by `fields` (e.g. another TCB). */
  signReport(fields: ReportFields = {}): Buffer {
    const base = this.reportFields({ reportData: fields.reportData ?? Buffer.alloc(Len.reportData), vmpl: fields.vmpl ?? 0 });
    return this.sign(buildReport({ ...base, ...fields, signatureR: undefined, signatureS: undefined }));
  }

  /**
   * Sign bytes [0, 0x2A0) of an arbitrary 1184-byte report with the current VCEK, as the firmware does:
   * ECDSA P-384/SHA-384, r and s little-endian in 72-byte fields at 0x2A0, the rest zero.
   */
  sign(report: Buffer, key: KeyObject = this.current.privateKey): Buffer {
    if (report.length !== REPORT_SIZE) throw new InvalidInputError('ERR_REPORT_LENGTH', `a report is ${REPORT_SIZE} bytes, got ${report.length}`);
    const out = Buffer.from(report);
    const sig = cryptoSign('sha384', out.subarray(0, SIGNED_LENGTH), { key, dsaEncoding: 'ieee-p1363' });
    out.fill(0, SIGNATURE_OFFSET);
    Buffer.from(sig.subarray(0, 48)).reverse().copy(out, SIGNATURE_OFFSET);
    Buffer.from(sig.subarray(48, 96)).reverse().copy(out, SIGNATURE_OFFSET + Len.sigComponent);
    return out;
  }

  /** A fresh signed report for a request, with the certificate table when `extended`. */
  getEvidence(req: ReportRequest): Evidence {
    const report = this.sign(buildReport(this.reportFields(req)));
    return req.extended ? { report, certTable: this.certTable() } : { report };
  }

  /** VCEK, ASK, ARK as an extended report's certificate table carries them (DER). */
  certTable(): CertTableEntry[] {
    return [
      { guid: CERT_GUIDS.vcek, kind: 'vcek', data: Buffer.from(this.current.der) },
      { guid: CERT_GUIDS.ask, kind: 'ask', data: Buffer.from(this.askDer) },
      { guid: CERT_GUIDS.ark, kind: 'ark', data: Buffer.from(this.arkDer) },
    ];
  }

  /** The THIM / `host-amd-cert-base64` JSON for this platform, as Azure would serve it. */
  thimCertificates(): ThimCertificates {
    return {
      vcekCert: this.current.pem,
      certificateChain: this.askPem + this.arkPem,
      tcbm: tcbToHex(this.current.tcb),
      cacheControl: '86400',
    };
  }

  evidenceSource(): EvidenceSource {
    return new SimulatedEvidenceSource(this);
  }
}

/** The platform behind the EvidenceSource interface (kind `simulated`). */
export class SimulatedEvidenceSource implements EvidenceSource {
  readonly kind = 'simulated' as const;
  readonly description = SIMULATED_DESCRIPTION;
  constructor(readonly platform: SimulatedPlatform) {}

  async getReport(req: ReportRequest): Promise<Evidence> {
    return this.platform.getEvidence(req);
  }
}
