/**
 * The AMD Root Keys we trust, pinned by SHA-256 of the certificate DER. An ARK that arrives with
 * evidence (THIM, KDS, the host's cert table) is trusted only if its fingerprint is pinned here
 * or it is one of the explicitly configured extra roots (the simulator's test chain, emulators).
 *
 * Computed on 2026-11-22 from AMD's KDS `cert_chain` files (second certificate of each) with
 *   openssl x509 -in ask_ark_<product>.pem -noout -fingerprint -sha256
 * The VCEK and VLEK chains of a product share the same ARK (checked for all three products), and
 * the ARK in the real Milan THIM bundle is byte-identical to the KDS one.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { certificateFromDer } from '../asn1/certificate';
import { ConfigError } from '../common/errors';
import type { Product } from '../snp/tcb';
import { pemCertificatesToDer } from './pem';

export const AMD_ARK_SHA256: Readonly<Record<Product, string>> = {
  // CN=ARK-Milan, valid 2020-10-22 .. 2045-10-22
  Milan: '69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd',
  // CN=ARK-Genoa, valid 2022-01-26 .. 2047-01-26
  Genoa: '4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1',
  // CN=ARK-Turin, valid 2023-05-15 .. 2048-05-15
  Turin: '1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a',
};

export function certFingerprint256(cert: X509Certificate | Uint8Array): string {
  const der = cert instanceof X509Certificate ? cert.raw : cert;
  return createHash('sha256').update(der).digest('hex');
}

export interface TrustStoreOptions {
  /** Extra self-signed roots to trust (PEM), e.g. the simulator's test ARK. */
  extraRootsPem?: string[];
  /** Trust AMD's pinned ARKs (default true). Turning this off is for tests of foreign hierarchies. */
  includeAmdRoots?: boolean;
}

export class TrustStore {
  /** fingerprint → label (`AMD Milan ARK`, `extra root CN=...`). */
  private readonly roots = new Map<string, string>();

  constructor(opts: TrustStoreOptions = {}) {
    if (opts.includeAmdRoots ?? true) {
      for (const [product, fp] of Object.entries(AMD_ARK_SHA256)) this.roots.set(fp, `AMD ${product} ARK`);
    }
    for (const [i, pem] of (opts.extraRootsPem ?? []).entries()) {
      const ders = pemCertificatesToDer(pem, `extra root ${i + 1}`);
      if (ders.length === 0) throw new ConfigError(`extra root ${i + 1} holds no PEM certificate`);
      for (const d of ders) {
        let cert: X509Certificate;
        try {
          cert = certificateFromDer(d, `extra root ${i + 1}`);
        } catch (e) {
          throw new ConfigError(`extra root ${i + 1} is not a parsable certificate`, e);
        }
        this.roots.set(certFingerprint256(cert), `extra root ${cert.subject.replace(/\n/g, ', ')}`);
      }
    }
  }

  /** Exact DER match only: a look-alike root with the same name and a different key is refused. */
  isTrustedArk(cert: X509Certificate): boolean {
    return this.roots.has(certFingerprint256(cert));
  }

  /** Which pinned root this is (`AMD Milan ARK`), or undefined. */
  labelOf(cert: X509Certificate): string | undefined {
    return this.roots.get(certFingerprint256(cert));
  }

  /** The AMD product whose ARK this is, when it is one of AMD's. */
  amdProductOf(cert: X509Certificate): Product | undefined {
    const fp = certFingerprint256(cert);
    return (Object.keys(AMD_ARK_SHA256) as Product[]).find((p) => AMD_ARK_SHA256[p] === fp);
  }

  /** For error messages: what would have been accepted. */
  describe(): string {
    const labels = [...this.roots.values()];
    return labels.length ? `trusted roots: ${labels.join('; ')}` : 'no trusted roots configured';
  }
}
