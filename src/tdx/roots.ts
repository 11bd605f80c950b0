/**
 * The Intel SGX Root CA we trust for TDX quotes, pinned by SHA-256 of its DER. A root that arrives
 * inside a quote's certification data is trusted only when its fingerprint is pinned here or was
 * configured explicitly (the TDX simulator's TEST-ONLY root, never trusted by default).
 *
 * CN=Intel SGX Root CA, O=Intel Corporation, valid 2018-05-21 .. 2049-12-31 (ECDSA P-256); the
 * fingerprint was computed from the root in the PCK chain of the real Azure TD quote
 * (../shared/vectors/real-azure-tdx/trustee-td-quote.bin), and equals the value its README lists.
 */
import { createHash, type X509Certificate } from 'node:crypto';
import { certificateFromDer } from '../asn1/certificate';
import { pemCertificatesToDer } from '../certs/pem';
import { ConfigError, SkrError } from '../common/errors';

export const INTEL_SGX_ROOT_CA_SHA256 = '44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3';

export function fingerprint256(cert: X509Certificate): string {
  return createHash('sha256').update(cert.raw).digest('hex');
}

export interface IntelTrustOptions {
  /** Extra roots (PEM), e.g. the TDX simulator's TEST-ONLY root. */
  extraRootsPem?: string[];
  /** Trust Intel's pinned root (default true); off only for tests of foreign hierarchies. */
  includeIntelRoot?: boolean;
}

export class IntelTrustStore {
  private readonly roots = new Map<string, string>();

  constructor(opts: IntelTrustOptions = {}) {
    if (opts.includeIntelRoot ?? true) this.roots.set(INTEL_SGX_ROOT_CA_SHA256, 'Intel SGX Root CA');
    for (const [i, pem] of (opts.extraRootsPem ?? []).entries()) {
      let ders: Buffer[];
      try {
        ders = pemCertificatesToDer(pem, `extra Intel root ${i + 1}`);
      } catch (e) {
        throw new ConfigError(`extra Intel root ${i + 1}: ${(e as Error).message}`, e);
      }
      if (ders.length === 0) throw new ConfigError(`extra Intel root ${i + 1} holds no PEM certificate`);
      for (const d of ders) {
        let cert: X509Certificate;
        try {
          cert = certificateFromDer(d, `extra Intel root ${i + 1}`);
        } catch (e) {
          throw new ConfigError(e instanceof SkrError ? e.message : `extra Intel root ${i + 1} is not a certificate`, e);
        }
        this.roots.set(fingerprint256(cert), `extra root ${cert.subject.replace(/\n/g, ', ')}`);
      }
    }
  }

  /** Exact DER match only: a look-alike root with the same name and another key is refused. */
  labelOf(cert: X509Certificate): string | undefined {
    return this.roots.get(fingerprint256(cert));
  }

  describe(): string {
    const labels = [...this.roots.values()];
    return labels.length ? `trusted roots: ${labels.join('; ')}` : 'no trusted roots configured';
  }
}
