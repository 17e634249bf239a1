// One rate limit shared by several disks on different threads: each worker-
// hosted disk runs its device in a worker of its own, so the disks of a group
// cannot share a RateLimiter object. They share its state instead, in a
// SharedArrayBuffer: the configuration, a version that counts updates, and
// the gate and every bucket's tokens.
//
// Each thread (and each disk) holds a `RateLimitGroup` over the same buffer.
// It keeps a private RateLimiter as a mirror: every call takes a spinlock,
// loads the shared state into the mirror (first rebuilding the mirror's
// buckets if the version moved), runs the mirror's exact arithmetic, and
// stores the state back. Critical sections are a few hundred nanoseconds, so
// a spin costs less than any wait would.
//
// Time must mean the same on every thread: the default clock is
// `performance.timeOrigin + performance.now()`, which is shared by a page
// and its workers (and by Node's threads).

import type { Clock } from './clock.ts';
import { IoKind, RateLimiter, SCOPES, UNITS, budgetOf, type RateLimiterConfig } from './limiter.ts';

/** Milliseconds on a time line every thread of the agent cluster shares. */
export const sharedClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
};

// Layout: Int32 words, then Float64 config (size, burst, refill per bucket;
// size 0 = none), then Float64 state (RateLimiter.saveState).
const Word = { Lock: 0, Version: 1 } as const;
const WORDS_BYTES = 8;
const CONFIG_SLOTS = SCOPES.length * UNITS.length * 3;
const BYTES = WORDS_BYTES + 8 * (CONFIG_SLOTS + RateLimiter.STATE_SLOTS);

export class RateLimitGroup {
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;
  readonly #config: Float64Array;
  readonly #state: Float64Array;
  readonly #mirror: RateLimiter;
  /** The version the mirror's buckets were built for. */
  #version: number;
  /** Set when the mirror took new limits under the lock; listeners run after it is released. */
  #changed = false;
  readonly #listeners = new Set<() => void>();

  /** A new group with its buckets full. Hand `group.buffer` to each member (createDisk does). */
  static create(config: RateLimiterConfig, clock: Clock = sharedClock): RateLimitGroup {
    const buffer = new SharedArrayBuffer(BYTES);
    const first = new RateLimiter(config, clock);
    writeConfig(new Float64Array(buffer, WORDS_BYTES, CONFIG_SLOTS), first.config);
    first.saveState(new Float64Array(buffer, WORDS_BYTES + 8 * CONFIG_SLOTS, RateLimiter.STATE_SLOTS));
    Atomics.store(new Int32Array(buffer, 0, 2), Word.Version, 1);
    return new RateLimitGroup(buffer, clock);
  }

  /** Join the group whose state lives in `buffer` (made by `RateLimitGroup.create`). */
  constructor(buffer: SharedArrayBuffer, clock: Clock = sharedClock) {
    if (!(buffer instanceof SharedArrayBuffer) || buffer.byteLength !== BYTES) {
      throw new TypeError('RateLimitGroup: not the buffer of a rate-limit group');
    }
    this.buffer = buffer;
    this.#words = new Int32Array(buffer, 0, 2);
    this.#config = new Float64Array(buffer, WORDS_BYTES, CONFIG_SLOTS);
    this.#state = new Float64Array(buffer, WORDS_BYTES + 8 * CONFIG_SLOTS, RateLimiter.STATE_SLOTS);
    this.#lock();
    try {
      this.#version = Atomics.load(this.#words, Word.Version);
      this.#mirror = new RateLimiter(readConfig(this.#config), clock);
    } finally {
      this.#unlock();
    }
  }

  /** The configuration in force. */
  get config(): RateLimiterConfig {
    return this.#locked(() => this.#mirror.config);
  }

  /** How many times the limits were set (1 after `create`). */
  get version(): number {
    return Atomics.load(this.#words, Word.Version);
  }

  consume(kind: IoKind, bytes: number): boolean {
    // `#locked` spelled out: a closure per request would allocate on the hot path.
    let ok: boolean;
    this.#lock();
    try {
      this.#load();
      ok = this.#mirror.consume(kind, bytes);
      this.#mirror.saveState(this.#state);
    } finally {
      this.#unlock();
    }
    if (this.#changed) this.#notify();
    return ok;
  }

  msUntilReady(kind?: IoKind, bytes = 0): number {
    return this.#locked(() => this.#mirror.msUntilReady(kind, bytes));
  }

  isBlocked(): boolean {
    return this.#locked(() => this.#mirror.isBlocked());
  }

  refund(kind: IoKind, bytes: number): void {
    this.#locked(() => {
      this.#mirror.refund(kind, bytes);
      this.#mirror.saveState(this.#state);
    });
  }

  /**
   * Change the limits for every member. The tokens carry over as in
   * `RateLimiter.update`. This thread's `onUpdate` listeners run at once;
   * other threads' run when they next touch the group (or `poll()`).
   */
  update(config: RateLimiterConfig): void {
    this.#lock();
    try {
      this.#load();
      this.#mirror.update(config);
      writeConfig(this.#config, this.#mirror.config);
      this.#mirror.saveState(this.#state);
      this.#version = Atomics.add(this.#words, Word.Version, 1) + 1;
      this.#changed = true;
    } finally {
      this.#unlock();
    }
    this.#notify();
  }

  /** Call `listener` when the limits change, here or on another thread (seen on the next call or `poll()`). */
  onUpdate(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Notice an update made on another thread (one atomic load when there was none). */
  poll(): void {
    if (Atomics.load(this.#words, Word.Version) !== this.#version) this.#locked(() => {});
  }

  /** With the lock held: bring the mirror up to the shared state. */
  #load(): void {
    const version = Atomics.load(this.#words, Word.Version);
    if (version !== this.#version) {
      // Rebuild the mirror's buckets for the new config; the tokens come from the state below.
      this.#version = version;
      this.#mirror.update(readConfig(this.#config));
      this.#changed = true;
    }
    this.#mirror.loadState(this.#state);
  }

  /** Run `fn` on the mirror brought up to date, under the lock; listeners run after. */
  #locked<T>(fn: () => T): T {
    let result: T;
    this.#lock();
    try {
      this.#load();
      result = fn();
    } finally {
      this.#unlock();
    }
    if (this.#changed) this.#notify();
    return result;
  }

  /** Outside the lock: a listener may call back into the group (a device retrying its queue). */
  #notify(): void {
    this.#changed = false;
    for (const listener of [...this.#listeners]) listener();
  }

  #lock(): void {
    while (Atomics.compareExchange(this.#words, Word.Lock, 0, 1) !== 0) {
      // Another thread is inside a critical section of a few hundred ns.
    }
  }

  #unlock(): void {
    Atomics.store(this.#words, Word.Lock, 0);
  }
}

function writeConfig(out: Float64Array, config: RateLimiterConfig): void {
  let i = 0;
  for (const scope of SCOPES) {
    const budget = budgetOf(config, scope);
    for (const unit of UNITS) {
      const b = budget?.[unit];
      out[i++] = b?.size ?? 0;
      out[i++] = b?.oneTimeBurst ?? 0;
      out[i++] = b?.refillTimeMs ?? 0;
    }
  }
}

/** The config `writeConfig` stored; RateLimiter drops its zero-sized (disabled) buckets. */
function readConfig(src: Float64Array): RateLimiterConfig {
  const out: RateLimiterConfig = { read: {}, write: {} };
  let i = 0;
  for (const scope of SCOPES) {
    const budget = budgetOf(out, scope)!;
    for (const unit of UNITS) {
      budget[unit] = { size: src[i]!, oneTimeBurst: src[i + 1]!, refillTimeMs: src[i + 2]! };
      i += 3;
    }
  }
  return out;
}

/** What `bothLimits` needs of each side: a RateLimiter or a RateLimitGroup. */
export interface Limits {
  consume(kind: IoKind, bytes: number): boolean;
  refund(kind: IoKind, bytes: number): void;
  msUntilReady(): number;
  onUpdate(listener: () => void): () => void;
}

/**
 * A request must fit both limits: a disk's own and its group's. The first is
 * charged first and refunded when the second refuses, as Firecracker refunds
 * its ops bucket when the bytes bucket refuses.
 */
export function bothLimits(first: Limits, second: Limits): Limits {
  return {
    consume(kind, bytes) {
      if (!first.consume(kind, bytes)) return false;
      if (second.consume(kind, bytes)) return true;
      first.refund(kind, bytes);
      return false;
    },
    refund(kind, bytes) {
      first.refund(kind, bytes);
      second.refund(kind, bytes);
    },
    msUntilReady: () => Math.max(first.msUntilReady(), second.msUntilReady()),
    onUpdate(listener) {
      const a = first.onUpdate(listener);
      const b = second.onUpdate(listener);
      return () => {
        a();
        b();
      };
    },
  };
}

/**
 * A disk's limits, as both hosts keep them: its own (which `setRateLimit`
 * changes) and its group's (fixed for the disk's life).
 */
export class DiskLimits {
  #own: RateLimiter | null;
  readonly group: RateLimitGroup | null;

  constructor(own?: RateLimiterConfig, group?: SharedArrayBuffer) {
    this.#own = own ? new RateLimiter(own) : null;
    this.group = group ? new RateLimitGroup(group) : null;
  }

  /** What the device applies: the disk's own limit, its group's, both, or none. */
  get current(): Limits | null {
    const own = this.#own;
    const group = this.group;
    return own && group ? bothLimits(own, group) : (own ?? group);
  }

  /** Replace the disk's own limit: updated in place (its tokens carry over), created, or dropped (null). */
  set(config: RateLimiterConfig | null): void {
    if (config === null) this.#own = null;
    else if (this.#own) this.#own.update(config);
    else this.#own = new RateLimiter(config);
  }
}
