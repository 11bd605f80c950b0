/** Small byte helpers shared by every layer. */

/** Lowercase hex of a byte array. */
export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

/** Decode strict hex (even length, [0-9a-fA-F] only); returns undefined when it is not hex. */
export function fromHexStrict(s: string): Buffer | undefined {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) return undefined;
  return Buffer.from(s, 'hex');
}

const STD_B64 = /^[A-Za-z0-9+/]*={0,2}$/;
const URL_B64 = /^[A-Za-z0-9_-]*={0,2}$/;

/**
 * Decode standard or URL-safe base64 and nothing else: Node's decoder silently skips garbage,
 * which would turn a typo into different REPORT_DATA. Padding is optional; mixed alphabets refused.
 */
export function decodeBase64Strict(s: string): Buffer | undefined {
  if (!(STD_B64.test(s) || URL_B64.test(s))) return undefined;
  const body = s.replace(/=+$/, '');
  if (body.length % 4 === 1) return undefined;
  const padded = s.length % 4 === 0 ? s : undefined;
  if (s.includes('=') && padded === undefined) return undefined;
  const buf = Buffer.from(body.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  // Round-trip check rejects non-canonical trailing bits.
  if (buf.toString('base64').replace(/=+$/, '') !== body.replace(/-/g, '+').replace(/_/g, '/')) return undefined;
  return buf;
}

export function b64url(b: Uint8Array | string): string {
  return Buffer.from(b as Uint8Array).toString('base64url');
}

/** Overwrite a buffer holding secret material. */
export function wipe(...bufs: (Uint8Array | undefined)[]): void {
  for (const b of bufs) if (b) b.fill(0);
}
