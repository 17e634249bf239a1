// TokenBucket against a manual clock: exact token counts over time, the
// one-time burst, over-consumption and its debt, refunds, reconfiguration.

import { describe, expect, it } from 'vitest';
import { ManualClock, Reduction, TokenBucket } from '../src/limiter/index.ts';

function bucket(size: number, refillTimeMs: number, oneTimeBurst = 0, clock = new ManualClock()) {
  return { clock, bucket: new TokenBucket({ size, refillTimeMs, oneTimeBurst }, clock) };
}

describe('TokenBucket refill', () => {
  it('starts full and refills exactly size tokens per refill time', () => {
    const { clock, bucket: b } = bucket(1000, 1000);
    expect(b.budget).toBe(1000);
    expect(b.reduce(1000)).toBe(Reduction.Success);
    expect(b.budget).toBe(0);
    clock.advance(1);
    expect(b.budget).toBe(1);
    clock.advance(249);
    expect(b.budget).toBe(250);
    clock.advance(10_000);
    expect(b.budget).toBe(1000); // capped at size
  });

  it('carries fractions of a token between refills instead of dropping them', () => {
    // 3 tokens per 10 ms: one token every 3⅓ ms.
    const { clock, bucket: b } = bucket(3, 10);
    b.reduce(3);
    const seen: number[] = [];
    for (let i = 0; i < 10; i++) {
      clock.advance(1);
      seen.push(b.budget);
    }
    expect(seen).toEqual([0, 0, 0, 1, 1, 1, 2, 2, 2, 3]);
  });

  it('gives the same count however often it is polled', () => {
    const polled = bucket(7, 3);
    const quiet = bucket(7, 3);
    polled.bucket.reduce(7);
    quiet.bucket.reduce(7);
    for (let i = 0; i < 30; i++) {
      polled.clock.advance(0.1);
      quiet.clock.advance(0.1);
      void polled.bucket.budget;
    }
    // 3 ms → 7 tokens exactly, despite 30 polls of 0.1 ms (each worth 0.233 tokens).
    expect(polled.bucket.budget).toBe(7);
    expect(quiet.bucket.budget).toBe(7);
  });

  it('stays exact with sizes whose products pass 2^53 (BigInt path)', () => {
    const { clock, bucket: b } = bucket(1_000_003, 1000);
    b.reduce(1_000_003);
    let total = 0;
    for (let i = 0; i < 999; i++) {
      clock.advance(1);
      const available = b.budget;
      total += available;
      b.reduce(available);
    }
    // 999 ms of 1,000,003 tokens/s, floored once at the end, not per step.
    expect(total).toBe(Math.floor((999 * 1_000_003) / 1000));
  });

  it('stays exact on a large clock origin and across re-anchoring', () => {
    const clock = new ManualClock(1.7e12); // a Date.now()-sized origin
    const { bucket: b } = bucket(1000, 1000, 0, clock);
    let total = 0;
    // 40,000 s of 900 ms steps passes the internal re-anchoring point (2^45 ns).
    const steps = 44_445;
    for (let i = 0; i < steps; i++) {
      total += b.budget;
      b.reduce(b.budget);
      clock.advance(900);
    }
    total += b.budget;
    expect(total).toBe(1000 + steps * 900);
  });

  it('treats a clock stepping backwards as no time passing', () => {
    let nowMs = 100;
    const clock = { now: () => nowMs };
    const b = new TokenBucket({ size: 10, refillTimeMs: 10 }, clock);
    b.reduce(10);
    nowMs = 50;
    expect(b.budget).toBe(0);
    nowMs = 103;
    expect(b.budget).toBe(3);
  });
});

describe('TokenBucket reduce', () => {
  it('fails without taking anything when the budget is short', () => {
    const { bucket: b } = bucket(100, 100);
    expect(b.reduce(60)).toBe(Reduction.Success);
    expect(b.reduce(41)).toBe(Reduction.Failure);
    expect(b.budget).toBe(40);
    expect(b.reduce(40)).toBe(Reduction.Success);
    expect(b.budget).toBe(0);
  });

  it('allows a request larger than the bucket once, then owes the debt', () => {
    const { clock, bucket: b } = bucket(100, 100);
    expect(b.reduce(250)).toBe(Reduction.OverConsumption);
    expect(b.budget).toBe(-150);
    expect(b.debt).toBe(150);
    // Nothing more until the debt is paid: 150 tokens = 150 ms, then 1 more.
    clock.advance(150);
    expect(b.budget).toBe(0);
    expect(b.reduce(1)).toBe(Reduction.Failure);
    clock.advance(1);
    expect(b.reduce(1)).toBe(Reduction.Success);
  });

  it('lets an oversized request through only from a full bucket', () => {
    const { clock, bucket: b } = bucket(100, 100);
    b.reduce(1);
    expect(b.reduce(250)).toBe(Reduction.Failure);
    expect(b.msUntil(250)).toBe(1);
    clock.advance(1);
    expect(b.reduce(250)).toBe(Reduction.OverConsumption);
    expect(b.debt).toBe(150);
  });

  it('spends the one-time burst first and never refills it', () => {
    const { clock, bucket: b } = bucket(10, 10, 50);
    expect(b.reduce(45)).toBe(Reduction.Success);
    expect(b.oneTimeBurst).toBe(5);
    expect(b.budget).toBe(10);
    expect(b.reduce(8)).toBe(Reduction.Success); // 5 from the burst, 3 from the budget
    expect(b.oneTimeBurst).toBe(0);
    expect(b.budget).toBe(7);
    clock.advance(1_000_000);
    expect(b.oneTimeBurst).toBe(0);
    expect(b.budget).toBe(10);
  });

  it('takes the rest of a request from the budget once the burst runs out', () => {
    const { bucket: b } = bucket(10, 10, 5);
    expect(b.reduce(3)).toBe(Reduction.Success);
    expect(b.reduce(2 + 10)).toBe(Reduction.Success);
    expect(b.oneTimeBurst).toBe(0);
    expect(b.budget).toBe(0);
    expect(b.reduce(1)).toBe(Reduction.Failure);
  });

  it('keeps the burst when a request it only partly covers fails', () => {
    const { bucket: b } = bucket(10, 10, 5);
    // Growing the bucket keeps its 10 tokens: 5 burst + 10 budget < 16.
    b.reconfigure({ size: 100, refillTimeMs: 100, oneTimeBurst: 5 });
    expect(b.reduce(16)).toBe(Reduction.Failure);
    expect(b.oneTimeBurst).toBe(5);
    expect(b.budget).toBe(10);
    expect(b.reduce(15)).toBe(Reduction.Success);
    expect(b.oneTimeBurst).toBe(0);
    expect(b.budget).toBe(0);
  });

  it('rejects token counts that are not non-negative integers', () => {
    const { bucket: b } = bucket(10, 10);
    expect(() => b.reduce(-1)).toThrow(RangeError);
    expect(() => b.reduce(1.5)).toThrow(RangeError);
    expect(b.reduce(0)).toBe(Reduction.Success);
  });

  it('rejects disabled or malformed configs', () => {
    const clock = new ManualClock();
    expect(() => new TokenBucket({ size: 0, refillTimeMs: 10 }, clock)).toThrow(RangeError);
    expect(() => new TokenBucket({ size: 10, refillTimeMs: 0 }, clock)).toThrow(RangeError);
    expect(() => new TokenBucket({ size: 10, refillTimeMs: 0.5 }, clock)).toThrow(RangeError);
    expect(() => new TokenBucket({ size: 10, refillTimeMs: 10, oneTimeBurst: -1 }, clock)).toThrow(RangeError);
  });
});

describe('TokenBucket msUntil', () => {
  it('is exact to the nanosecond', () => {
    const { clock, bucket: b } = bucket(3, 10);
    b.reduce(3);
    const waitMs = b.msUntil(1);
    expect(waitMs).toBeCloseTo(3.333334, 9); // ⌈10/3 ms⌉ in ns
    clock.advance(3.333333);
    expect(b.canReduce(1)).toBe(false);
    clock.advance(0.000001);
    expect(b.canReduce(1)).toBe(true);
    expect(b.msUntil(1)).toBe(0);
  });

  it('accounts for the carried fraction and for debt', () => {
    const { clock, bucket: b } = bucket(100, 100);
    b.reduce(300); // debt 200
    expect(b.msUntil(1)).toBe(201);
    expect(b.msUntil(100)).toBe(300);
    expect(b.msUntil(1000)).toBe(300); // oversized: needs a full bucket
    clock.advance(120.5);
    expect(b.msUntil(1)).toBe(80.5);
  });

  it('counts the burst', () => {
    const { bucket: b } = bucket(10, 10, 20);
    expect(b.msUntil(30)).toBe(0);
    expect(b.msUntil(31)).toBe(0); // full bucket: oversized request allowed
  });
});

describe('TokenBucket refund and reconfigure', () => {
  it('refunds into the budget up to size, paying debt first', () => {
    const { bucket: b } = bucket(100, 100);
    b.reduce(250);
    b.refund(100);
    expect(b.budget).toBe(-50);
    b.refund(1000);
    expect(b.budget).toBe(100);
  });

  it('refunds an unfinished burst up to its initial value', () => {
    const { bucket: b } = bucket(10, 10, 20);
    b.reduce(15);
    b.refund(100);
    expect(b.oneTimeBurst).toBe(20);
    expect(b.budget).toBe(10);
  });

  it('keeps tokens and debt across a change, clamped to the new size', () => {
    const { clock, bucket: b } = bucket(1000, 1000, 500);
    b.reduce(500 + 400); // burst spent, 600 left
    b.reconfigure({ size: 100, refillTimeMs: 10, oneTimeBurst: 50 });
    expect(b.budget).toBe(100);
    expect(b.oneTimeBurst).toBe(0); // a burst is one-time: a change does not restore it
    b.reduce(100);
    clock.advance(1);
    expect(b.budget).toBe(10); // new rate: 10 per ms
    b.reduce(10 + 0);
    expect(b.reduce(300)).toBe(Reduction.Failure);
    clock.advance(10);
    expect(b.reduce(300)).toBe(Reduction.OverConsumption);
    b.reconfigure({ size: 1000, refillTimeMs: 1000 });
    expect(b.budget).toBe(-200); // debt survives
    clock.advance(200);
    expect(b.budget).toBe(0);
  });
});
