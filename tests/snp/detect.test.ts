import { detectEvidenceSource, NO_DEVICE_MESSAGE } from '../../src/snp/detect';

describe('evidence source detection', () => {
  const none = { configfsRoot: '/nonexistent/tsm', sevGuestPath: '/nonexistent/sev-guest', sevPath: '/nonexistent/sev' };

  it('prefers /dev/sev-guest over the legacy /dev/sev', async () => {
    const s = await detectEvidenceSource({ ...none, sevGuestPath: '/dev/null', sevPath: '/dev/zero' });
    expect(s.kind).toBe('sev-guest');
    expect(s.description).toContain('/dev/null');
  });

  it('falls back to the legacy /dev/sev', async () => {
    expect((await detectEvidenceSource({ ...none, sevPath: '/dev/null' })).kind).toBe('sev');
  });

  it('never simulates: no device is an error that says how to simulate', async () => {
    await expect(detectEvidenceSource(none)).rejects.toMatchObject({ code: 'ERR_NO_DEVICE', message: expect.stringContaining(NO_DEVICE_MESSAGE) });
  });
});
