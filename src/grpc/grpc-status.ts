/**
 * gRPC status codes from the HTTP status an error code has in the one table
 * (src/server/error-status.ts): the gRPC API refuses, fails and times out exactly where the HTTP
 * API does, and a new error code needs no second table.
 */
import { status } from '@grpc/grpc-js';

export function grpcCodeOf(httpStatus: number): status {
  switch (httpStatus) {
    case 400:
      return status.INVALID_ARGUMENT;
    case 401:
      return status.UNAUTHENTICATED;
    case 403:
      return status.PERMISSION_DENIED;
    case 404:
      return status.NOT_FOUND;
    case 413:
    case 429:
      return status.RESOURCE_EXHAUSTED;
    case 501:
      return status.UNIMPLEMENTED;
    case 502:
    case 503:
      return status.UNAVAILABLE;
    case 504:
      return status.DEADLINE_EXCEEDED;
    default:
      return httpStatus >= 400 && httpStatus < 500 ? status.INVALID_ARGUMENT : status.INTERNAL;
  }
}
