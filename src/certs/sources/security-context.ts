/** The host-supplied THIM bundle in the ACI security context (or the older UVM_* variables). */
import { CollateralUnavailableError } from '../errors';
import { readSecurityContext, SecurityContext, SecurityContextOptions, thimToChain } from '../thim';
import type { AmdCertChain, CollateralSource } from '../types';

export interface SecurityContextSourceOptions extends SecurityContextOptions {
  /** An already-read context; when absent the context is re-read on every fetch (it is small). */
  context?: SecurityContext;
}

export class SecurityContextSource implements CollateralSource {
  readonly name = 'security-context';
  constructor(private readonly opts: SecurityContextSourceOptions = {}) {}

  async fetch(): Promise<AmdCertChain> {
    const ctx = this.opts.context ?? readSecurityContext(this.opts);
    if (!ctx.hostAmdCert) {
      throw new CollateralUnavailableError(
        this.name,
        `no host AMD certificate: neither ${ctx.dir ?? 'a security context directory'}/host-amd-cert-base64 nor UVM_HOST_AMD_CERTIFICATE is present`,
      );
    }
    return thimToChain(ctx.hostAmdCert, ctx.hostAmdCertFrom === 'env' ? 'env' : 'security-context');
  }
}
