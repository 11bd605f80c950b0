/** Error codes are one closed union, and one table beside them (src/common/error-status.ts) gives each its HTTP status. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ERROR_CODES } from '../../src/common/error-codes';
import { ConfigError, DeviceError, InvalidInputError, SkrError, UpstreamError, VerificationError } from '../../src/common/errors';
import { HTTP_STATUS } from '../../src/common/error-status';
import { badRequest, HttpError, statusOf } from '../../src/server/http-errors';

describe('the code → HTTP status table', () => {
  it('has exactly the codes of the union, each with an error status', () => {
    expect(Object.keys(HTTP_STATUS).sort()).toEqual([...ERROR_CODES].sort());
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
    for (const c of ERROR_CODES) expect([c, HTTP_STATUS[c] >= 400 && HTTP_STATUS[c] < 600]).toEqual([c, true]);
  });

  it.each<[SkrError, number]>([
    [new InvalidInputError('ERR_KID', 'x'), 400],
    [badRequest('x', 'ERR_FIELD_TYPE'), 400],
    [new HttpError('ERR_UNAUTHORIZED', 'x'), 401],
    [new VerificationError('jws-host', 'x'), 403],
    [new HttpError('ERR_NOT_FOUND', 'x'), 404],
    [new DeviceError('ERR_DEVICE', 'x'), 500],
    [new ConfigError('x'), 500],
    [new UpstreamError('vault', 'x'), 502],
    [new UpstreamError('maa', 'x', { code: 'ERR_UPSTREAM_TIMEOUT' }), 504],
  ])('%s ends a request with %i, by its code', (err, status) => {
    expect(statusOf(err)).toBe(status);
    expect(err.status).toBe(HTTP_STATUS[err.code]);
  });

  it('no module of src/ chooses a status for an SkrError itself', () => {
    const src = path.resolve(__dirname, '..', '..', 'src');
    const files = (dir: string): string[] =>
      fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
    const offenders = files(src).filter((f) => /super\([^)]*\{\s*status:/.test(fs.readFileSync(f, 'utf8')));
    expect(offenders).toEqual([]);
  });
});
