/**
 * The local CA every HTTPS emulator's certificate chains to. `skr local` creates it once and keeps
 * it in its state directory, so a user can trust it (curl --cacert, NODE_EXTRA_CA_CERTS) across runs.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { certificatesFromPem } from '../asn1/certificate';
import { createLocalCa, issueServerCertificate, type IssuedCertificate } from '../asn1/x509';

export const CA_CERT_FILE = 'ca-cert.pem';
export const CA_KEY_FILE = 'ca-key.pem';

/** Load the CA from `dir`, or create it there (key 0600) when absent or expired. */
export function loadOrCreateLocalCa(dir: string): IssuedCertificate & { certPath: string } {
  const certPath = path.join(dir, CA_CERT_FILE);
  const keyPath = path.join(dir, CA_KEY_FILE);
  if (fs.existsSync(certPath) && fs.existsSync(keyPath)) {
    const certPem = fs.readFileSync(certPath, 'utf8');
    const keyPem = fs.readFileSync(keyPath, 'utf8');
    const [cert] = certificatesFromPem(certPem, certPath);
    // Renew a CA that expires within a day rather than serve certificates clients will refuse.
    if (cert && new Date(cert.validTo).getTime() > Date.now() + 24 * 3600 * 1000) {
      const privateKey = createPrivateKey(keyPem);
      return { der: cert.raw, certPem, keyPem, privateKey, publicKey: createPublicKey(privateKey), certPath };
    }
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = createLocalCa();
  fs.writeFileSync(keyPath, ca.keyPem, { mode: 0o600 });
  fs.writeFileSync(certPath, ca.certPem, { mode: 0o644 });
  return { ...ca, certPath };
}

/** Key and certificate for an HTTPS emulator on loopback (DNS localhost, IP 127.0.0.1). */
export function loopbackServerTls(ca: IssuedCertificate): { key: string; cert: string } {
  const leaf = issueServerCertificate(ca, { dns: ['localhost'], ip: ['127.0.0.1'] });
  return { key: leaf.keyPem, cert: leaf.certPem };
}
