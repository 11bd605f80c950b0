import { createHash, createHmac, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ReleaseJwsVerifier, verifyReleaseJws } from '../../src/akv/jws';
import { createReleaseSigner, signReleaseJws, type ReleaseJwsSigner } from '../../src/emulators/akv/release-signer';
import {
  authorityKeyIdentifier,
  basicConstraints,
  buildCertificate,
  createLocalCa,
  keyUsage,
  subjectKeyIdentifier,
  subjectNameOf,
  type IssuedCertificate,
} from '../../src/asn1/x509';
import { loadOrCreateLocalCa } from '../../src/emulators/ca';
import { certificatesFromPem } from '../../src/asn1/certificate';

const DAY = 86_400_000;
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-jws-'));
afterAll(() => fs.rmSync(stateDir, { recursive: true, force: true }));

const ca = loadOrCreateLocalCa(stateDir);
const signer = createReleaseSigner(ca, { dns: ['myvault.vault.azure.net', 'localhost'], ip: ['127.0.0.1'] });
const trust = { extraCaPem: [ca.certPem] };
const payload = {
  request: { 'api-version': '7.4', enc: 'RSA_AES_KEY_WRAP_256', kid: 'https://myvault.vault.azure.net/keys/k' },
  response: { key: { key: { kid: 'https://myvault.vault.azure.net/keys/k/1', kty: 'oct-HSM', key_ops: [], key_hsm: 'eyJ9' } } },
};

const b64u = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const step = (s: string) => expect.objectContaining({ code: 'ERR_VERIFICATION', status: 403, step: s });

/** Build a compact JWS with an arbitrary header, signed RS256 with `key` (or not at all). */
function forge(header: Record<string, unknown>, body: unknown, key?: KeyObject): string {
  const input = `${b64u(header)}.${b64u(body)}`;
  const sig = key ? sign('sha256', Buffer.from(input), key).toString('base64url') : '';
  return `${input}.${sig}`;
}

function x5cHeader(s: ReleaseJwsSigner): Record<string, unknown> {
  return { alg: 'RS256', x5c: s.x5cDer.map((d) => d.toString('base64')) };
}

/** A CA certificate issued by `parent` (intermediate), or a leaf-like non-CA certificate when ca=false. */
function issueCa(parent: IssuedCertificate, cn: string, isCa = true): IssuedCertificate {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = buildCertificate({
    subject: [['CN', cn]],
    issuer: subjectNameOf(parent.der),
    serialNumber: 77n,
    notBefore: new Date(Date.now() - DAY),
    notAfter: new Date(Date.now() + 30 * DAY),
    subjectPublicKey: publicKey,
    issuerPrivateKey: parent.privateKey,
    signatureAlgorithm: 'ecdsa-sha256',
    extensions: [
      isCa ? basicConstraints(true, 0) : basicConstraints(false),
      keyUsage(isCa ? ['keyCertSign', 'cRLSign'] : ['digitalSignature']),
      subjectKeyIdentifier(publicKey),
      authorityKeyIdentifier(parent.publicKey),
    ],
  });
  return { der, certPem: '', keyPem: '', privateKey, publicKey };
}

describe('signReleaseJws', () => {
  it('produces an RS256 compact JWS with x5c (standard base64, leaf first), x5t and x5t#S256', async () => {
    const jws = signReleaseJws(payload, signer);
    const [h, p] = jws.split('.');
    const header = JSON.parse(Buffer.from(h, 'base64url').toString());
    expect(header).toEqual({
      alg: 'RS256',
      x5c: [signer.x5cDer[0].toString('base64'), ca.der.toString('base64')],
      x5t: createHash('sha1').update(signer.x5cDer[0]).digest('base64url'),
      'x5t#S256': createHash('sha256').update(signer.x5cDer[0]).digest('base64url'),
    });
    expect(JSON.parse(Buffer.from(p, 'base64url').toString())).toEqual(payload);
  });

  it('refuses a non-RSA signing key', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    expect(() => signReleaseJws(payload, { privateKey: ec, x5cDer: signer.x5cDer })).toThrow(expect.objectContaining({ code: 'ERR_JWS_SIGNER' }));
  });
});

describe('verifyReleaseJws', () => {
  const jws = signReleaseJws(payload, signer);

  it('accepts a JWS chained to the local CA for the IP host and the DNS host', async () => {
    expect(await verifyReleaseJws(jws, { vaultHost: '127.0.0.1', ...trust })).toEqual(payload);
    expect(await verifyReleaseJws(jws, { vaultHost: 'myvault.vault.azure.net', ...trust })).toEqual(payload);
    expect(await verifyReleaseJws(jws, { vaultHost: 'MyVault.Vault.Azure.NET', ...trust })).toEqual(payload);
    expect(await verifyReleaseJws(jws, { vaultHost: 'localhost', extraCaPem: [createLocalCa().certPem + ca.certPem] })).toEqual(payload);
  });

  it('accepts headers without x5t (real Managed HSM responses carry only x5t#S256)', async () => {
    const header = { ...x5cHeader(signer), 'x5t#S256': createHash('sha256').update(signer.x5cDer[0]).digest('base64url') };
    expect(await verifyReleaseJws(forge(header, payload, signer.privateKey), { vaultHost: '127.0.0.1', ...trust })).toEqual(payload);
  });

  it('refuses a name the leaf does not carry', async () => {
    for (const host of ['othervault.vault.azure.net', 'vault.azure.net', '127.0.0.2', '::1', '[::1]']) {
      await expect(verifyReleaseJws(jws, { vaultHost: host, ...trust })).rejects.toThrow(step('jws-host'));
    }
  });

  it('refuses a tampered payload and a tampered signature', async () => {
    const [h, , s] = jws.split('.');
    const evil = `${h}.${b64u({ ...payload, request: { ...payload.request, kid: 'x' } })}.${s}`;
    await expect(verifyReleaseJws(evil, { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(step('jws-signature'));
    const sig = Buffer.from(s, 'base64url');
    sig[10] ^= 1;
    await expect(verifyReleaseJws(`${jws.slice(0, jws.lastIndexOf('.'))}.${sig.toString('base64url')}`, { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(
      step('jws-signature'),
    );
  });

  it('refuses alg none, HS256 and PS256', async () => {
    const none = forge({ ...x5cHeader(signer), alg: 'none' }, payload);
    await expect(verifyReleaseJws(none, { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(step('jws-format'));
    const hsInput = `${b64u({ ...x5cHeader(signer), alg: 'HS256' })}.${b64u(payload)}`;
    const hs = `${hsInput}.${createHmac('sha256', signer.x5cDer[0]).update(hsInput).digest('base64url')}`;
    await expect(verifyReleaseJws(hs, { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(step('jws-format'));
    await expect(verifyReleaseJws(forge({ ...x5cHeader(signer), alg: 'PS256' }, payload, signer.privateKey), { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(
      step('jws-format'),
    );
  });

  it('refuses a chain to an untrusted root, even when x5c carries that root', async () => {
    await expect(verifyReleaseJws(jws, { vaultHost: '127.0.0.1' })).rejects.toThrow(step('jws-chain'));
    const rogueCa = createLocalCa({ commonName: 'skr-sidecar local CA' }); // same name as ours, different key
    const rogue = createReleaseSigner(rogueCa, { ip: ['127.0.0.1'] });
    await expect(verifyReleaseJws(signReleaseJws(payload, rogue), { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(step('jws-chain'));
  });

  it('refuses an expired leaf and a leaf that is not yet valid', async () => {
    const expired = createReleaseSigner(ca, { ip: ['127.0.0.1'] }, { notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) });
    await expect(verifyReleaseJws(signReleaseJws(payload, expired), { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(step('jws-chain'));
    const future = createReleaseSigner(ca, { ip: ['127.0.0.1'] }, { notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 10 * DAY) });
    await expect(verifyReleaseJws(signReleaseJws(payload, future), { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(step('jws-chain'));
    await expect(verifyReleaseJws(jws, { vaultHost: '127.0.0.1', ...trust, now: new Date(Date.now() + 400 * DAY) })).rejects.toThrow(step('jws-chain'));
  });

  describe('with an intermediate CA', () => {
    const intermediate = issueCa(ca, 'release intermediate');
    const leaf = createReleaseSigner(intermediate, { dns: ['myhsm.managedhsm.azure.net'] });
    const opts = { vaultHost: 'myhsm.managedhsm.azure.net', ...trust };

    it('accepts leaf → intermediate, with or without the trusted root appended', async () => {
      expect(await verifyReleaseJws(signReleaseJws(payload, leaf), opts)).toEqual(payload);
      expect(await verifyReleaseJws(signReleaseJws(payload, { ...leaf, x5cDer: [...leaf.x5cDer, ca.der] }), opts)).toEqual(payload);
    });

    it('refuses a missing intermediate', async () => {
      await expect(verifyReleaseJws(signReleaseJws(payload, { ...leaf, x5cDer: [leaf.x5cDer[0]] }), opts)).rejects.toThrow(step('jws-chain'));
    });

    it('refuses an issuer that is not a CA', async () => {
      const notCa = issueCa(ca, 'not a ca', false);
      const below = createReleaseSigner(notCa, { dns: ['myhsm.managedhsm.azure.net'] });
      await expect(verifyReleaseJws(signReleaseJws(payload, below), opts)).rejects.toThrow(step('jws-chain'));
    });

    it('refuses x5c entries out of order', async () => {
      const swapped = { ...leaf, x5cDer: [leaf.x5cDer[0], ca.der, leaf.x5cDer[1]] };
      await expect(verifyReleaseJws(signReleaseJws(payload, swapped), opts)).rejects.toThrow(step('jws-chain'));
    });
  });

  it('refuses a signature that does not come from x5c[0] and thumbprints that do not match x5c[0]', async () => {
    const other = createReleaseSigner(ca, { ip: ['127.0.0.1'] });
    const mixed = forge(x5cHeader(other), payload, signer.privateKey);
    await expect(verifyReleaseJws(mixed, { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(step('jws-signature'));
    for (const name of ['x5t', 'x5t#S256']) {
      const bad = forge({ ...x5cHeader(signer), [name]: 'AAAA' }, payload, signer.privateKey);
      await expect(verifyReleaseJws(bad, { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(step('jws-format'));
    }
  });

  it('refuses an RS256 header over a non-RSA leaf', async () => {
    const ecLeaf = issueCa(ca, 'ec leaf', false);
    const bad = forge({ alg: 'RS256', x5c: [ecLeaf.der.toString('base64')] }, payload, signer.privateKey);
    await expect(verifyReleaseJws(bad, { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(step('jws-signature'));
  });

  it('refuses malformed JWS', async () => {
    const [h, p, s] = jws.split('.');
    const cases = [
      '',
      `${h}.${p}`,
      `${h}.${p}.${s}.x`,
      `${h}=.${p}.${s}`,
      `${b64u('{not json')}.${p}.${s}`,
      `${b64u([1])}.${p}.${s}`,
      `${h}.${b64u('"a string"')}.${s}`,
      `${h}.${p}.`,
      forge({ alg: 'RS256' }, payload, signer.privateKey),
      forge({ alg: 'RS256', x5c: [] }, payload, signer.privateKey),
      forge({ alg: 'RS256', x5c: ['not base64!'] }, payload, signer.privateKey),
      forge({ alg: 'RS256', x5c: [Buffer.from('not a cert').toString('base64')] }, payload, signer.privateKey),
      forge({ alg: 'RS256', x5c: new Array(11).fill(signer.x5cDer[0].toString('base64')) }, payload, signer.privateKey),
      forge({ ...x5cHeader(signer), crit: ['exp'], exp: 1 }, payload, signer.privateKey),
    ];
    for (const c of cases) await expect(verifyReleaseJws(c, { vaultHost: '127.0.0.1', ...trust })).rejects.toThrow(step('jws-format'));
  });

  it('issues signing certificates whose SAN carries exactly the requested names', async () => {
    const cert = certificatesFromPem(signer.certPem)[0];
    expect(cert.subjectAltName).toBe('DNS:myvault.vault.azure.net, DNS:localhost, IP Address:127.0.0.1');
    expect(cert.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(cert.verify(ca.publicKey)).toBe(true);
  });
});

describe('ReleaseJwsVerifier: the verified chain is remembered by its DER fingerprint', () => {
  const jws = signReleaseJws(payload, signer);

  it('a vault signing every release with one chain costs one chain verification', async () => {
    const v = new ReleaseJwsVerifier(trust);
    for (let i = 0; i < 3; i++) expect(await v.verify(jws, '127.0.0.1')).toEqual(payload);
    expect(v.cachedChains).toBe(1);
    // Another chain is verified (and remembered) on its own.
    const other = createReleaseSigner(ca, { ip: ['127.0.0.1'] });
    expect(await v.verify(signReleaseJws(payload, other), '127.0.0.1')).toEqual(payload);
    expect(v.cachedChains).toBe(2);
  });

  it('a remembered chain still gets the signature, x5t and host checked on every release', async () => {
    const v = new ReleaseJwsVerifier(trust);
    await v.verify(jws, '127.0.0.1');
    const [h, , s] = jws.split('.');
    await expect(v.verify(`${h}.${b64u({ ...payload, request: {} })}.${s}`, '127.0.0.1')).rejects.toThrow(step('jws-signature'));
    await expect(v.verify(jws, 'othervault.vault.azure.net')).rejects.toThrow(step('jws-host'));
    const badThumb = forge({ ...x5cHeader(signer), x5t: 'AAAA' }, payload, signer.privateKey);
    await expect(v.verify(badThumb, '127.0.0.1')).rejects.toThrow(step('jws-format'));
    expect(await v.verify(jws, 'myvault.vault.azure.net')).toEqual(payload);
  });

  it('a remembered chain is not trusted past the validity of its certificates', async () => {
    let now = new Date();
    const v = new ReleaseJwsVerifier({ ...trust, now: () => now });
    await v.verify(jws, '127.0.0.1');
    now = new Date(Date.now() + 400 * DAY);
    await expect(v.verify(jws, '127.0.0.1')).rejects.toThrow(step('jws-chain'));
  });

  it('an untrusted chain is never remembered', async () => {
    const v = new ReleaseJwsVerifier();
    await expect(v.verify(jws, '127.0.0.1')).rejects.toThrow(step('jws-chain'));
    expect(v.cachedChains).toBe(0);
  });
});
