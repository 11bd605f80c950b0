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
  // One alphabet throughout (a string of neither's special characters is both); decoded and
  // re-encoded in that alphabet, with no copy translating one into the other.
  const enc = URL_B64.test(s) ? 'base64url' : STD_B64.test(s) ? 'base64' : undefined;
  if (!enc) return undefined;
  const body = s.endsWith('=') ? s.replace(/=+$/, '') : s;
  if (body.length % 4 === 1) return undefined;
  if (body.length !== s.length && s.length % 4 !== 0) return undefined;
  const buf = Buffer.from(body, enc);
  // Round-trip check rejects non-canonical trailing bits.
  const again = buf.toString(enc);
  if ((enc === 'base64' && again.endsWith('=') ? again.replace(/=+$/, '') : again) !== body) return undefined;
  return buf;
}

export function b64url(b: Uint8Array | string): string {
  return Buffer.from(b as Uint8Array).toString('base64url');
}

/** Overwrite a buffer holding secret material. */
export function wipe(...bufs: (Uint8Array | undefined)[]): void {
  for (const b of bufs) if (b) b.fill(0);
}
