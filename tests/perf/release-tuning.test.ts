/** Fast-path settings from the environment, and the defaults they fall back to. */
import { releaseTuningFromEnv, startReleaseFastPath } from '../../src/akv/release-tuning';
import { ConfigError } from '../../src/common/errors';

describe('releaseTuningFromEnv', () => {
  it('is empty when nothing is set', () => {
    expect(releaseTuningFromEnv({})).toEqual({});
  });

  it('reads pool size, reuse switch and margin', () => {
    expect(releaseTuningFromEnv({ SKR_WRAPPING_KEY_POOL_SIZE: '0', SKR_MAA_TOKEN_REUSE: 'false', SKR_MAA_TOKEN_REUSE_MARGIN_SECONDS: '600' })).toEqual({
      wrappingKeyPoolSize: 0,
      maaTokenReuse: false,
      maaTokenReuseMarginSeconds: 600,
    });
    expect(releaseTuningFromEnv({ SKR_MAA_TOKEN_REUSE: 'TRUE' }).maaTokenReuse).toBe(true);
    expect(releaseTuningFromEnv({ SKR_MAA_TOKEN_REUSE: '0' }).maaTokenReuse).toBe(false);
  });

  it.each([
    ['SKR_WRAPPING_KEY_POOL_SIZE', '-1'],
    ['SKR_WRAPPING_KEY_POOL_SIZE', 'four'],
    ['SKR_MAA_TOKEN_REUSE', 'maybe'],
    ['SKR_MAA_TOKEN_REUSE_MARGIN_SECONDS', '1.5'],
  ])('refuses %s=%s', (name, value) => {
    expect(() => releaseTuningFromEnv({ [name]: value })).toThrow(ConfigError);
  });
});

describe('startReleaseFastPath', () => {
  it('defaults to a pool of 4 and reuse on with a 5 minute margin', async () => {
    const fp = startReleaseFastPath();
    expect(fp.wrappingKeyPool.size).toBe(4);
    expect(fp.maaTokenReuse).toEqual({ enabled: true, marginMs: 300_000 });
    fp.close();
    await fp.wrappingKeyPool.idle();
  });

  it('applies the settings, and refuses a pool larger than the bound', async () => {
    const fp = startReleaseFastPath({ wrappingKeyPoolSize: 0, maaTokenReuse: false, maaTokenReuseMarginSeconds: 60 });
    expect(fp.wrappingKeyPool.size).toBe(0);
    expect(fp.maaTokenReuse).toEqual({ enabled: false, marginMs: 60_000 });
    fp.close();
    expect(() => startReleaseFastPath({ wrappingKeyPoolSize: 1000 })).toThrow(ConfigError);
  });
});
