/**
 * Errors in Key Vault's wire shape: `{"error": {"code", "message", "innererror"?}}`. The Azure SDK
 * turns these into RestError with `code`/`message`, so callers see what they would see in Azure.
 */
export interface VaultInnerError {
  code: string;
  [extra: string]: unknown;
}

export class VaultHttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly innererror?: VaultInnerError,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'VaultHttpError';
  }

  body(): { error: { code: string; message: string; innererror?: VaultInnerError } } {
    return { error: { code: this.code, message: this.message, ...(this.innererror ? { innererror: this.innererror } : {}) } };
  }
}

export const badParameter = (message: string): VaultHttpError => new VaultHttpError(400, 'BadParameter', message);

/**
 * The service's answer to a key type the resource does not hold: `oct` anywhere, `oct-HSM` in a
 * vault (symmetric keys live in Managed HSM), `{"error":{"code":"BadParameter","message":"Invalid
 * kty value: oct","innererror":{"code":"KeyTypeNotSupported"}}}`.
 */
export const keyTypeNotSupported = (kty: string): VaultHttpError =>
  new VaultHttpError(400, 'BadParameter', `Invalid kty value: ${kty}`, { code: 'KeyTypeNotSupported' });

export const keyNotFound = (name: string, kind: 'vault' | 'hsm'): VaultHttpError =>
  new VaultHttpError(
    404,
    'KeyNotFound',
    `A key with (name/id) ${name} was not found in this ${kind === 'hsm' ? 'HSM' : 'key vault'}. If you recently deleted this key ` +
      'you may be able to recover it using the correct recovery command. For help resolving this issue, please see ' +
      'https://go.microsoft.com/fwlink/?linkid=2125182',
  );

/**
 * What the service answers when the target token's signature, issuer or lifetime cannot be checked, byte
 * for byte as Azure SDK tests record it: `{"error":{"code":"Forbidden","message":"Target environment
 * attestation statement cannot be verified.","innererror":{"code":"AccessDenied"}}}`. Nothing says why
 * (`_why` is for the reader of this code only); the sidecar's `explanation` is what tells the user.
 */
export const attestationNotVerified = (_why: string): VaultHttpError =>
  new VaultHttpError(403, 'Forbidden', 'Target environment attestation statement cannot be verified.', { code: 'AccessDenied' });

/**
 * The service's policy-denied answer: its wording (as Microsoft's own SKR code quotes it), no claim detail,
 * exactly as uninformative as Azure's.
 */
export const releaseDenied = (): VaultHttpError =>
  new VaultHttpError(403, 'Forbidden', 'Target environment attestation does not meet key release policy requirements.', { code: 'AccessDenied' });
