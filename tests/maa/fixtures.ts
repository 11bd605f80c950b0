/** Evidence for MAA tests, from the simulated platform (report, VCEK, ASK+ARK, UVM endorsement). */
import { reportDataFor } from '../../src/snp/report';
import { SimulatedPlatform, simulatedUvmEndorsementBase64 } from '../../src/snp/simulator';
import type { SevSnpVmRequestInput } from '../../src/maa/request';

let platform: SimulatedPlatform | undefined;

export function simulatedPlatform(): SimulatedPlatform {
  platform ??= new SimulatedPlatform();
  return platform;
}

/** A runtime JWKS like the key-release flow sends (content is irrelevant to MAA's format). */
export const RUNTIME_JSON = { keys: [{ kty: 'RSA', n: 'sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw', e: 'AQAB', kid: 'wrapping-key', key_ops: ['encrypt'] }] };
export const RUNTIME_DATA = Buffer.from(JSON.stringify(RUNTIME_JSON), 'utf8');

export function simulatedInput(overrides: Partial<SevSnpVmRequestInput> = {}): SevSnpVmRequestInput {
  const p = simulatedPlatform();
  const thim = p.thimCertificates();
  const runtimeData = overrides.runtimeData ?? RUNTIME_DATA;
  return {
    report: p.signReport({ reportData: reportDataFor(runtimeData) }),
    vcekPem: thim.vcekCert,
    chainPem: thim.certificateChain,
    uvmEndorsementBase64: simulatedUvmEndorsementBase64(p.measurement),
    runtimeData,
    ...overrides,
  };
}
