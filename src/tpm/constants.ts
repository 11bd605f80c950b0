/** TPM 2.0 constants (TCG TPM 2.0 Library, Part 2) used by this client. Big-endian on the wire. */

export const TPM_ST = {
  NO_SESSIONS: 0x8001,
  SESSIONS: 0x8002,
  ATTEST_CERTIFY: 0x8017,
  ATTEST_QUOTE: 0x8018,
  CREATION: 0x8021,
} as const;

export const TPM_CC = {
  NV_UndefineSpace: 0x122,
  EvictControl: 0x120,
  NV_DefineSpace: 0x12a,
  CreatePrimary: 0x131,
  NV_Write: 0x137,
  Startup: 0x144,
  Certify: 0x148,
  NV_Read: 0x14e,
  Quote: 0x158,
  RSA_Decrypt: 0x159,
  FlushContext: 0x165,
  NV_ReadPublic: 0x169,
  ReadPublic: 0x173,
  StartAuthSession: 0x176,
  GetCapability: 0x17a,
  PCR_Read: 0x17e,
  PolicyPCR: 0x17f,
  PCR_Extend: 0x182,
  PolicyGetDigest: 0x189,
} as const;

export type TpmCommandName = keyof typeof TPM_CC;

/** Command code → name, for errors. */
export function commandName(cc: number): string {
  for (const [k, v] of Object.entries(TPM_CC)) if (v === cc) return `TPM2_${k}`;
  return `TPM2 command 0x${cc.toString(16)}`;
}

export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECC: 0x0023,
} as const;

/** Digest length of the hash algorithms we accept. */
export const HASH_SIZE: Readonly<Record<number, { name: 'sha1' | 'sha256' | 'sha384' | 'sha512'; size: number }>> = {
  [TPM_ALG.SHA1]: { name: 'sha1', size: 20 },
  [TPM_ALG.SHA256]: { name: 'sha256', size: 32 },
  [TPM_ALG.SHA384]: { name: 'sha384', size: 48 },
  [TPM_ALG.SHA512]: { name: 'sha512', size: 64 },
};

/** Permanent handles. */
export const TPM_RH = {
  OWNER: 0x40000001,
  NULL: 0x40000007,
  ENDORSEMENT: 0x4000000b,
  PLATFORM: 0x4000000c,
} as const;

export const TPM_RS_PW = 0x40000009;

export const TPM_SE = { HMAC: 0x00, POLICY: 0x01, TRIAL: 0x03 } as const;
export const TPM_SU = { CLEAR: 0x0000, STATE: 0x0001 } as const;

/** TPMA_OBJECT bits. */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const;

/** TPMA_NV bits. */
export const TPMA_NV = {
  PPWRITE: 1 << 0,
  OWNERWRITE: 1 << 1,
  AUTHWRITE: 1 << 2,
  PPREAD: 1 << 16,
  OWNERREAD: 1 << 17,
  AUTHREAD: 1 << 18,
  NO_DA: 1 << 25,
  WRITTEN: 1 << 29,
} as const;

export const TPM_CAP = { HANDLES: 1, TPM_PROPERTIES: 6 } as const;
/** Handle types (the top byte), as GetCapability(TPM_CAP_HANDLES) takes them. */
export const TPM_HT = { LOADED_SESSION: 0x02000000, POLICY_SESSION: 0x03000000, TRANSIENT: 0x80000000 } as const;
export const TPM_PT = {
  NV_INDEX_MAX: 0x117,
  MAX_COMMAND_SIZE: 0x11e,
  MAX_RESPONSE_SIZE: 0x11f,
  NV_BUFFER_MAX: 0x12c,
} as const;

export const TPM_GENERATED_VALUE = 0xff544347;
