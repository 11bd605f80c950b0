/**
 * TEST ONLY: a simulated Intel TDX machine for the local stack: a TD module that writes TDREPORTs for
 * one TD (fixed measurements, a MAC only this process can make, as the CPU's is only checkable on the
 * same CPU) and a quoting enclave that turns a TDREPORT of this machine into a DCAP quote v4 or v5 signed by
 * a per-process attestation key, its QE report signed by the simulated PCK key (./chain.ts). Nothing it
 * makes verifies against Intel's pinned root.
 */
import { createHash, createHmac, generateKeyPairSync, randomBytes, sign as cryptoSign, timingSafeEqual, type KeyObject } from 'node:crypto';
import { InvalidInputError } from '../../common/errors';
import { CERT_DATA_PCK_CHAIN, CERT_DATA_QE_REPORT, INTEL_QE_VENDOR_ID, SGX_REPORT_BODY_SIZE, TD_BODY_10_SIZE } from '../quote';
import { buildTdReport, parseTdReport, tdReportHashesMatch, TdReportOff, type TdMeasurements } from '../tdreport';
import { simulatedIntelKeys, simulatedPckChainPem } from './chain';

const SIM_TAG = (label: string, len: number) => createHash('sha384').update(`skr-sidecar simulated TDX ${label}`).digest().subarray(0, len);

/** MRSIGNER and ISVPRODID of the simulated quoting enclave (what its simulated QE identity names). */
export const SIMULATED_QE_MRSIGNER = SIM_TAG('QE MRSIGNER', 32);
export const SIMULATED_QE_ISVPRODID = 2;

/** The simulated TD's measurements (stable, recognisable in decodes and policies). */
export const SIMULATED_TD_MEASUREMENTS: Omit<TdMeasurements, 'reportData'> = {
  teeTcbSvn: Buffer.from('03000600000000000000000000000000', 'hex'),
  mrSeam: SIM_TAG('MRSEAM', 48),
  mrSignerSeam: Buffer.alloc(48),
  seamAttributes: Buffer.alloc(8),
  tdAttributes: Buffer.from('0000001000000000', 'hex'),
  xfam: Buffer.from('e71a060000000000', 'hex'),
  mrTd: SIM_TAG('MRTD', 48),
  mrConfigId: Buffer.alloc(48),
  mrOwner: Buffer.alloc(48),
  mrOwnerConfig: Buffer.alloc(48),
  rtmrs: [SIM_TAG('RTMR0', 48), SIM_TAG('RTMR1', 48), SIM_TAG('RTMR2', 48), Buffer.alloc(48)],
};

export class SimulatedTdxPlatform {
  private readonly macKey = randomBytes(32);
  private readonly attestationKey: { privateKey: KeyObject; publicKey: KeyObject };
  readonly measurements: Omit<TdMeasurements, 'reportData'>;

  constructor(opts: { debug?: boolean } = {}) {
    this.attestationKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const tdAttributes = Buffer.from(SIMULATED_TD_MEASUREMENTS.tdAttributes);
    if (opts.debug) tdAttributes[0] |= 0x01;
    this.measurements = { ...SIMULATED_TD_MEASUREMENTS, tdAttributes };
  }

  /** TD module: TDG.MR.REPORT for this TD with `reportData`. */
  tdReport(reportData: Buffer): Buffer {
    if (reportData.length !== 64) throw new RangeError('REPORTDATA is 64 bytes');
    const b = buildTdReport({ ...this.measurements, reportData });
    this.mac(b).copy(b, TdReportOff.mac);
    return b;
  }

  private mac(report: Buffer): Buffer {
    return createHmac('sha256', this.macKey).update(report.subarray(0, TdReportOff.mac)).digest();
  }

  /** Quoting enclave: a TDREPORT of this machine → DCAP quote (v4, or v5 with a TD 1.0 body descriptor). */
  quote(tdReportBytes: Buffer, version: 4 | 5 = 4): Buffer {
    const r = parseTdReport(tdReportBytes);
    const h = tdReportHashesMatch(r);
    // The MAC covers REPORTMACSTRUCT, whose hashes cover TEE_TCB_INFO and TDINFO: check both, as the CPU does.
    if (!h.teeTcbInfo || !h.tdInfo || !timingSafeEqual(this.mac(r.raw), r.mac)) throw new InvalidInputError('ERR_TDX_REPORT', 'TDREPORT: MAC does not verify on this platform (not made by this TD module, or altered)');
    const header = Buffer.alloc(48);
    header.writeUInt16LE(version, 0);
    header.writeUInt16LE(2, 2);
    header.writeUInt32LE(0x81, 4);
    Buffer.from(INTEL_QE_VENDOR_ID, 'hex').copy(header, 12);
    const body = Buffer.concat([
      r.teeTcbSvn, r.mrSeam, r.mrSignerSeam, r.seamAttributes, r.tdAttributes, r.xfam, r.mrTd, r.mrConfigId, r.mrOwner, r.mrOwnerConfig, ...r.rtmrs, r.reportData,
    ]);
    const descriptor = Buffer.alloc(6);
    descriptor.writeUInt16LE(2, 0);
    descriptor.writeUInt32LE(TD_BODY_10_SIZE, 2);
    const signed = version === 5 ? Buffer.concat([header, descriptor, body]) : Buffer.concat([header, body]);
    const sig = cryptoSign('sha256', signed, { key: this.attestationKey.privateKey, dsaEncoding: 'ieee-p1363' });
    const jwk = this.attestationKey.publicKey.export({ format: 'jwk' });
    const ak = Buffer.concat([Buffer.from(jwk.x as string, 'base64url'), Buffer.from(jwk.y as string, 'base64url')]);
    const authData = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    const qeReport = Buffer.alloc(SGX_REPORT_BODY_SIZE);
    SIM_TAG('QE MRENCLAVE', 32).copy(qeReport, 64);
    SIMULATED_QE_MRSIGNER.copy(qeReport, 128);
    qeReport.writeUInt16LE(SIMULATED_QE_ISVPRODID, 256);
    createHash('sha256').update(ak).update(authData).digest().copy(qeReport, 320);
    const qeSig = cryptoSign('sha256', qeReport, { key: simulatedIntelKeys().pck, dsaEncoding: 'ieee-p1363' });
    const pem = Buffer.concat([Buffer.from(simulatedPckChainPem(), 'latin1'), Buffer.from([0])]);
    const inner = Buffer.alloc(6);
    inner.writeUInt16LE(CERT_DATA_PCK_CHAIN, 0);
    inner.writeUInt32LE(pem.length, 2);
    const authLen = Buffer.alloc(2);
    authLen.writeUInt16LE(authData.length, 0);
    const certBody = Buffer.concat([qeReport, qeSig, authLen, authData, inner, pem]);
    const cert = Buffer.alloc(6);
    cert.writeUInt16LE(CERT_DATA_QE_REPORT, 0);
    cert.writeUInt32LE(certBody.length, 2);
    const sigData = Buffer.concat([sig, ak, cert, certBody]);
    const sigLen = Buffer.alloc(4);
    sigLen.writeUInt32LE(sigData.length, 0);
    return Buffer.concat([signed, sigLen, sigData]);
  }
}
