/**
 * Durable key store: one JSON file per key name holding every version, written atomically
 * (temp file + rename, mode 0600) so a crash or restart never leaves a half-written key.
 * The files hold private key material: the state directory is the emulator's HSM.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Curve, Kty } from './keys';

export interface StoredReleasePolicy {
  contentType: string;
  /** base64url of the policy JSON, as the client sent it. */
  data: string;
  immutable?: boolean;
}

export interface StoredAttributes {
  enabled: boolean;
  nbf?: number;
  exp?: number;
  created: number;
  updated: number;
  exportable: boolean;
}

export interface StoredKeyVersion {
  /** 32 lowercase hex digits, like the service's version ids. */
  version: string;
  kty: Kty;
  keySize?: number;
  crv?: Curve;
  keyOps: string[];
  /** base64 of the raw (oct) or PKCS#8 DER (RSA/EC) private key. */
  material: string;
  attributes: StoredAttributes;
  tags?: Record<string, string>;
  releasePolicy?: StoredReleasePolicy;
}

export interface StoredKey {
  name: string;
  /** Oldest first; the last one is the current version. */
  versions: StoredKeyVersion[];
}

/** Key names as the service allows them: 1-127 letters, digits and dashes. */
export const KEY_NAME_RE = /^[0-9a-zA-Z-]{1,127}$/;

export const newVersionId = (): string => randomBytes(16).toString('hex');

export class KeyStore {
  private readonly cache = new Map<string, StoredKey>();

  constructor(readonly dir: string) {
    fs.mkdirSync(path.join(dir, 'keys'), { recursive: true, mode: 0o700 });
  }

  /** Names are case-insensitive in Key Vault, so files are keyed by the lower-cased name. */
  private file(name: string): string {
    return path.join(this.dir, 'keys', `${name.toLowerCase()}.json`);
  }

  get(name: string): StoredKey | undefined {
    if (!KEY_NAME_RE.test(name)) return undefined;
    const key = name.toLowerCase();
    const hit = this.cache.get(key);
    if (hit) return hit;
    let text: string;
    try {
      text = fs.readFileSync(this.file(name), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const stored = JSON.parse(text) as StoredKey;
    this.cache.set(key, stored);
    return stored;
  }

  /** Append a version (creating the key when new) and persist before answering. */
  addVersion(name: string, version: StoredKeyVersion): StoredKey {
    const current = this.get(name);
    const next: StoredKey = { name: current?.name ?? name, versions: [...(current?.versions ?? []), version] };
    this.write(next);
    this.cache.set(name.toLowerCase(), next);
    return next;
  }

  private write(key: StoredKey): void {
    const target = this.file(key.name);
    const tmp = `${target}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    const fd = fs.openSync(tmp, 'wx', 0o600);
    try {
      fs.writeFileSync(fd, JSON.stringify(key, null, 2));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    try {
      fs.renameSync(tmp, target);
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw err;
    }
  }
}
