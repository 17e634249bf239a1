// Properties of the limiter over random configs, clocks and request streams:
// the long-run rate never exceeds size per refill time plus the burst, a
// greedy client gets the configured rate, polling never changes the outcome,
// and a refused consume changes no bucket.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IoKind, ManualClock, Reduction, RateLimiter, TokenBucket, type TokenBucketConfig } from '../src/limiter/index.ts';

const bucketConfig = fc.record({
  size: fc.integer({ min: 1, max: 2_000_000 }),
  refillTimeMs: fc.integer({ min: 1, max: 5000 }),
  oneTimeBurst: fc.integer({ min: 0, max: 2_000_000 }),
});

/** Clock steps in ms: whole, fractional, and long idles. */
const step = fc.oneof(
  fc.integer({ min: 0, max: 50 }),
  fc.double({ min: 0, max: 20, noNaN: true }),
  fc.integer({ min: 1000, max: 20_000 }),
);

/** Tokens that `elapsedNs` earn at the config's rate, exactly. */
function earned(config: TokenBucketConfig, elapsedNs: number): bigint {
  return (BigInt(elapsedNs) * BigInt(config.size)) / (BigInt(config.refillTimeMs) * 1_000_000n);
}

describe('TokenBucket properties', () => {
  it('never hands out more than burst + size + size per refill time (beyond the debt it records)', () => {
    fc.assert(
      fc.property(
        bucketConfig,
        fc.array(fc.tuple(step, fc.integer({ min: 0, max: 4_000_000 })), { maxLength: 200 }),
        (config, script) => {
          const clock = new ManualClock(12.345);
          const start = clock.now();
          const bucket = new TokenBucket(config, clock);
          let taken = 0n;
          for (const [dtMs, tokens] of script) {
            clock.advance(dtMs);
            if (bucket.reduce(tokens) !== Reduction.Failure) taken += BigInt(tokens);
            expect(bucket.budget).toBeLessThanOrEqual(config.size);
            const elapsedNs = Math.round((clock.now() - start) * 1e6);
            const allowance = BigInt(config.oneTimeBurst + config.size) + earned(config, elapsedNs);
            expect(taken - BigInt(bucket.debt)).toBeLessThanOrEqual(allowance);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('gives the same outcomes however often it is polled in between', () => {
    fc.assert(
      fc.property(
        bucketConfig,
        fc.array(fc.tuple(step, fc.integer({ min: 0, max: 3_000_000 }), fc.boolean()), { maxLength: 150 }),
        (config, script) => {
          const clockA = new ManualClock();
          const clockB = new ManualClock();
          const quiet = new TokenBucket(config, clockA);
          const polled = new TokenBucket(config, clockB);
          for (const [dtMs, tokens, poll] of script) {
            // The polled bucket is looked at halfway through every step too.
            clockB.advance(dtMs / 2);
            if (poll) {
              void polled.budget;
              void polled.msUntil(tokens);
            }
            clockB.set(clockA.now() + dtMs);
            clockA.advance(dtMs);
            expect(polled.reduce(tokens)).toBe(quiet.reduce(tokens));
            expect(polled.budget).toBe(quiet.budget);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('makes msUntil the earliest moment the request fits', () => {
    fc.assert(
      fc.property(
        bucketConfig,
        // Requests up to 4 buckets' worth keep waits short enough for a double
        // clock reading to resolve single nanoseconds.
        fc.array(fc.tuple(fc.integer({ min: 0, max: 100 }), fc.double({ min: 0, max: 4, noNaN: true })), { maxLength: 50 }),
        (config, script) => {
          const clock = new ManualClock();
          const bucket = new TokenBucket(config, clock);
          for (const [dtMs, fraction] of script) {
            const tokens = Math.round(config.size * fraction);
            clock.advance(dtMs);
            const startMs = clock.now();
            const waitMs = bucket.msUntil(tokens);
            expect(bucket.canReduce(tokens)).toBe(waitMs === 0);
            if (waitMs > 0) {
              clock.set(Math.max(startMs, startMs + (waitMs - 1e-6))); // 1 ns early: still too few tokens
              expect(bucket.canReduce(tokens)).toBe(false);
              clock.set(startMs + waitMs);
              expect(bucket.canReduce(tokens)).toBe(true);
            }
            expect(bucket.reduce(tokens)).not.toBe(Reduction.Failure);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('RateLimiter properties', () => {
  it('gives a greedy client the configured rate, within one bucket and one request', () => {
    fc.assert(
      fc.property(
        bucketConfig,
        fc.double({ min: 0.01, max: 2, noNaN: true }),
        fc.integer({ min: 20, max: 50 }),
        (config, requestFraction, periods) => {
          const clock = new ManualClock();
          const limiter = new RateLimiter({ bandwidth: config }, clock);
          const requestBytes = Math.max(1, Math.round(config.size * requestFraction));
          const durationMs = periods * config.refillTimeMs;
          let moved = 0;
          for (;;) {
            if (limiter.consume(IoKind.Read, requestBytes)) {
              moved += requestBytes;
              continue;
            }
            const waitMs = limiter.msUntilReady();
            expect(waitMs).toBeGreaterThan(0);
            if (clock.now() + waitMs > durationMs) break;
            clock.advance(waitMs);
          }
          const bucket = limiter.bucket('shared', 'bandwidth');
          const rateTokens = Number(earned(config, Math.round(clock.now() * 1e6)));
          // Upper: burst + one full bucket + what the time earned, plus the debt still owed.
          expect(moved).toBeLessThanOrEqual(config.oneTimeBurst + config.size + rateTokens + (bucket?.debt ?? 0));
          // Lower: nothing earned is wasted while the client waits.
          expect(moved).toBeGreaterThanOrEqual(config.oneTimeBurst + rateTokens - 1);
        },
      ),
      { numRuns: 100 },
    );
  }, 180_000); // 40 s beside other suites on 2 cores (load average 50 to 78)

  it('changes no bucket when it refuses', () => {
    const budget = fc.record({ bandwidth: fc.option(bucketConfig, { nil: undefined }), ops: fc.option(bucketConfig, { nil: undefined }) });
    fc.assert(
      fc.property(
        budget,
        budget,
        budget,
        fc.array(fc.tuple(step, fc.constantFrom(IoKind.Read, IoKind.Write, IoKind.Other), fc.integer({ min: 0, max: 3_000_000 })), {
          maxLength: 100,
        }),
        (shared, read, write, script) => {
          const clock = new ManualClock();
          const limiter = new RateLimiter({ ...shared, read, write }, clock);
          const buckets = (['shared', 'read', 'write'] as const).flatMap((scope) =>
            (['bandwidth', 'ops'] as const).map((unit) => limiter.bucket(scope, unit)),
          );
          const snapshot = () => buckets.map((b) => (b ? [b.budget, b.oneTimeBurst] : null));
          for (const [dtMs, kind, bytes] of script) {
            clock.advance(dtMs);
            const before = snapshot();
            if (!limiter.consume(kind, bytes)) expect(snapshot()).toEqual(before);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
