/** gRPC status codes come from the one code → HTTP status table: no error code needs a second table. */
import { status } from '@grpc/grpc-js';
import { ERROR_CODES } from '../../src/common/error-codes';
import { HTTP_STATUS } from '../../src/common/error-status';
import { grpcCodeOf } from '../../src/grpc/grpc-status';

describe('gRPC status of each error code', () => {
  it.each<[number, status]>([
    [400, status.INVALID_ARGUMENT],
    [401, status.UNAUTHENTICATED],
    [403, status.PERMISSION_DENIED],
    [404, status.NOT_FOUND],
    [413, status.RESOURCE_EXHAUSTED],
    [429, status.RESOURCE_EXHAUSTED],
    [500, status.INTERNAL],
    [501, status.UNIMPLEMENTED],
    [502, status.UNAVAILABLE],
    [504, status.DEADLINE_EXCEEDED],
  ])('HTTP %i → gRPC %i', (http, grpc) => {
    expect(grpcCodeOf(http)).toBe(grpc);
  });

  it('every code of the union maps to a non-OK status of its class: a caller error is never INTERNAL, a server error never INVALID_ARGUMENT', () => {
    for (const c of ERROR_CODES) {
      const http = HTTP_STATUS[c];
      const g = grpcCodeOf(http);
      expect([c, g === status.OK]).toEqual([c, false]);
      if (http < 500) expect([c, g]).not.toEqual([c, status.INTERNAL]);
      else expect([c, g]).not.toEqual([c, status.INVALID_ARGUMENT]);
    }
    expect(grpcCodeOf(HTTP_STATUS.ERR_KID_NOT_ALLOWED)).toBe(status.PERMISSION_DENIED);
    expect(grpcCodeOf(HTTP_STATUS.ERR_RELEASE_REFUSED)).toBe(status.PERMISSION_DENIED);
    expect(grpcCodeOf(HTTP_STATUS.ERR_OVERLOADED)).toBe(status.RESOURCE_EXHAUSTED);
    expect(grpcCodeOf(HTTP_STATUS.ERR_DEADLINE)).toBe(status.DEADLINE_EXCEEDED);
    expect(grpcCodeOf(HTTP_STATUS.ERR_UPSTREAM)).toBe(status.UNAVAILABLE);
  });
});
