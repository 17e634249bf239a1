// A disk's rate limiter: token buckets for bytes and for operations, shared by
// all requests, plus optional buckets that only reads or only writes draw on.
//
// `consume` is all-or-none: every applicable bucket is checked before any is
// touched, so a refusal leaves no partial charge to refund (Firecracker takes
// ops, then bytes, and refunds the ops when bytes refuse; the result is the
// same, minus its burst-refund approximation). Like Firecracker, a request
// costs one op in every ops bucket and its data length in every bandwidth
// bucket; the device passes 0 bytes for requests that move no data.
//
// A refusal also closes a gate until the refused request could go through:
// until then every request is refused, even small ones the buckets could
// afford. That is Firecracker's "blocked" state, and it is what makes sharing
// one limiter between disks (a group) fair: a disk waiting for a large request
// is not starved by another disk's stream of small ones.
//
// The limiter never sleeps or sets timers. The device asks `msUntilReady()`
// after a refusal, puts the chain back (SplitQueue.undoPop) and retries on its
// own timer; `onUpdate` tells it to retry early when limits change.

import { TokenBucket, isBucketEnabled, validateBucketConfig, type TokenBucketConfig } from './bucket.ts';
import { performanceClock, type Clock } from './clock.ts';

/** What a request does, which decides the buckets it draws on. */
export const IoKind = {
  Read: 'read',
  Write: 'write',
  /** Flush, get-id, discard, write-zeroes: only the shared buckets. */
  Other: 'other',
} as const;
export type IoKind = (typeof IoKind)[keyof typeof IoKind];

/** A bytes budget and an operations budget; an absent (or zero-sized) one is unlimited. */
export interface BudgetConfig {
  /** Bytes: `size` bytes per `refillTimeMs`. */
  bandwidth?: TokenBucketConfig | null;
  /** Requests: `size` operations per `refillTimeMs`. */
  ops?: TokenBucketConfig | null;
}

/**
 * The whole configuration. The top-level budget applies to every request;
 * `read` and `write` add budgets that only reads or only writes draw on (a
 * read must fit both the shared and the read budget).
 */
export interface RateLimiterConfig extends BudgetConfig {
  read?: BudgetConfig;
  write?: BudgetConfig;
}

/** Which budget a bucket belongs to. */
export type BudgetScope = 'shared' | 'read' | 'write';
/** Which kind of token a bucket counts. */
export type BucketUnit = 'bandwidth' | 'ops';

/** Every budget and every bucket in it, in the order the state and a group's buffer lay them out. */
export const SCOPES: readonly BudgetScope[] = ['shared', 'read', 'write'];
export const UNITS: readonly BucketUnit[] = ['bandwidth', 'ops'];
const SCOPES_OF: Record<IoKind, readonly BudgetScope[]> = {
  read: ['shared', 'read'],
  write: ['shared', 'write'],
  other: ['shared'],
};

type Buckets = Record<BudgetScope, Record<BucketUnit, TokenBucket | null>>;
interface Charge {
  bucket: TokenBucket;
  /** true: costs the request's bytes; false: costs one op. */
  countsBytes: boolean;
}

export class RateLimiter {
  readonly #clock: Clock;
  #config: RateLimiterConfig = {};
  #buckets: Buckets = emptyBuckets();
  /** Per kind, the buckets a request draws on: rebuilt on update, so `consume` allocates nothing. */
  #charges: Record<IoKind, Charge[]> = { read: [], write: [], other: [] };
  /** Clock reading before which every request is refused (see the file comment). */
  #gateMs = -Infinity;
  readonly #listeners = new Set<() => void>();

  constructor(config: RateLimiterConfig = {}, clock: Clock = performanceClock) {
    this.#clock = clock;
    this.update(config);
  }

  /** A copy of the configuration in force (disabled buckets omitted, bursts explicit). */
  get config(): RateLimiterConfig {
    return normalize(this.#config);
  }

  /** Whether any bucket limits anything. */
  get enabled(): boolean {
    return this.#charges.read.length + this.#charges.write.length > 0;
  }

  /** A bucket, for inspection (level meters, tests); null when that budget is unlimited. */
  bucket(scope: BudgetScope, unit: BucketUnit): TokenBucket | null {
    return this.#buckets[scope][unit];
  }

  /**
   * Charge one request of `bytes` bytes to every bucket of its kind, or to
   * none. Returns false when throttled: run nothing, retry after
   * `msUntilReady()`.
   */
  consume(kind: IoKind, bytes: number): boolean {
    const charges = this.#charges[kind];
    if (charges.length === 0) return true;
    if (this.#clock.now() < this.#gateMs) {
      this.#closeGate(charges, bytes);
      return false;
    }
    for (const { bucket, countsBytes } of charges) {
      if (!bucket.canReduce(countsBytes ? bytes : 1)) {
        this.#closeGate(charges, bytes);
        return false;
      }
    }
    for (const { bucket, countsBytes } of charges) bucket.reduce(countsBytes ? bytes : 1);
    return true;
  }

  /**
   * Milliseconds until the next attempt may succeed (0: try now). With no
   * arguments: until the gate a refusal closed opens again, which is when the
   * refused request fits. With a request: until that request fits.
   */
  msUntilReady(kind?: IoKind, bytes = 0): number {
    const gateMs = Math.max(0, this.#gateMs - this.#clock.now());
    if (kind === undefined) return gateMs;
    return Math.max(gateMs, this.#msUntilFits(this.#charges[kind], bytes));
  }

  /** Whether a refusal has closed the gate and it is still closed. */
  isBlocked(): boolean {
    return this.#clock.now() < this.#gateMs;
  }

  /** Give back what `consume(kind, bytes)` took, for a request that was then dropped unrun (e.g. by a reset). */
  refund(kind: IoKind, bytes: number): void {
    for (const { bucket, countsBytes } of this.#charges[kind]) bucket.refund(countsBytes ? bytes : 1);
  }

  /**
   * Replace the configuration while the guest runs. Absent budgets become
   * unlimited. A bucket whose config is unchanged keeps its state; a changed
   * one keeps its tokens (clamped to the new size) and any debt; a new one
   * starts full. The gate opens, and `onUpdate` listeners run so devices can
   * retry throttled chains under the new limits. Throws a RangeError (and
   * changes nothing) on a malformed config.
   */
  update(config: RateLimiterConfig): void {
    const next = normalize(config);
    const buckets = emptyBuckets();
    for (const scope of SCOPES) {
      for (const unit of UNITS) {
        const wanted = budgetOf(next, scope)?.[unit] ?? null;
        const current = this.#buckets[scope][unit];
        if (!wanted) continue;
        if (!current) buckets[scope][unit] = new TokenBucket(wanted, this.#clock);
        else {
          if (!sameBucketConfig(current, wanted)) current.reconfigure(wanted);
          buckets[scope][unit] = current;
        }
      }
    }
    this.#config = next;
    this.#buckets = buckets;
    for (const kind of Object.values(IoKind)) {
      this.#charges[kind] = SCOPES_OF[kind].flatMap((scope) =>
        UNITS.flatMap((unit) => {
          const bucket = buckets[scope][unit];
          return bucket ? [{ bucket, countsBytes: unit === 'bandwidth' }] : [];
        }),
      );
    }
    this.#gateMs = -Infinity;
    for (const listener of [...this.#listeners]) listener();
  }

  /** Call `listener` after every `update`; returns the unsubscribe function. */
  onUpdate(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Write the changing state (the gate and every bucket's tokens) into
   * `out[at … at + RateLimiter.STATE_SLOTS)`, for a limiter of the same
   * config to take with `loadState`: how a RateLimitGroup shares one budget
   * between threads.
   */
  saveState(out: Float64Array, at = 0): void {
    out[at] = this.#gateMs;
    let i = at + 1;
    for (const scope of SCOPES) {
      for (const unit of UNITS) {
        this.#buckets[scope][unit]?.saveState(out, i);
        i += TokenBucket.STATE_SLOTS;
      }
    }
  }

  loadState(src: Float64Array, at = 0): void {
    this.#gateMs = src[at]!;
    let i = at + 1;
    for (const scope of SCOPES) {
      for (const unit of UNITS) {
        this.#buckets[scope][unit]?.loadState(src, i);
        i += TokenBucket.STATE_SLOTS;
      }
    }
  }

  /** Numbers `saveState` writes. */
  static readonly STATE_SLOTS = 1 + SCOPES.length * UNITS.length * TokenBucket.STATE_SLOTS;

  #closeGate(charges: readonly Charge[], bytes: number): void {
    const untilMs = this.#clock.now() + this.#msUntilFits(charges, bytes);
    if (untilMs > this.#gateMs) this.#gateMs = untilMs;
  }

  #msUntilFits(charges: readonly Charge[], bytes: number): number {
    let waitMs = 0;
    for (const { bucket, countsBytes } of charges) {
      waitMs = Math.max(waitMs, bucket.msUntil(countsBytes ? bytes : 1));
    }
    return waitMs;
  }
}

function emptyBuckets(): Buckets {
  return {
    shared: { bandwidth: null, ops: null },
    read: { bandwidth: null, ops: null },
    write: { bandwidth: null, ops: null },
  };
}

/** The part of `config` for one budget (the top level is the shared one). */
export function budgetOf(config: RateLimiterConfig, scope: BudgetScope): BudgetConfig | undefined {
  return scope === 'shared' ? config : config[scope];
}

/** Validate everything first (so a bad update changes nothing) and drop disabled buckets. */
function normalize(config: RateLimiterConfig): RateLimiterConfig {
  const out: RateLimiterConfig = {};
  for (const scope of SCOPES) {
    const budget = budgetOf(config, scope);
    const kept: BudgetConfig = {};
    for (const unit of UNITS) {
      const bucket = budget?.[unit];
      if (bucket == null) continue;
      validateBucketConfig(bucket, `rate limiter ${scope === 'shared' ? '' : `${scope}.`}${unit}`);
      if (isBucketEnabled(bucket)) {
        kept[unit] = { size: bucket.size, oneTimeBurst: bucket.oneTimeBurst ?? 0, refillTimeMs: bucket.refillTimeMs };
      }
    }
    if (scope === 'shared') Object.assign(out, kept);
    else if (kept.bandwidth || kept.ops) out[scope] = kept;
  }
  return out;
}

function sameBucketConfig(bucket: TokenBucket, config: TokenBucketConfig): boolean {
  return (
    bucket.size === config.size &&
    bucket.refillTimeMs === config.refillTimeMs &&
    bucket.initialOneTimeBurst === (config.oneTimeBurst ?? 0)
  );
}
