/**
 * The one way to turn certificate bytes into an X509Certificate.
 *
 * Given a Buffer, Node's `new X509Certificate` tries PEM first and accepts the first PEM block found
 * anywhere in the bytes. Real certificates can carry PEM text inside their DER (MAA's signing
 * certificates embed SGX quote collateral holding PEM certificates in an extension), so a DER buffer
 * can silently turn into a different certificate. Here DER is re-armoured as a single PEM block and
 * the result must re-encode to exactly the input bytes. PEM text goes through `certificatesFromPem`,
 * which takes each CERTIFICATE block apart first. `new X509Certificate` appears nowhere else (ESLint).
 */
import { X509Certificate } from 'node:crypto';
import { InvalidInputError } from '../common/errors';
import { readTlv } from './der';
import { dersOfPem, pemOf } from './x509';

/** The certificate whose DER encoding is exactly `der`; anything else is refused. */
export function certificateFromDer(der: Uint8Array, what = 'certificate'): X509Certificate {
  const bytes = Buffer.from(der.buffer, der.byteOffset, der.byteLength);
  if (bytes.length < 2 || bytes[0] !== 0x30) throw new InvalidInputError('ERR_CERTIFICATE', `${what}: not a DER certificate (no SEQUENCE)`);
  let end: number;
  try {
    end = readTlv(bytes).next;
  } catch (e) {
    throw new InvalidInputError('ERR_CERTIFICATE', `${what}: not a DER certificate (bad length)`, e);
  }
  if (end !== bytes.length) throw new InvalidInputError('ERR_CERTIFICATE', `${what}: ${bytes.length - end} trailing bytes after the certificate`);
  const pem = pemOf(bytes);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch (e) {
    throw new InvalidInputError('ERR_CERTIFICATE', `${what}: not a valid X.509 certificate`, e);
  }
  if (!cert.raw.equals(bytes)) throw new InvalidInputError('ERR_CERTIFICATE', `${what}: not in canonical DER`);
  return cert;
}

/** Every certificate in PEM `text`, in order (blocks of other types are ignored); none is an empty list. */
export function certificatesFromPem(text: string, what = 'PEM'): X509Certificate[] {
  let ders: Buffer[];
  try {
    ders = dersOfPem(text);
  } catch (e) {
    throw new InvalidInputError('ERR_PEM', `${what}: ${(e as Error).message}`, e);
  }
  return ders.map((d, i) => certificateFromDer(d, ders.length === 1 ? what : `${what} certificate ${i + 1}`));
}
