// RateLimiter against a manual clock: all-or-none charging across bytes and ops
// buckets, read/write budgets, the gate and msUntilReady, live updates, and one
// limiter shared by several disks.

import { describe, expect, it } from 'vitest';
import { IoKind, ManualClock, RateLimiter, type RateLimiterConfig } from '../src/limiter/index.ts';

function limiter(config: RateLimiterConfig) {
  const clock = new ManualClock();
  return { clock, limiter: new RateLimiter(config, clock) };
}

describe('RateLimiter consume', () => {
  it('lets everything through when nothing is configured', () => {
    const { limiter: l } = limiter({ bandwidth: { size: 0, refillTimeMs: 1000 }, ops: null });
    expect(l.enabled).toBe(false);
    for (let i = 0; i < 1000; i++) expect(l.consume(IoKind.Write, 1 << 20)).toBe(true);
    expect(l.msUntilReady()).toBe(0);
    expect(l.msUntilReady(IoKind.Read, 1 << 30)).toBe(0);
    expect(l.config).toEqual({});
  });

  it('charges bytes to the bandwidth bucket and one op to the ops bucket', () => {
    const { clock, limiter: l } = limiter({
      bandwidth: { size: 8192, refillTimeMs: 100 },
      ops: { size: 3, refillTimeMs: 30 },
    });
    expect(l.consume(IoKind.Read, 4096)).toBe(true);
    expect(l.consume(IoKind.Write, 1024)).toBe(true);
    expect(l.bucket('shared', 'bandwidth')?.budget).toBe(8192 - 5120);
    expect(l.bucket('shared', 'ops')?.budget).toBe(1);
    expect(l.consume(IoKind.Other, 0)).toBe(true); // a flush: one op, no bytes
    expect(l.bucket('shared', 'bandwidth')?.budget).toBe(8192 - 5120);
    expect(l.consume(IoKind.Other, 0)).toBe(false);
    clock.advance(10);
    expect(l.consume(IoKind.Other, 0)).toBe(true);
  });

  it('takes nothing from the bytes bucket when the ops bucket refuses', () => {
    const { limiter: l } = limiter({
      bandwidth: { size: 10_000, refillTimeMs: 1000 },
      ops: { size: 1, refillTimeMs: 1000 },
    });
    expect(l.consume(IoKind.Read, 1000)).toBe(true);
    expect(l.consume(IoKind.Read, 1000)).toBe(false);
    expect(l.bucket('shared', 'bandwidth')?.budget).toBe(9000);
    expect(l.bucket('shared', 'ops')?.budget).toBe(0);
  });

  it('takes nothing from the ops bucket when the bytes bucket refuses', () => {
    const { limiter: l } = limiter({
      bandwidth: { size: 1000, refillTimeMs: 1000 },
      ops: { size: 10, refillTimeMs: 1000 },
      read: { bandwidth: { size: 500, refillTimeMs: 1000 }, ops: { size: 10, refillTimeMs: 1000 } },
    });
    expect(l.consume(IoKind.Read, 400)).toBe(true);
    expect(l.consume(IoKind.Read, 400)).toBe(false); // only read.bandwidth (100 left) refuses
    expect(l.bucket('shared', 'bandwidth')?.budget).toBe(600);
    expect(l.bucket('shared', 'ops')?.budget).toBe(9);
    expect(l.bucket('read', 'ops')?.budget).toBe(9);
    expect(l.bucket('read', 'bandwidth')?.budget).toBe(100);
  });

  it('keeps separate read and write budgets under the shared one', () => {
    const { limiter: l } = limiter({
      bandwidth: { size: 1000, refillTimeMs: 1000 },
      read: { bandwidth: { size: 300, refillTimeMs: 1000 } },
      write: { ops: { size: 2, refillTimeMs: 1000 } },
    });
    expect(l.consume(IoKind.Read, 300)).toBe(true);
    expect(l.consume(IoKind.Write, 100)).toBe(true);
    expect(l.consume(IoKind.Write, 100)).toBe(true);
    expect(l.consume(IoKind.Write, 1)).toBe(false); // write ops spent
  });

  it('charges other requests to the shared budgets only', () => {
    const { limiter: l } = limiter({
      read: { bandwidth: { size: 10, refillTimeMs: 1000 } },
      write: { ops: { size: 1, refillTimeMs: 1000 } },
    });
    l.consume(IoKind.Read, 10);
    l.consume(IoKind.Write, 0);
    expect(l.consume(IoKind.Other, 1 << 20)).toBe(true);
  });

  it('allows an oversized request from a full bucket and makes later ones wait off the debt', () => {
    const { clock, limiter: l } = limiter({ bandwidth: { size: 256 * 1024, refillTimeMs: 100 } });
    expect(l.consume(IoKind.Write, 1024 * 1024)).toBe(true);
    expect(l.bucket('shared', 'bandwidth')?.debt).toBe(768 * 1024);
    expect(l.consume(IoKind.Write, 4096)).toBe(false);
    // 768 KiB of debt + 4 KiB at 256 KiB per 100 ms.
    expect(l.msUntilReady()).toBe(((768 + 4) / 256) * 100);
    clock.advance(l.msUntilReady());
    expect(l.consume(IoKind.Write, 4096)).toBe(true);
  });

  it('does not hold a zero-byte request behind bandwidth debt', () => {
    const { limiter: l } = limiter({ bandwidth: { size: 100, refillTimeMs: 100 } });
    l.consume(IoKind.Write, 1000);
    expect(l.consume(IoKind.Other, 0)).toBe(true);
  });

  it('refunds a consumed request to every bucket it was charged to', () => {
    const { limiter: l } = limiter({
      bandwidth: { size: 1000, refillTimeMs: 1000 },
      ops: { size: 10, refillTimeMs: 1000 },
      write: { bandwidth: { size: 500, refillTimeMs: 1000 } },
    });
    l.consume(IoKind.Write, 400);
    l.refund(IoKind.Write, 400);
    expect(l.bucket('shared', 'bandwidth')?.budget).toBe(1000);
    expect(l.bucket('shared', 'ops')?.budget).toBe(10);
    expect(l.bucket('write', 'bandwidth')?.budget).toBe(500);
  });
});

describe('RateLimiter msUntilReady and the gate', () => {
  it('says exactly when a refused request fits', () => {
    const { clock, limiter: l } = limiter({
      bandwidth: { size: 1000, refillTimeMs: 1000 },
      ops: { size: 10, refillTimeMs: 100 },
    });
    expect(l.consume(IoKind.Read, 900)).toBe(true);
    expect(l.consume(IoKind.Read, 500)).toBe(false);
    expect(l.isBlocked()).toBe(true);
    expect(l.msUntilReady()).toBe(400);
    expect(l.msUntilReady(IoKind.Read, 500)).toBe(400);
    expect(l.msUntilReady(IoKind.Read, 1000)).toBe(900);
    clock.advance(399);
    expect(l.msUntilReady()).toBe(1);
    expect(l.consume(IoKind.Read, 500)).toBe(false);
    clock.advance(1);
    expect(l.isBlocked()).toBe(false);
    expect(l.msUntilReady()).toBe(0);
    expect(l.consume(IoKind.Read, 500)).toBe(true);
  });

  it('takes the slowest bucket', () => {
    const { limiter: l } = limiter({
      bandwidth: { size: 1000, refillTimeMs: 1000 },
      ops: { size: 1, refillTimeMs: 250 },
    });
    l.consume(IoKind.Read, 990);
    expect(l.consume(IoKind.Read, 20)).toBe(false);
    expect(l.msUntilReady()).toBe(250); // bytes need 10 ms, the op 250 ms
  });

  it('refuses small requests while a refused large one waits (fair sharing)', () => {
    // One limiter shared by two disks: the group.
    const { clock, limiter: shared } = limiter({ bandwidth: { size: 1000, refillTimeMs: 1000 } });
    const diskA = shared;
    const diskB = shared;
    expect(diskB.consume(IoKind.Read, 600)).toBe(true);
    expect(diskA.consume(IoKind.Read, 800)).toBe(false); // needs 400 ms
    clock.advance(100);
    // 500 tokens are there, but disk A is first in line.
    expect(diskB.consume(IoKind.Read, 10)).toBe(false);
    expect(diskB.msUntilReady()).toBe(300);
    clock.advance(300);
    expect(diskA.consume(IoKind.Read, 800)).toBe(true);
    expect(diskB.consume(IoKind.Read, 10)).toBe(false);
    clock.advance(10);
    expect(diskB.consume(IoKind.Read, 10)).toBe(true);
  });

  it('lets the gate grow to the longest wait among refused requests', () => {
    const { limiter: l } = limiter({ bandwidth: { size: 1000, refillTimeMs: 1000 } });
    l.consume(IoKind.Read, 1000);
    expect(l.consume(IoKind.Read, 100)).toBe(false);
    expect(l.msUntilReady()).toBe(100);
    expect(l.consume(IoKind.Read, 300)).toBe(false);
    expect(l.msUntilReady()).toBe(300);
    expect(l.consume(IoKind.Read, 1)).toBe(false);
    expect(l.msUntilReady()).toBe(300);
  });
});

describe('RateLimiter update', () => {
  it('keeps an unchanged bucket as it is', () => {
    const { limiter: l } = limiter({ bandwidth: { size: 1000, refillTimeMs: 1000 } });
    const before = l.bucket('shared', 'bandwidth');
    l.consume(IoKind.Read, 700);
    l.update({ bandwidth: { size: 1000, refillTimeMs: 1000, oneTimeBurst: 0 }, ops: { size: 5, refillTimeMs: 10 } });
    expect(l.bucket('shared', 'bandwidth')).toBe(before);
    expect(before?.budget).toBe(300);
    expect(l.bucket('shared', 'ops')?.budget).toBe(5); // new: starts full
  });

  it('keeps current tokens, clamped, when a bucket changes', () => {
    const { clock, limiter: l } = limiter({ bandwidth: { size: 1000, refillTimeMs: 1000 } });
    l.consume(IoKind.Read, 200);
    l.update({ bandwidth: { size: 500, refillTimeMs: 100 } });
    expect(l.bucket('shared', 'bandwidth')?.budget).toBe(500);
    l.consume(IoKind.Read, 500);
    l.update({ bandwidth: { size: 10_000, refillTimeMs: 1000 } });
    expect(l.bucket('shared', 'bandwidth')?.budget).toBe(0); // no free refill
    clock.advance(1);
    expect(l.bucket('shared', 'bandwidth')?.budget).toBe(10); // the new rate
  });

  it('removes limits that the new config leaves out', () => {
    const { limiter: l } = limiter({ bandwidth: { size: 10, refillTimeMs: 1000 }, read: { ops: { size: 1, refillTimeMs: 1000 } } });
    l.consume(IoKind.Read, 10);
    expect(l.consume(IoKind.Read, 10)).toBe(false);
    l.update({ read: { ops: { size: 1, refillTimeMs: 1000 } } });
    expect(l.bucket('shared', 'bandwidth')).toBeNull();
    expect(l.consume(IoKind.Write, 1 << 20)).toBe(true);
    expect(l.consume(IoKind.Read, 10)).toBe(false); // the read op is still spent
    expect(l.config).toEqual({ read: { ops: { size: 1, refillTimeMs: 1000, oneTimeBurst: 0 } } });
  });

  it('opens the gate and tells subscribers, so devices retry at once', () => {
    const { limiter: l } = limiter({ bandwidth: { size: 100, refillTimeMs: 1000 } });
    const calls: string[] = [];
    const stopA = l.onUpdate(() => calls.push('a'));
    l.onUpdate(() => calls.push('b'));
    l.consume(IoKind.Write, 100);
    expect(l.consume(IoKind.Write, 100)).toBe(false);
    l.update({ bandwidth: { size: 100, refillTimeMs: 10 } });
    expect(calls).toEqual(['a', 'b']);
    expect(l.isBlocked()).toBe(false);
    expect(l.msUntilReady(IoKind.Write, 100)).toBe(10);
    stopA();
    l.update({});
    expect(calls).toEqual(['a', 'b', 'b']);
    expect(l.consume(IoKind.Write, 100)).toBe(true);
  });

  it('rejects a malformed config and changes nothing', () => {
    const { limiter: l } = limiter({ bandwidth: { size: 1000, refillTimeMs: 1000 } });
    l.consume(IoKind.Read, 600);
    expect(() =>
      l.update({ bandwidth: { size: 10, refillTimeMs: 10 }, write: { ops: { size: -1, refillTimeMs: 10 } } }),
    ).toThrow(/write\.ops: size/);
    expect(l.bucket('shared', 'bandwidth')?.size).toBe(1000);
    expect(l.bucket('shared', 'bandwidth')?.budget).toBe(400);
    expect(() => new RateLimiter({ ops: { size: 1.5, refillTimeMs: 1 } }, new ManualClock())).toThrow(RangeError);
  });
});
