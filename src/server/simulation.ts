/**
 * Simulation wiring: the simulated platform publishes an ACI-style security-context directory,
 * and the sidecar then reads it through exactly the code path it uses on real ACI hosts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SECURITY_CONTEXT_FILES } from '../certs/thim';
import type { SimulatedPlatform } from '../snp/simulator';

/** Write security-policy-base64, host-amd-cert-base64 and (when given) reference-info-base64. */
export function writeSecurityContext(dir: string, platform: SimulatedPlatform, referenceInfoBase64?: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const write = (name: string, text: string) => fs.writeFileSync(path.join(dir, name), text, { mode: 0o644 });
  write(SECURITY_CONTEXT_FILES.policy, platform.securityPolicyBase64);
  write(SECURITY_CONTEXT_FILES.hostAmdCert, Buffer.from(JSON.stringify(platform.thimCertificates()), 'utf8').toString('base64'));
  if (referenceInfoBase64) write(SECURITY_CONTEXT_FILES.referenceInfo, referenceInfoBase64);
}
