/**
 * Settings of the release fast path, read once at start-up:
 *   SKR_WRAPPING_KEY_POOL_SIZE        pre-generated wrapping keys (default 4, 0 = none)
 *   SKR_MAA_TOKEN_REUSE               reuse an MAA token with its wrapping key (default true)
 *   SKR_MAA_TOKEN_REUSE_MARGIN_SECONDS stop reusing this long before exp (default 300)
 */
import { ConfigError } from '../common/errors';
import { DEFAULT_TOKEN_REUSE_MARGIN_MS, type MaaTokenCacheOptions } from '../maa/token-cache';
import { DEFAULT_WRAPPING_KEY_POOL_SIZE, WrappingKeyPool } from './wrapping-key-pool';

export interface ReleaseTuning {
  wrappingKeyPoolSize?: number;
  maaTokenReuse?: boolean;
  maaTokenReuseMarginSeconds?: number;
}

function intSetting(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

export function releaseTuningFromEnv(env: NodeJS.ProcessEnv): ReleaseTuning {
  const out: ReleaseTuning = {};
  const size = intSetting(env, 'SKR_WRAPPING_KEY_POOL_SIZE');
  if (size !== undefined) out.wrappingKeyPoolSize = size;
  const reuse = env.SKR_MAA_TOKEN_REUSE?.trim().toLowerCase();
  if (reuse) {
    if (!['true', 'false', '1', '0'].includes(reuse)) throw new ConfigError(`SKR_MAA_TOKEN_REUSE must be true or false, got ${JSON.stringify(reuse)}`);
    out.maaTokenReuse = reuse === 'true' || reuse === '1';
  }
  const margin = intSetting(env, 'SKR_MAA_TOKEN_REUSE_MARGIN_SECONDS');
  if (margin !== undefined) out.maaTokenReuseMarginSeconds = margin;
  return out;
}

/** The pool (already filling) and token-reuse options for a KeyReleaseClient; close() stops the refill. */
export function startReleaseFastPath(t: ReleaseTuning = {}): { wrappingKeyPool: WrappingKeyPool; maaTokenReuse: MaaTokenCacheOptions; close(): void } {
  const wrappingKeyPool = new WrappingKeyPool({ size: t.wrappingKeyPoolSize ?? DEFAULT_WRAPPING_KEY_POOL_SIZE }).start();
  return {
    wrappingKeyPool,
    maaTokenReuse: {
      enabled: t.maaTokenReuse ?? true,
      marginMs: t.maaTokenReuseMarginSeconds !== undefined ? t.maaTokenReuseMarginSeconds * 1000 : DEFAULT_TOKEN_REUSE_MARGIN_MS,
    },
    close: () => wrappingKeyPool.close(),
  };
}
