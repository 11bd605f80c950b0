/**
 * Our TPM client behind a hostile proxy in front of a real swtpm (issue 20, items 3 and 4): the TPM
 * executes every command, the proxy loses, mangles or duplicates the answer. The client must not leak
 * the objects and sessions it never learned the handles of, and must not fall out of step.
 */
import { createHash } from 'node:crypto';
import { ephemeralKeyTemplate, PCRS_0_7, policyPcrDigest, SwtpmTcpTransport, TPM_CC, TPM_HT, TPM_RH, TPM_SE, TpmClient, TpmError } from '../../src/tpm';
import { HostileTpmProxy } from '../helpers/hostile-tpm-proxy';
import { startSwtpm, type Swtpm } from '../helpers/swtpm';

jest.setTimeout(60_000);

describe('the TPM client behind a hostile proxy (swtpm)', () => {
  let tpm: Swtpm;
  let proxy: HostileTpmProxy;
  let client: TpmClient;
  let template: ReturnType<typeof ephemeralKeyTemplate>;

  beforeAll(async () => {
    tpm = await startSwtpm();
    proxy = new HostileTpmProxy(tpm.port);
    await proxy.listen();
    client = new TpmClient(new SwtpmTcpTransport({ port: proxy.port, timeoutMs: 2_000 }));
    const pcrs = await client.pcrRead(PCRS_0_7.hash, PCRS_0_7.pcrs);
    template = ephemeralKeyTemplate(policyPcrDigest(PCRS_0_7, [...pcrs.values()]));
  });
  afterAll(async () => {
    await client?.close();
    await proxy?.close();
    await tpm?.stop();
  });

  /** What the TPM holds, asked on the proxy's own upstream path without rules. */
  const transient = () => client.listHandles(TPM_HT.TRANSIENT);
  const sessions = () => client.listHandles(TPM_HT.LOADED_SESSION);

  it.each([
    ['lost', 'drop' as const],
    ['mangled', 'corrupt' as const],
  ])('CreatePrimary answers %s four times (swtpm has 3 object slots): the orphans are flushed, the next key is created', async (_w, action) => {
    proxy.add({ cc: TPM_CC.CreatePrimary, action, times: 4 });
    for (let i = 0; i < 4; i++) await expect(client.createPrimary(TPM_RH.NULL, template)).rejects.toThrow(/TPM2_CreatePrimary/);
    expect(proxy.pending).toBe(0);
    // Without recovery this is TPM_RC_OBJECT_MEMORY: three objects the client never learned of fill the slots.
    const key = await client.createPrimary(TPM_RH.NULL, template);
    expect(await transient()).toEqual([key.handle]);
    await client.flushContext(key.handle);
    expect(await transient()).toEqual([]);
  });

  it('StartAuthSession answers lost and mangled: the orphaned sessions are flushed, policy sessions still start', async () => {
    proxy.add({ cc: TPM_CC.StartAuthSession, action: 'drop', times: 2 }).add({ cc: TPM_CC.StartAuthSession, action: 'corrupt', times: 2 });
    for (let i = 0; i < 4; i++) await expect(client.startAuthSession(TPM_SE.POLICY)).rejects.toThrow(/TPM2_StartAuthSession/);
    const held: number[] = [];
    for (let i = 0; i < 3; i++) held.push((await client.startAuthSession(TPM_SE.POLICY)).handle);
    expect((await sessions()).length).toBe(3);
    for (const h of held) await client.flushContext(h);
    expect(await sessions()).toEqual([]);
  });

  it('leftovers of an earlier process (swtpm keeps them across connections) are flushed by recoverHandles, ours are kept', async () => {
    const other = new TpmClient(new SwtpmTcpTransport({ port: proxy.port }));
    await client.close();
    try {
      for (let i = 0; i < 3; i++) await other.createPrimary(TPM_RH.NULL, template);
    } finally {
      await other.close();
    }
    // A new client sees the TPM full; the start-up sweep frees it, its own key survives a second sweep.
    client = new TpmClient(new SwtpmTcpTransport({ port: proxy.port, timeoutMs: 2_000 }));
    expect((await client.recoverHandles()).length).toBe(3);
    const mine = await client.createPrimary(TPM_RH.NULL, template);
    expect(await client.recoverHandles()).toEqual([]);
    expect(await transient()).toEqual([mine.handle]);
    await client.flushContext(mine.handle);
  });

  it('a TPM full of unknown objects answers CreatePrimary with OBJECT_MEMORY: flushed and retried once, transparently', async () => {
    const other = new TpmClient(new SwtpmTcpTransport({ port: proxy.port }));
    await client.close();
    try {
      for (let i = 0; i < 3; i++) await other.createPrimary(TPM_RH.NULL, template);
      // Its own objects are accounted for: the TPM's refusal stands.
      await expect(other.createPrimary(TPM_RH.NULL, template)).rejects.toThrow(/TPM_RC_OBJECT_MEMORY/);
    } finally {
      await other.close();
    }
    client = new TpmClient(new SwtpmTcpTransport({ port: proxy.port, timeoutMs: 2_000 }));
    const key = await client.createPrimary(TPM_RH.NULL, template);
    expect(await transient()).toEqual([key.handle]);
    await client.flushContext(key.handle);
  });

  it('an unsolicited duplicate response does not shift later answers: every later command gets its own answer', async () => {
    const digestBefore = await client.pcrRead(PCRS_0_7.hash, [0, 1]);
    proxy.add({ cc: TPM_CC.PCR_Read, action: 'inject' });
    await client.pcrRead(PCRS_0_7.hash, [0, 1]);
    // Let the stray arrive while the connection is idle.
    await new Promise((r) => setTimeout(r, 100));
    // A different command next: a shifted stream would hand it the stale PCR_Read answer.
    for (let i = 0; i < 5; i++) {
      const key = await client.createPrimary(TPM_RH.NULL, template);
      const pub = await client.readPublic(key.handle);
      expect(pub.name).toEqual(key.name);
      await client.flushContext(key.handle);
    }
    expect(await client.pcrRead(PCRS_0_7.hash, [0, 1])).toEqual(digestBefore);
    expect(await transient()).toEqual([]);
  });

  it('a stray answer ahead of the real one: the parse error reopens the connection, so the late real answer cannot shift the next commands', async () => {
    const key = await client.createPrimary(TPM_RH.NULL, template);
    await client.pcrRead(PCRS_0_7.hash, [0]);
    // ReadPublic gets the PCR_Read answer first; its own answer comes 20 ms later, while the next
    // commands (sent back to back) wait for theirs.
    proxy.add({ cc: TPM_CC.ReadPublic, action: 'stray-first' });
    await expect(client.readPublic(key.handle)).rejects.toThrow(/TPM2_ReadPublic .*truncated/);
    for (let i = 0; i < 20; i++) {
      const pub = await client.readPublic(key.handle);
      expect(pub.name).toEqual(key.name);
      expect((await client.pcrRead(PCRS_0_7.hash, [0])).get(0)).toHaveLength(32);
    }
    await client.flushContext(key.handle);
  });

  it('a mangled response to a read-only command reopens the connection; the next command is answered correctly', async () => {
    proxy.add({ cc: TPM_CC.PCR_Read, action: 'corrupt' });
    await expect(client.pcrRead(PCRS_0_7.hash, [0])).rejects.toThrow(/TPM2_PCR_Read response: tag 0xdead/);
    const extendTo = createHash('sha256').update('x').digest();
    expect(extendTo).toHaveLength(32);
    expect((await client.pcrRead(PCRS_0_7.hash, [0])).get(0)).toHaveLength(32);
  });

  it('TpmError is still a TpmError (a real refusal) and does not drop the connection', async () => {
    await expect(client.readPublic(0x80ffffff)).rejects.toBeInstanceOf(TpmError);
    expect(await transient()).toEqual([]);
  });
});
