/**
 * What the emulator checks before it issues a token, in the order real MAA's verdicts imply:
 *  1. the AMD chain in `VcekCertChain` up to a trusted ARK and the report's signature (src/certs
 *     verifyReport; the failing step names the check: `ark-pinned`, `report-signature`, `vcek-hwid`, ...);
 *  2. every UVM endorsement in `Endorsements.Uvm`: COSE signature, chain to a trusted UVM signing root
 *     (`cose-format`, `cose-signature`, `uvm-chain`, `uvm-root`, `uvm-payload`), and its launch measurement
 *     must equal the report's MEASUREMENT (`uvm-measurement`);
 *  3. REPORT_DATA = sha256(runtime data bytes) followed by 32 zero bytes (`report-data`).
 * The report-data check runs last on purpose: reaching it proves the signature, chain and endorsement passed.
 */
import { toHex } from '../../common/bytes';
import { InvalidInputError, VerificationError } from '../../common/errors';
import { derToPem, pemCertificatesToDer } from '../../certs/pem';
import type { TrustStore } from '../../certs/roots';
import { verifyReport, VerifiedReport } from '../../certs/verify';
import { verifyUvmEndorsement, VerifiedUvmEndorsement } from '../../cose/uvm-endorsement';
import type { ParsedSevSnpVmRequest } from '../../maa/request';
import { reportDataFor } from '../../snp/report';
import { MaaEmulatorRefusal } from './refusal';

export interface EvidenceTrust {
  /** AMD ARKs (pinned) plus any configured extra roots such as the simulator's test ARK. */
  amd: TrustStore;
  /** SHA-256 fingerprints of the UVM signing roots to trust. */
  uvmRootFingerprints: string[];
  now?: Date;
}

export interface VerifiedEvidence {
  verified: VerifiedReport;
  /** The first endorsement, when any were sent (all of them verified and matched). */
  uvm?: VerifiedUvmEndorsement;
}

function refuseFrom(err: unknown): never {
  if (err instanceof VerificationError) throw new MaaEmulatorRefusal(err.step, err.message, { cause: err });
  if (err instanceof InvalidInputError) {
    // From parsing (e.g. a report version or PEM we cannot read): the evidence is malformed.
    throw new MaaEmulatorRefusal('evidence-format', err.message, { cause: err });
  }
  throw err;
}

export function verifySevSnpVmEvidence(req: ParsedSevSnpVmRequest, trust: EvidenceTrust): VerifiedEvidence {
  // VcekCertChain is VCEK PEM followed by ASK and ARK PEM; verifyAmdChain counts and names them.
  let ders: Buffer[];
  try {
    ders = pemCertificatesToDer(req.vcekCertChainPem, 'VcekCertChain');
  } catch (e) {
    throw new MaaEmulatorRefusal('chain-format', (e as Error).message, { cause: e });
  }
  if (ders.length === 0) throw new MaaEmulatorRefusal('chain-format', 'VcekCertChain holds no certificate');
  const [vcek, ...rest] = ders;
  let verified: VerifiedReport;
  try {
    // tcbm is not consulted by verifyReport (it compares the VCEK's own extensions with REPORTED_TCB).
    verified = verifyReport(req.report, { vcekPem: derToPem(vcek), chainPem: rest.map(derToPem).join(''), tcbm: 0n, source: 'request' }, trust.amd, {
      ...(trust.now ? { now: trust.now } : {}),
    });
  } catch (e) {
    refuseFrom(e);
  }

  let uvm: VerifiedUvmEndorsement | undefined;
  const measurement = toHex(verified.report.measurement);
  req.uvmEndorsements.forEach((cose, i) => {
    let v: VerifiedUvmEndorsement;
    try {
      // Certificate validity is not enforced: real ContainerPlat leaves expire while endorsements stay in use.
      v = verifyUvmEndorsement(cose, { trustedRootFingerprints: trust.uvmRootFingerprints });
    } catch (e) {
      if (e instanceof VerificationError) throw new MaaEmulatorRefusal(e.step, `UVM endorsement ${i}: ${e.message}`, { cause: e });
      throw new MaaEmulatorRefusal('cose-format', `UVM endorsement ${i}: ${(e as Error).message}`, { cause: e });
    }
    if (v.launchMeasurement !== measurement) {
      throw new MaaEmulatorRefusal(
        'uvm-measurement',
        `UVM endorsement ${i} is for launch measurement ${v.launchMeasurement}, but the report's MEASUREMENT is ${measurement}`,
      );
    }
    uvm ??= v;
  });

  const expected = reportDataFor(req.runtimeData);
  if (!expected.equals(verified.report.reportData)) {
    throw new MaaEmulatorRefusal(
      'report-data',
      `REPORT_DATA ${toHex(verified.report.reportData)} is not sha256(runtime data) followed by 32 zero bytes (${toHex(expected)})`,
    );
  }
  return uvm ? { verified, uvm } : { verified };
}
