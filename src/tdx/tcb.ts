/**
 * TDX TCB evaluation against verified collateral (./collateral.ts), following Intel's quote verification
 * library (TcbLevelCheck / TdxModuleCheck / QE identity check):
 *
 *   tcb-info-fmspc  the TCB info is for the PCK certificate's FMSPC and PCE id
 *   tcb-level       the first TCB level (Intel lists them newest first) whose SGX TCB components and
 *                   PCESVN are ≤ the PCK certificate's, and whose TDX TCB components are ≤ the quote's
 *                   TEE_TCB_SVN (from index 2 when TEE_TCB_SVN[1], the TDX module's major version, is
 *                   non-zero: bytes 0-1 are then judged by the module identity); none → refused
 *   tdx-module      MRSIGNERSEAM and masked SEAMATTRIBUTES match the module identity ("TDX_<major>" or
 *                   tdxModule for major 0); the module's ISVSVN (TEE_TCB_SVN[0]) level status
 *   qe-identity     MRSIGNER, ISVPRODID, masked MISCSELECT and ATTRIBUTES of the QE report; ISVSVN level
 *
 * The statuses converge as Intel's does, module first, then QE (a stale QE or module makes an up-to-date
 * platform OutOfDate); a Revoked result is returned, and callers refuse it. Not done: the TD report 1.5
 * relaunch check (TEE_TCB_SVN2), so a v5 quote is never said to be TDRelaunchAdvised by this code.
 */
import { VerificationError } from '../common/errors';
import type { TdxModuleIdentity, TdQeIdentity, TdxTcbInfo } from './collateral';
import type { PckInfo } from './pck';
import type { QeReport, TdQuoteBody } from './quote';

export type TdxTcbStatus =
  | 'UpToDate'
  | 'SWHardeningNeeded'
  | 'ConfigurationNeeded'
  | 'ConfigurationAndSWHardeningNeeded'
  | 'OutOfDate'
  | 'OutOfDateConfigurationNeeded'
  | 'TDRelaunchAdvised'
  | 'TDRelaunchAdvisedConfigurationNeeded'
  | 'Revoked';

const KNOWN: readonly string[] = [
  'UpToDate', 'SWHardeningNeeded', 'ConfigurationNeeded', 'ConfigurationAndSWHardeningNeeded', 'OutOfDate', 'OutOfDateConfigurationNeeded',
  'TDRelaunchAdvised', 'TDRelaunchAdvisedConfigurationNeeded', 'Revoked',
];

export interface TdxTcbEvaluation {
  status: TdxTcbStatus;
  /** The platform level's status before convergence with the QE and module statuses. */
  platformStatus: TdxTcbStatus;
  qeStatus: TdxTcbStatus;
  moduleStatus: TdxTcbStatus;
  tcbDate: string;
  advisoryIds: string[];
  fmspc: string;
  tcbEvaluationDataNumber: number;
  /** The earliest nextUpdate of the two documents. */
  collateralNextUpdate: Date;
}

function fail(step: string, message: string): never {
  throw new VerificationError(step, `${step}: ${message}`);
}

function status(step: string, s: string): TdxTcbStatus {
  if (!KNOWN.includes(s)) fail(step, `unknown TCB status "${s.slice(0, 40)}"`);
  return s as TdxTcbStatus;
}

const masked = (a: Buffer, mask: Buffer) => Buffer.from(a.map((b, i) => b & (mask[i] ?? 0)));

/** A stale QE or TDX module lowers an up-to-date platform to OutOfDate; Revoked anywhere is Revoked. */
function converge(platform: TdxTcbStatus, other: TdxTcbStatus): TdxTcbStatus {
  if (other === 'Revoked') return 'Revoked';
  if (other === 'OutOfDate' || other === 'OutOfDateConfigurationNeeded') {
    if (platform === 'UpToDate' || platform === 'SWHardeningNeeded') return 'OutOfDate';
    if (platform === 'ConfigurationNeeded' || platform === 'ConfigurationAndSWHardeningNeeded') return 'OutOfDateConfigurationNeeded';
  }
  return platform;
}

function levelFor<T extends { isvSvn: number; tcbStatus: string }>(step: string, levels: T[], svn: number): T {
  const l = levels.find((x) => x.isvSvn <= svn);
  if (!l) fail(step, `ISVSVN ${svn} is below every TCB level of the identity`);
  return l;
}

function moduleStatus(info: TdxTcbInfo, body: TdQuoteBody): { status: TdxTcbStatus; advisoryIds: string[] } {
  const svn = body.teeTcbSvn;
  const major = svn[1];
  if (major === 0) {
    const m = info.tdxModule;
    if (!m) fail('tdx-module', 'the TCB info has no tdxModule');
    if (!m.mrSigner.equals(body.mrSignerSeam)) fail('tdx-module', "MRSIGNERSEAM is not the TDX module signer of Intel's TCB info");
    if (!masked(body.seamAttributes, m.attributesMask).equals(masked(m.attributes, m.attributesMask))) fail('tdx-module', "masked SEAMATTRIBUTES differ from the TCB info's tdxModule");
    return { status: 'UpToDate', advisoryIds: [] };
  }
  const id = `TDX_${major.toString(16).toUpperCase().padStart(2, '0')}`;
  const ident: TdxModuleIdentity | undefined = info.tdxModuleIdentities.find((x) => x.id.toUpperCase() === id);
  if (!ident) fail('tdx-module', `no TDX module identity ${id} in the TCB info`);
  if (!ident.mrSigner.equals(body.mrSignerSeam)) fail('tdx-module', `MRSIGNERSEAM is not the signer of ${id}`);
  if (!masked(body.seamAttributes, ident.attributesMask).equals(masked(ident.attributes, ident.attributesMask))) fail('tdx-module', `masked SEAMATTRIBUTES differ from ${id}`);
  const l = levelFor('tdx-module', ident.tcbLevels, svn[0]);
  return { status: status('tdx-module', l.tcbStatus), advisoryIds: l.advisoryIds };
}

function qeStatus(qe: TdQeIdentity, r: QeReport): { status: TdxTcbStatus; advisoryIds: string[] } {
  if (!qe.mrSigner.equals(r.mrSigner)) fail('qe-identity', "the QE report's MRSIGNER is not the TD quoting enclave signer of Intel's QE identity");
  if (qe.isvProdId !== r.isvProdId) fail('qe-identity', `the QE report's ISVPRODID ${r.isvProdId} is not ${qe.isvProdId}`);
  const misc = Buffer.alloc(4);
  misc.writeUInt32LE(r.miscSelect >>> 0, 0);
  // Intel writes MISCSELECT as the big-endian hex of the little-endian field value.
  const miscBe = Buffer.from(misc).reverse();
  if (!masked(miscBe, qe.miscSelectMask).equals(masked(qe.miscSelect, qe.miscSelectMask))) fail('qe-identity', 'masked MISCSELECT differs from the QE identity');
  if (!masked(r.attributes, qe.attributesMask).equals(masked(qe.attributes, qe.attributesMask))) fail('qe-identity', 'masked ATTRIBUTES differ from the QE identity');
  const l = levelFor('qe-identity', qe.tcbLevels, r.isvSvn);
  return { status: status('qe-identity', l.tcbStatus), advisoryIds: l.advisoryIds };
}

export function evaluateTdxTcb(info: TdxTcbInfo, qe: TdQeIdentity, pck: PckInfo, body: TdQuoteBody, qeReport: QeReport): TdxTcbEvaluation {
  if (!pck.fmspc || !pck.tcb) fail('tcb-info-fmspc', 'the PCK certificate carries no readable FMSPC and TCB (Intel SGX extension)');
  if (info.fmspc !== pck.fmspc) fail('tcb-info-fmspc', `the TCB info is for FMSPC ${info.fmspc}, the PCK certificate's is ${pck.fmspc}`);
  if (pck.pceId !== undefined && info.pceId !== pck.pceId) fail('tcb-info-fmspc', `the TCB info is for PCE id ${info.pceId}, the PCK certificate's is ${pck.pceId}`);
  const tcb = pck.tcb;
  const svn = body.teeTcbSvn;
  const start = svn[1] > 0 ? 2 : 0;
  const level = info.tcbLevels.find(
    (l) => l.sgxComponents.every((c, i) => c <= tcb.sgxComponents[i]) && l.pceSvn <= tcb.pceSvn && l.tdxComponents.every((c, i) => i < start || c <= svn[i]),
  );
  if (!level) fail('tcb-level', `no TCB level of FMSPC ${info.fmspc} is met by this platform (PCK TCB ${tcb.sgxComponents.join('.')}, PCESVN ${tcb.pceSvn}; TEE_TCB_SVN ${svn.toString('hex')}): TCB not supported`);
  const platformStatus = status('tcb-level', level.tcbStatus);
  const mod = moduleStatus(info, body);
  const q = qeStatus(qe, qeReport);
  const result = converge(converge(platformStatus, mod.status), q.status);
  return {
    status: result,
    platformStatus,
    qeStatus: q.status,
    moduleStatus: mod.status,
    tcbDate: level.tcbDate,
    advisoryIds: [...new Set([...level.advisoryIds, ...mod.advisoryIds, ...q.advisoryIds])],
    fmspc: info.fmspc,
    tcbEvaluationDataNumber: Math.min(info.tcbEvaluationDataNumber, qe.tcbEvaluationDataNumber),
    collateralNextUpdate: info.nextUpdate < qe.nextUpdate ? info.nextUpdate : qe.nextUpdate,
  };
}
