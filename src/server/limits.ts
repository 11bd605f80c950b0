/**
 * Concurrency bounds: a semaphore with a bounded wait queue. Beyond the queue the caller gets 429
 * with Retry-After at once, so a flood of requests costs the sidecar no memory and no upstream calls.
 */
import { SkrError } from '../common/errors';

/** 429 Too Many Requests, with the Retry-After the error handler sends. */
export class OverloadedError extends SkrError {
  constructor(message: string, readonly retryAfterSeconds: number) {
    super('ERR_OVERLOADED', message);
  }
}

export class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  /**
   * @param capacity holders at once
   * @param maxQueue callers that may wait for a slot (0: refuse at once when full)
   * @param what name for the 429 message
   */
  constructor(readonly capacity: number, readonly maxQueue: number, readonly what: string, readonly retryAfterSeconds = 1) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('capacity must be a positive integer');
  }

  get inUse(): number {
    return this.active;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Run `fn` holding a slot; throws OverloadedError when neither a slot nor a queue place is free. */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(signal);
    try {
      return await fn();
    } finally {
      this.release();
    }
  }

  private acquire(signal?: AbortSignal): Promise<void> {
    if (this.active < this.capacity) {
      this.active++;
      return Promise.resolve();
    }
    if (this.waiting.length >= this.maxQueue) {
      return Promise.reject(new OverloadedError(`too many ${this.what} in progress (${this.capacity} running, ${this.waiting.length} waiting): retry later`, this.retryAfterSeconds));
    }
    return new Promise<void>((resolve, reject) => {
      const grant = () => {
        signal?.removeEventListener('abort', onAbort);
        this.active++;
        resolve();
      };
      const onAbort = () => {
        const i = this.waiting.indexOf(grant);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      };
      this.waiting.push(grant);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private release(): void {
    this.active--;
    const next = this.waiting.shift();
    if (next) next();
  }
}

/**
 * Nesting depth of JSON text, counted without parsing (and without recursion), so a body of a
 * million `[` is refused before JSON.parse or any walker sees it. Brackets inside strings do not count.
 */
export function jsonDepthExceeds(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}
