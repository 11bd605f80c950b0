/** The emulators' loopback admin route arms faults from outside the process (e.g. against `skr local`). */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startImdsEmulator, type ImdsEmulator } from '../../src/emulators/imds';
import { FAULT_ADMIN_PATH } from '../../src/emulators/faults';

describe('fault admin route', () => {
  let imds: ImdsEmulator;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skr-fault-admin-'));
  beforeAll(async () => {
    imds = await startImdsEmulator({ stateDir: dir });
  });
  afterAll(async () => {
    await imds?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const token = () => fetch(`${imds.url}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net`, { headers: { Metadata: 'true' } });
  const admin = (method: string, body?: unknown) =>
    fetch(`${imds.url}${FAULT_ADMIN_PATH}`, { method, ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}) });

  it('POST arms a fault for the next request only, GET counts it, DELETE clears', async () => {
    expect((await admin('POST', { route: 'token', kind: 'status', status: 503, retryAfterSeconds: 2 })).status).toBe(200);
    const faulted = await token();
    expect(faulted.status).toBe(503);
    expect(faulted.headers.get('retry-after')).toBe('2');
    expect((await token()).status).toBe(200);
    expect(await (await admin('GET')).json()).toEqual({ served: { 'token:status': 1 } });

    await admin('POST', { route: 'token', kind: 'malformed-json', times: 5 });
    expect((await admin('DELETE')).status).toBe(200);
    expect((await token()).status).toBe(200);
  });

  it.each([
    [{ route: 'token', kind: 'explode' }, /kind must be one of/],
    [{ kind: 'hang' }, /route/],
    [{ route: 'token', kind: 'status', status: 99 }, /in range/],
    ['not an object', /JSON object/],
  ])('refuses the fault %j with 400', async (body, msg) => {
    const res = await admin('POST', body);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toMatch(msg);
  });
});
