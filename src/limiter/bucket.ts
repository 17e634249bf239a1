// A token bucket with Firecracker's semantics, in exact integer arithmetic.
//
// A bucket holds up to `size` tokens and refills from empty to full in
// `refillTimeMs`; an extra `oneTimeBurst` is spent first and never comes back.
// A request larger than `size` is allowed once the bucket is full and leaves
// it in debt (the budget goes negative): later requests wait until the debt is
// paid off, so the long-run rate holds without a separate "blocked" timer.
// Firecracker empties the bucket and blocks the limiter for the overdraft's
// refill time instead; the two agree on the rate.
//
// Tokens are computed from elapsed time, never added per tick. Time is counted
// in integer nanoseconds from an anchor reading, and the rate is the reduced
// fraction size / (refillTimeMs · 10⁶) = num / den tokens per ns. A refill
// adds ⌊(elapsed · num + carry) / den⌋ tokens and keeps the remainder as the
// next carry, so the tokens earned over any span are exactly ⌊span · rate⌋
// however often the bucket is polled. (Firecracker instead moves its clock by
// the time the tokens cost, rounded up, which loses up to 1 ns per refill.)
// Products that would pass 2^53 fall back to BigInt.

import type { Clock } from './clock.ts';

/** How a bucket is sized. All values are non-negative integers. */
export interface TokenBucketConfig {
  /** Tokens the bucket holds when full; it refills this many every `refillTimeMs`. 0 disables the bucket. */
  size: number;
  /** Extra tokens available once, spent before the budget and never refilled. */
  oneTimeBurst?: number;
  /** Milliseconds to refill from empty to full. 0 disables the bucket. */
  refillTimeMs: number;
}

/** What `reduce` did. */
export const Reduction = {
  /** The tokens were taken. */
  Success: 'success',
  /** Not enough tokens: nothing was taken. */
  Failure: 'failure',
  /** More than `size` tokens were taken from a full bucket, which now owes the rest. */
  OverConsumption: 'over-consumption',
} as const;
export type Reduction = (typeof Reduction)[keyof typeof Reduction];

const NS_PER_MS = 1_000_000;
// Beyond this many nanoseconds past the anchor, move the anchor forward so
// that readings converted to nanoseconds stay far below 2^53.
const REANCHOR_NS = 2 ** 45;

/** Whether a config describes a working bucket (Firecracker: size or refill time 0 means "no limit"). */
export function isBucketEnabled(config: TokenBucketConfig | null | undefined): config is TokenBucketConfig {
  return config != null && config.size > 0 && config.refillTimeMs > 0;
}

/** Throws a RangeError unless every field is a non-negative safe integer. */
export function validateBucketConfig(config: TokenBucketConfig, what = 'token bucket'): void {
  for (const [field, value] of [
    ['size', config.size],
    ['oneTimeBurst', config.oneTimeBurst ?? 0],
    ['refillTimeMs', config.refillTimeMs],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(`${what}: ${field} must be a non-negative integer, got ${value}`);
    }
  }
  if (config.refillTimeMs * NS_PER_MS > Number.MAX_SAFE_INTEGER) {
    throw new RangeError(`${what}: refillTimeMs ${config.refillTimeMs} is too large`);
  }
}

export class TokenBucket {
  readonly #clock: Clock;
  #size = 0;
  #refillTimeMs = 0;
  #initialBurst = 0;
  /** The refill rate as a reduced fraction: `#rateTokens` tokens per `#rateNs` ns. */
  #rateTokens = 1;
  #rateNs = 1;

  /** One-time burst left; while it is > 0 the budget is untouched (so full). */
  #burst = 0;
  /** Tokens available, ≤ size; negative while the bucket owes an over-consumption. */
  #budget = 0;
  /** The clock reading that nanosecond 0 stands for. */
  #anchorMs: number;
  /** The reading (whole ns since the anchor) up to which time has been turned into tokens. */
  #creditedNs = 0;
  /** Part of a token earned but not yet credited, in units of 1/`#rateNs` token; < `#rateNs`. */
  #carry = 0;

  /** Starts full, with its whole one-time burst. */
  constructor(config: TokenBucketConfig, clock: Clock) {
    this.#clock = clock;
    this.#anchorMs = clock.now();
    this.#configure(config);
    this.#budget = this.#size;
    this.#burst = this.#initialBurst;
  }

  get size(): number {
    return this.#size;
  }

  get refillTimeMs(): number {
    return this.#refillTimeMs;
  }

  /** The configured one-time burst. */
  get initialOneTimeBurst(): number {
    return this.#initialBurst;
  }

  /** One-time burst not yet spent. */
  get oneTimeBurst(): number {
    return this.#burst;
  }

  /** Tokens available now, refilled up to the clock (negative while in debt; burst not included). */
  get budget(): number {
    this.#refill();
    return this.#budget;
  }

  /** Tokens owed after an over-consumption (0 when not in debt). */
  get debt(): number {
    return Math.max(0, -this.budget);
  }

  /**
   * Take `tokens`: from the one-time burst first, then from the budget. A
   * request up to `size` needs that many tokens present; a larger one needs a
   * full bucket and leaves the excess as debt. A failure takes nothing.
   */
  reduce(tokens: number): Reduction {
    checkTokens(tokens);
    if (this.#burst >= tokens) {
      this.#burst -= tokens;
      return Reduction.Success;
    }
    const fromBudget = tokens - this.#burst;
    this.#refill();
    if (this.#budget < Math.min(fromBudget, this.#size)) return Reduction.Failure;
    this.#burst = 0;
    this.#budget -= fromBudget;
    return fromBudget > this.#size ? Reduction.OverConsumption : Reduction.Success;
  }

  /** Whether `reduce(tokens)` would succeed now (takes nothing). */
  canReduce(tokens: number): boolean {
    checkTokens(tokens);
    return this.#missingFor(tokens) === 0;
  }

  /**
   * Milliseconds from now until `reduce(tokens)` can succeed (0 if it can
   * now), assuming nothing else takes tokens meanwhile. Exact to the ns.
   */
  msUntil(tokens: number): number {
    checkTokens(tokens);
    const missing = this.#missingFor(tokens);
    if (missing === 0) return 0;
    // #missingFor refilled up to the current reading, leaving `#carry` of the
    // next token already earned: the rest of `missing` tokens must still accrue.
    const waitNs = mulAddDiv(missing, this.#rateNs, -this.#carry, this.#rateTokens, true);
    return waitNs / NS_PER_MS;
  }

  /**
   * Give back tokens taken for work that did not happen. They return to the
   * budget (up to `size`, paying debt first); any excess returns to an
   * unfinished one-time burst, up to its initial value.
   */
  refund(tokens: number): void {
    checkTokens(tokens);
    this.#refill();
    const toBudget = Math.min(tokens, this.#size - this.#budget);
    this.#budget += toBudget;
    if (this.#burst > 0) this.#burst = Math.min(this.#initialBurst, this.#burst + tokens - toBudget);
  }

  /**
   * Change size, burst or refill time in place. The bucket keeps the tokens
   * it has (clamped to the new size; a debt is still owed) and the unspent
   * burst (clamped to the new burst): an update never hands out free tokens.
   * The part of a token earned at the old rate is dropped.
   */
  reconfigure(config: TokenBucketConfig): void {
    this.#refill();
    this.#configure(config);
    this.#carry = 0;
    this.#budget = Math.min(this.#budget, this.#size);
    this.#burst = Math.min(this.#burst, this.#initialBurst);
  }

  /** Write the bucket's changing state (not its config) into `out[at … at + STATE_SLOTS)`. */
  saveState(out: Float64Array, at: number): void {
    out[at] = this.#burst;
    out[at + 1] = this.#budget;
    out[at + 2] = this.#anchorMs;
    out[at + 3] = this.#creditedNs;
    out[at + 4] = this.#carry;
  }

  /** Take the state `saveState` wrote (by a bucket of the same config, on the same clock). */
  loadState(src: Float64Array, at: number): void {
    this.#burst = src[at]!;
    this.#budget = src[at + 1]!;
    this.#anchorMs = src[at + 2]!;
    this.#creditedNs = src[at + 3]!;
    this.#carry = src[at + 4]!;
  }

  /** Numbers `saveState` writes. */
  static readonly STATE_SLOTS = 5;

  #configure(config: TokenBucketConfig): void {
    validateBucketConfig(config);
    if (!isBucketEnabled(config)) {
      throw new RangeError('token bucket: size and refillTimeMs must be > 0 (a disabled bucket is no bucket)');
    }
    this.#size = config.size;
    this.#refillTimeMs = config.refillTimeMs;
    this.#initialBurst = config.oneTimeBurst ?? 0;
    const refillNs = config.refillTimeMs * NS_PER_MS;
    const divisor = gcd(config.size, refillNs);
    this.#rateTokens = config.size / divisor;
    this.#rateNs = refillNs / divisor;
  }

  /** Tokens the budget lacks for `reduce(tokens)` to succeed (after refilling). */
  #missingFor(tokens: number): number {
    if (this.#burst >= tokens) return 0;
    this.#refill();
    return Math.max(0, Math.min(tokens - this.#burst, this.#size) - this.#budget);
  }

  /** The current reading in whole ns since the anchor (never before the credited instant). */
  #readingNs(): number {
    return Math.max(this.#creditedNs, Math.round((this.#clock.now() - this.#anchorMs) * NS_PER_MS));
  }

  /** Credit the tokens that the time since the last refill has earned. */
  #refill(): void {
    const nowNs = this.#readingNs();
    const elapsedNs = nowNs - this.#creditedNs;
    this.#creditedNs = nowNs;
    const missing = this.#size - this.#budget;
    if (missing > 0) {
      const earned = elapsedNs * this.#rateTokens + this.#carry;
      let tokens: number;
      if (earned <= Number.MAX_SAFE_INTEGER) {
        this.#carry = earned % this.#rateNs;
        tokens = (earned - this.#carry) / this.#rateNs;
      } else {
        const big = BigInt(elapsedNs) * BigInt(this.#rateTokens) + BigInt(this.#carry);
        const den = BigInt(this.#rateNs);
        this.#carry = Number(big % den);
        tokens = Number(big / den);
      }
      if (tokens < missing) {
        this.#budget += tokens;
      } else {
        this.#budget = this.#size;
        this.#carry = 0;
      }
    } else {
      // Time spent full earns nothing.
      this.#carry = 0;
    }
    if (this.#creditedNs >= REANCHOR_NS) {
      // Whole milliseconds only, so readings keep converting the same way
      // (up to float rounding, once every ~9.8 hours of credited time).
      const shiftMs = Math.floor(this.#creditedNs / NS_PER_MS);
      this.#anchorMs += shiftMs;
      this.#creditedNs -= shiftMs * NS_PER_MS;
    }
  }
}

function checkTokens(tokens: number): void {
  if (!Number.isSafeInteger(tokens) || tokens < 0) {
    throw new RangeError(`token bucket: token count must be a non-negative integer, got ${tokens}`);
  }
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** ⌊(a·b + c) / d⌋, or ⌈…⌉ when `roundUp`, exactly, for integers with a·b + c ≥ 0 and d > 0. */
function mulAddDiv(a: number, b: number, c: number, d: number, roundUp: boolean): number {
  const product = a * b;
  if (product <= Number.MAX_SAFE_INTEGER) {
    const n = product + c;
    const remainder = n % d;
    return (n - remainder) / d + (roundUp && remainder !== 0 ? 1 : 0);
  }
  const n = BigInt(a) * BigInt(b) + BigInt(c);
  const big = BigInt(d);
  return Number((roundUp ? n + big - 1n : n) / big);
}
