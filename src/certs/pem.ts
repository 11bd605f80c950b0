/** PEM ⇄ DER for certificates. Strict: only CERTIFICATE blocks, body must be canonical base64. */
import { InvalidInputError } from '../common/errors';

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** DER of every CERTIFICATE block in `text`, in order. Other block types or junk base64 are refused. */
export function pemCertificatesToDer(text: string, what = 'PEM'): Buffer[] {
  const out: Buffer[] = [];
  for (const m of text.matchAll(BLOCK)) {
    if (m[1] !== 'CERTIFICATE') throw new InvalidInputError('ERR_PEM', `${what}: unexpected PEM block "${m[1]}" (only CERTIFICATE is accepted)`);
    const body = m[2].replace(/\s+/g, '');
    const der = Buffer.from(body, 'base64');
    if (der.length === 0 || der.toString('base64') !== body) throw new InvalidInputError('ERR_PEM', `${what}: certificate ${out.length + 1} is not valid base64`);
    out.push(der);
  }
  return out;
}

export function derToPem(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** Canonical re-encoding of every certificate in `text` (one PEM per certificate). */
export function splitPem(text: string, what = 'PEM'): string[] {
  return pemCertificatesToDer(text, what).map(derToPem);
}

export function looksLikePem(b: Uint8Array | string): boolean {
  const head = typeof b === 'string' ? b.slice(0, 64) : Buffer.from(b.subarray(0, 64)).toString('latin1');
  return head.trimStart().startsWith('-----BEGIN ');
}
