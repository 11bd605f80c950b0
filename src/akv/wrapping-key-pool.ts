/**
 * A small pool of pre-generated RSA-2048 wrapping keys, so key generation (tens of ms of CPU) is
 * off the release path. Keys are generated one at a time on libuv's thread pool in the background
 * and handed out exactly once: `take()` removes the key from the pool, so no key ever serves two
 * releases through the pool (reuse happens only together with its MAA token, see the token cache).
 * An empty pool never makes a caller wait for the refill: the caller generates its own key.
 */
import { ConfigError } from '../common/errors';
import { createWrappingKeyAsync, type WrappingKey } from './wrapping-key';

export const DEFAULT_WRAPPING_KEY_POOL_SIZE = 4;
/** Each idle key is ~2 KB of private key; more than this only costs memory and start-up CPU. */
export const MAX_WRAPPING_KEY_POOL_SIZE = 32;

export interface WrappingKeyPoolOptions {
  /** Keys kept ready (default 4; 0 disables the pool: every take() generates). */
  size?: number;
  /** Key generator (default RSA-2048 on the thread pool). */
  generate?: () => Promise<WrappingKey>;
  /** Called when a background generation fails (the next take() generates on demand and surfaces errors). */
  onError?: (err: unknown) => void;
}

export interface WrappingKeyPoolStats {
  /** Keys ready now. */
  available: number;
  /** Keys generated in the background since start. */
  refilled: number;
  /** take() calls served from the pool. */
  fromPool: number;
  /** take() calls that found the pool empty and generated their own key. */
  onDemand: number;
}

export class WrappingKeyPool {
  readonly size: number;
  private readonly generate: () => Promise<WrappingKey>;
  private readonly onError?: (err: unknown) => void;
  private readonly ready: WrappingKey[] = [];
  private refilling: Promise<void> | undefined;
  private closed = false;
  private counts = { refilled: 0, fromPool: 0, onDemand: 0 };

  constructor(opts: WrappingKeyPoolOptions = {}) {
    const size = opts.size ?? DEFAULT_WRAPPING_KEY_POOL_SIZE;
    if (!Number.isInteger(size) || size < 0 || size > MAX_WRAPPING_KEY_POOL_SIZE) {
      throw new ConfigError(`wrapping key pool size must be an integer from 0 to ${MAX_WRAPPING_KEY_POOL_SIZE}, got ${String(size)}`);
    }
    this.size = size;
    this.generate = opts.generate ?? createWrappingKeyAsync;
    this.onError = opts.onError;
  }

  /** Begin filling in the background (call once at start-up). */
  start(): this {
    this.refill();
    return this;
  }

  /** A key no other caller has had. Taken from the pool when one is ready, else generated now. */
  async take(): Promise<WrappingKey> {
    // After close() (shutdown), releases still finishing in the grace period generate their own key.
    const key = this.ready.shift();
    this.refill();
    if (key) {
      this.counts.fromPool++;
      return key;
    }
    this.counts.onDemand++;
    return this.generate();
  }

  stats(): WrappingKeyPoolStats {
    return { available: this.ready.length, ...this.counts };
  }

  /** Resolves when the running refill (if any) has finished: the pool is full, closed, or a generation failed. */
  async idle(): Promise<void> {
    while (this.refilling) await this.refilling;
  }

  /** Stop refilling and drop the ready keys; take() keeps working by generating on demand. */
  close(): void {
    this.closed = true;
    this.ready.length = 0;
  }

  /** One background loop at a time, one key at a time: refilling never takes more than one core. */
  private refill(): void {
    if (this.closed || this.refilling || this.ready.length >= this.size) return;
    this.refilling = (async () => {
      // Yield first so `refilling` is set before the finally below can clear it.
      await null;
      try {
        while (!this.closed && this.ready.length < this.size) {
          const key = await this.generate();
          if (this.closed) return;
          this.ready.push(key);
          this.counts.refilled++;
        }
      } catch (err) {
        // Stop this round; the next take() generates on demand (reporting the error) and restarts the refill.
        this.onError?.(err);
      } finally {
        this.refilling = undefined;
      }
    })();
  }
}
