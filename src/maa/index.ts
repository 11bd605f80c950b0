/** MAA client: SevSnpVm request format, the attest call, and token verification. */
export { buildSevSnpVmRequest, parseSevSnpVmRequest, serializeSevSnpVmRequest } from './request';
export type { ParsedSevSnpVmRequest, RuntimeDataType, SevSnpVmRequest, SevSnpVmRequestInput } from './request';
export { DEFAULT_MAA_API_VERSION, MAA_UPSTREAM, MaaClient, defaultUserAgent, maaBaseUrl } from './client';
export type { MaaClientOptions } from './client';
export { MaaRefusedError, parseMaaErrorBody, sanitizeUpstreamText } from './errors';
export { JwksCache, authorityOrigin, publicKeyOfJwk, verifyMaaToken } from './verify-token';
export type { JwksCacheOptions, JwksEntry, VerifyMaaTokenOptions } from './verify-token';
