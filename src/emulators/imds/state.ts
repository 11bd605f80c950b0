/**
 * What the IMDS emulator keeps across runs in its state directory: the RS256 key that signs access
 * tokens (so a vault emulator started later still trusts them) and the generated tenant and default
 * identity (so object ids granted release rights stay valid).
 */
import { createPrivateKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError } from '../../common/errors';
import type { AccessTokenPrincipal } from './tokens';

export const IMDS_SIGNING_KEY_FILE = 'imds-signing-key.pem';
export const IMDS_IDENTITY_FILE = 'imds-identity.json';

export interface ImdsIdentityState {
  tenantId: string;
  principals: AccessTokenPrincipal[];
}

/** A fresh identity: random tenant and one principal (the VM's system-assigned identity). */
export function newIdentityState(): ImdsIdentityState {
  return { tenantId: randomUUID(), principals: [{ clientId: randomUUID(), objectId: randomUUID() }] };
}

function newSigningKey(): KeyObject {
  return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
}

/** The signing key from `dir`, or a new one written there (0600). Without `dir`, a new key each call. */
export function loadOrCreateSigningKey(dir?: string): KeyObject {
  if (!dir) return newSigningKey();
  const file = path.join(dir, IMDS_SIGNING_KEY_FILE);
  if (fs.existsSync(file)) {
    try {
      const key = createPrivateKey(fs.readFileSync(file, 'utf8'));
      if (key.asymmetricKeyType !== 'rsa') throw new Error(`key type ${key.asymmetricKeyType}`);
      return key;
    } catch (err) {
      throw new ConfigError(`IMDS emulator: ${file} is not an RSA private key: ${(err as Error).message}`, err);
    }
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = newSigningKey();
  fs.writeFileSync(file, key.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return key;
}

function isPrincipal(p: unknown): p is AccessTokenPrincipal {
  const o = p as Record<string, unknown>;
  return typeof o === 'object' && o !== null && typeof o.clientId === 'string' && typeof o.objectId === 'string';
}

/** The tenant and identities from `dir`, or generated ones written there. Without `dir`, generated. */
export function loadOrCreateIdentityState(dir?: string): ImdsIdentityState {
  if (!dir) return newIdentityState();
  const file = path.join(dir, IMDS_IDENTITY_FILE);
  if (fs.existsSync(file)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (err) {
      throw new ConfigError(`IMDS emulator: ${file} is not JSON`, err);
    }
    const s = parsed as Partial<ImdsIdentityState>;
    if (typeof s.tenantId !== 'string' || !Array.isArray(s.principals) || !s.principals.length || !s.principals.every(isPrincipal)) {
      throw new ConfigError(`IMDS emulator: ${file} must hold {tenantId, principals: [{clientId, objectId}, ...]}`);
    }
    return { tenantId: s.tenantId, principals: s.principals.map((p) => ({ clientId: p.clientId, objectId: p.objectId })) };
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const state = newIdentityState();
  fs.writeFileSync(file, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  return state;
}
