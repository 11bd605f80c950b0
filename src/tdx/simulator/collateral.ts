/**
 * TEST ONLY: Intel-like TDX collateral for the simulated platform: a TCB signing certificate under the
 * simulated root (per-process key; the root's key is the committed TEST-ONLY one), and signed TCB info /
 * TD QE identity in Intel PCS v4's byte shapes, so the collateral verifier and TCB evaluation run on the
 * simulated stack exactly as on Intel's. Never trusted outside simulation (src/tdx/roots.ts pins Intel).
 */
import { createPublicKey, generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { authorityKeyIdentifier, buildCertificate, keyUsage, pemOf, subjectKeyIdentifier, subjectNameOf } from '../../asn1/x509';
import type { SignedCollateral, TdxCollateral } from '../collateral';
import { NOT_AFTER, NOT_BEFORE, SIMULATED_PCK_PLATFORM, simulatedIntelKeys, simulatedIntelName, TEST_ONLY_INTEL_ROOT_PEM } from './chain';
import { SIMULATED_QE_ISVPRODID, SIMULATED_QE_MRSIGNER, SIMULATED_TD_MEASUREMENTS } from './platform';

let signing: { key: KeyObject; chainPem: string } | undefined;

/** The simulated "Intel SGX TCB Signing" certificate ‖ the simulated root, and its key. */
export function simulatedTcbSigning(): { key: KeyObject; chainPem: string } {
  if (signing) return signing;
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const root = simulatedIntelKeys().root;
  const rootDer = Buffer.from(TEST_ONLY_INTEL_ROOT_PEM.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  const certDer = buildCertificate({
    subject: simulatedIntelName('SIMULATED Intel SGX TCB Signing (test only)'),
    issuer: subjectNameOf(rootDer),
    serialNumber: 0x5e1f03n,
    notBefore: NOT_BEFORE,
    notAfter: NOT_AFTER,
    subjectPublicKey: publicKey,
    issuerPrivateKey: root,
    signatureAlgorithm: 'ecdsa-sha256',
    extensions: [keyUsage(['digitalSignature', 'nonRepudiation']), subjectKeyIdentifier(publicKey), authorityKeyIdentifier(createPublicKey(root))],
  });
  signing = { key: privateKey, chainPem: pemOf(certDer) + TEST_ONLY_INTEL_ROOT_PEM };
  return signing;
}

export interface SimulatedCollateralOptions {
  /** issueDate; default now − 1 h. */
  issueDate?: Date;
  /** nextUpdate; default issueDate + 30 days. */
  nextUpdate?: Date;
  /** FMSPC the TCB info is for; default the simulated platform's. */
  fmspc?: string;
  /** 'up-to-date' (default): the platform meets the newest level; 'out-of-date': a newer level exists above it. */
  platform?: 'up-to-date' | 'out-of-date';
  /** MRSIGNER the QE identity names; default the simulated QE's. */
  qeMrSigner?: Buffer;
  /** Status of the QE identity's level for the simulated QE; default UpToDate. */
  qeStatus?: string;
}

const svns = (list: readonly number[]) => list.map((svn) => ({ svn }));

function signed(member: 'tcbInfo' | 'enclaveIdentity', inner: unknown): SignedCollateral {
  const s = simulatedTcbSigning();
  const json = JSON.stringify(inner);
  const sig = cryptoSign('sha256', Buffer.from(json, 'utf8'), { key: s.key, dsaEncoding: 'ieee-p1363' }).toString('hex');
  return { body: `{"${member}":${json},"signature":"${sig}"}`, issuerChainPem: s.chainPem };
}

/** Signed TDX TCB info and TD QE identity for the simulated platform. */
export function mintSimulatedTdxCollateral(opts: SimulatedCollateralOptions = {}): TdxCollateral {
  const issueDate = opts.issueDate ?? new Date(Date.now() - 3600_000);
  const nextUpdate = opts.nextUpdate ?? new Date(issueDate.getTime() + 30 * 86400_000);
  const p = SIMULATED_PCK_PLATFORM;
  const teeTcbSvn = [...SIMULATED_TD_MEASUREMENTS.teeTcbSvn];
  const above = [...teeTcbSvn];
  above[0] += 1;
  const level = (tdx: number[], status: string, date: string, advisories: string[]) => ({
    tcb: { sgxtcbcomponents: svns(p.sgxComponents), pcesvn: p.pceSvn, tdxtcbcomponents: svns(tdx) },
    tcbDate: date,
    tcbStatus: status,
    ...(advisories.length ? { advisoryIDs: advisories } : {}),
  });
  const tcbLevels = opts.platform === 'out-of-date'
    ? [level(above, 'UpToDate', '2025-11-12T00:00:00Z', []), level(teeTcbSvn, 'OutOfDate', '2024-03-13T00:00:00Z', ['INTEL-SA-SIM-0001'])]
    : [level(teeTcbSvn, 'UpToDate', '2025-11-12T00:00:00Z', [])];
  tcbLevels.push(level(teeTcbSvn.map(() => 0), 'OutOfDate', '2023-01-01T00:00:00Z', ['INTEL-SA-SIM-0001', 'INTEL-SA-SIM-0002']));
  const dates = { issueDate: issueDate.toISOString(), nextUpdate: nextUpdate.toISOString() };
  const tcbInfo = signed('tcbInfo', {
    id: 'TDX',
    version: 3,
    ...dates,
    fmspc: (opts.fmspc ?? p.fmspc).toUpperCase(),
    pceId: p.pceId,
    tcbType: 0,
    tcbEvaluationDataNumber: 17,
    tdxModule: { mrsigner: '00'.repeat(48), attributes: '0000000000000000', attributesMask: 'FFFFFFFFFFFFFFFF' },
    tdxModuleIdentities: [],
    tcbLevels,
  });
  const qeIdentity = signed('enclaveIdentity', {
    id: 'TD_QE',
    version: 2,
    ...dates,
    tcbEvaluationDataNumber: 17,
    miscselect: '00000000',
    miscselectMask: 'FFFFFFFF',
    attributes: '00000000000000000000000000000000',
    attributesMask: 'FBFFFFFFFFFFFFFF0000000000000000',
    mrsigner: (opts.qeMrSigner ?? SIMULATED_QE_MRSIGNER).toString('hex').toUpperCase(),
    isvprodid: SIMULATED_QE_ISVPRODID,
    tcbLevels: [{ tcb: { isvsvn: 0 }, tcbDate: '2025-11-12T00:00:00Z', tcbStatus: opts.qeStatus ?? 'UpToDate' }],
  });
  return { tcbInfo, qeIdentity, source: 'simulator' };
}
