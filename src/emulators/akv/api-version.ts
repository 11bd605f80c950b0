/** api-version gate: the versions that know `exportable`, `release_policy` and `release`. */
import { badParameter } from './errors';

export const SUPPORTED_API_VERSIONS: readonly string[] = ['7.3', '7.4', '7.5', '7.6', '2025-07-01'];
export const LATEST_API_VERSION = '2025-07-01';

/** Returns the api-version, or throws the service's 400 for a missing or unknown one. */
export function checkApiVersion(value: string | null): string {
  if (value === null || value === '') {
    throw badParameter('The api-version query parameter is missing. Specify a supported version, for example ' + LATEST_API_VERSION + '.');
  }
  if (!SUPPORTED_API_VERSIONS.includes(value)) {
    throw badParameter(`The specified version (${value}) is not recognized. Consider using the latest supported version (${LATEST_API_VERSION}).`);
  }
  return value;
}
