// RateLimitGroup: one budget over a SharedArrayBuffer, shared by limiters on
// any thread. Same-thread members on a manual clock check the arithmetic,
// the shared gate and live updates; worker threads racing for the tokens
// check that the lock hands out each token exactly once.

import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../src/limiter/clock.ts';
import { RateLimitGroup, bothLimits } from '../src/limiter/group.ts';
import { RateLimiter, type RateLimiterConfig } from '../src/limiter/limiter.ts';

/** Two members of one group on one manual clock. */
function pair(config: RateLimiterConfig) {
  const clock = new ManualClock(1000);
  const a = RateLimitGroup.create(config, clock);
  const b = new RateLimitGroup(a.buffer, clock);
  return { clock, a, b };
}

describe('RateLimitGroup', () => {
  it('members draw on one budget: the tokens one takes, the other does not get', () => {
    const { clock, a, b } = pair({ ops: { size: 10, refillTimeMs: 1000 } });
    let taken = 0;
    for (let i = 0; i < 20; i++) if ((i % 2 === 0 ? a : b).consume('read', 4096)) taken++;
    expect(taken).toBe(10);
    expect(a.consume('write', 0)).toBe(false);
    // 100 ms earns one op, whoever asks for it.
    clock.advance(100);
    expect(b.consume('read', 0)).toBe(true);
    expect(a.consume('read', 0)).toBe(false);
  });

  it('a refusal closes the gate for every member, until the refused request fits', () => {
    const { clock, a, b } = pair({ bandwidth: { size: 1000, refillTimeMs: 1000 } });
    expect(a.consume('read', 900)).toBe(true);
    // b asks for 500 bytes: 400 are missing, 400 ms away.
    expect(b.consume('read', 500)).toBe(false);
    expect(a.msUntilReady()).toBeCloseTo(400, 6);
    clock.advance(200);
    // 300 bytes are there by now, but the gate holds until b's request fits.
    expect(a.consume('read', 100)).toBe(false);
    clock.advance(200);
    expect(a.isBlocked()).toBe(false);
    expect(b.consume('read', 500)).toBe(true);
  });

  it('an update on one member reaches the others, keeps the tokens, and tells each member’s listeners', () => {
    const { a, b } = pair({ ops: { size: 10, refillTimeMs: 1000 } });
    for (let i = 0; i < 6; i++) expect(b.consume('read', 0)).toBe(true);
    let heardA = 0;
    let heardB = 0;
    a.onUpdate(() => heardA++);
    b.onUpdate(() => heardB++);
    a.update({ ops: { size: 100, refillTimeMs: 1000 }, write: { ops: { size: 1, refillTimeMs: 1000 } } });
    expect(heardA).toBe(1);
    expect(heardB).toBe(0);
    expect(a.version).toBe(2);
    b.poll();
    expect(heardB).toBe(1);
    expect(b.config).toEqual(a.config);
    expect(b.config.write?.ops?.size).toBe(1);
    // 4 ops were left; the larger bucket keeps them rather than refilling.
    let reads = 0;
    while (b.consume('read', 0)) reads++;
    expect(reads).toBe(4);
    // The new write budget applies to the other member too.
    a.update({ ops: { size: 100, refillTimeMs: 1000 }, write: { ops: { size: 1, refillTimeMs: 1000 } } });
    expect(a.consume('write', 0)).toBe(false);
  });

  it('a listener may call back into the group (no deadlock on its lock)', () => {
    const { a, b } = pair({ ops: { size: 1, refillTimeMs: 1000 } });
    let inner: boolean | null = null;
    b.onUpdate(() => (inner = b.consume('read', 0)));
    a.update({ ops: { size: 5, refillTimeMs: 1000 } });
    b.poll();
    expect(inner).toBe(true);
  });

  it('refuses a buffer that is not a group’s', () => {
    expect(() => new RateLimitGroup(new SharedArrayBuffer(16))).toThrow(TypeError);
  });

  it('bothLimits: a request must fit a disk’s own limit and its group’s; a refusal by the second refunds the first', () => {
    const clock = new ManualClock(0);
    const own = new RateLimiter({ ops: { size: 5, refillTimeMs: 1000 } }, clock);
    const group = RateLimitGroup.create({ ops: { size: 3, refillTimeMs: 1000 } }, clock);
    const limits = bothLimits(own, group);
    let ok = 0;
    for (let i = 0; i < 10; i++) if (limits.consume('read', 0)) ok++;
    expect(ok).toBe(3);
    // The group refused the 4th: the disk's own bucket got its op back.
    expect(own.bucket('shared', 'ops')!.budget).toBe(2);
  });

  it('threads racing for the tokens get each one exactly once', async () => {
    const tokens = 30_000;
    // A refill time so long that no token is earned while the test runs.
    const group = RateLimitGroup.create({ ops: { size: tokens, refillTimeMs: 9_000_000_000 } }, new ManualClock(0));
    const start = new SharedArrayBuffer(8);
    const go = new Int32Array(start);
    const url = new URL('./support/group-worker.ts', import.meta.url);
    // The thread loads TypeScript through tsx, as the CLI does.
    const boot = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(url.href)}); })`;
    const threads = Array.from(
      { length: 4 },
      () => new Worker(boot, { eval: true, workerData: { buffer: group.buffer, start, attempts: 15_000 } }),
    );
    let failed: unknown = null;
    const results = threads.map(
      (t) =>
        new Promise<number>((resolve, reject) => {
          t.once('message', resolve);
          t.once('error', (err) => reject((failed = err)));
        }),
    );
    while (Atomics.load(go, 1) < threads.length && !failed) await new Promise((r) => setTimeout(r, 5));
    Atomics.store(go, 0, 1);
    Atomics.notify(go, 0);
    const got = await Promise.all(results);
    await Promise.all(threads.map((t) => t.terminate()));
    // 60,000 attempts for 30,000 tokens: exactly 30,000 succeed.
    expect(got.reduce((n, x) => n + x, 0)).toBe(tokens);
  });
});
