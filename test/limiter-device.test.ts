// The limiter inside the device, in virtual time: throttled chains go back to
// the ring and complete when the retry timer fires at the moment the limiter
// named. A manual clock and a fake timer queue stand in for real time, so the
// test checks when each request completes, not how long anything took.

import { describe, expect, it } from 'vitest';
import { BlkRequestType } from '../src/block/constants.ts';
import type { Timers } from '../src/block/device.ts';
import { IoKind, ManualClock, RateLimiter, type RateLimiterConfig } from '../src/limiter/index.ts';
import { makeRig, type Rig } from './support/rig.ts';

/** setTimeout over a manual clock: `fireNext` jumps the clock to the earliest timer and runs it. */
class VirtualTimers implements Timers {
  readonly #clock: ManualClock;
  #nextId = 1;
  #pending = new Map<number, { dueMs: number; fn: () => void }>();

  constructor(clock: ManualClock) {
    this.#clock = clock;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#nextId++;
    this.#pending.set(id, { dueMs: this.#clock.now() + ms, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#pending.delete(handle as number);
  }

  fireNext(): boolean {
    let first: [number, { dueMs: number; fn: () => void }] | null = null;
    for (const entry of this.#pending) if (!first || entry[1].dueMs < first[1].dueMs) first = entry;
    if (!first) return false;
    this.#pending.delete(first[0]);
    this.#clock.set(Math.max(this.#clock.now(), first[1].dueMs));
    first[1].fn();
    return true;
  }
}

async function limitedRigs(count: number, config: RateLimiterConfig) {
  const clock = new ManualClock();
  const timers = new VirtualTimers(clock);
  const limiter = new RateLimiter(config, clock);
  const rigs: Rig[] = [];
  for (let i = 0; i < count; i++) rigs.push(await makeRig({ limiter, timers }));
  return { clock, timers, limiter, rigs };
}

/** Submit `count` reads of `bytes` on each rig at once; returns every completion time (ms), in order. */
function readAll(
  setup: { clock: ManualClock; timers: VirtualTimers; rigs: Rig[] },
  count: number,
  bytes: number,
  type: number = BlkRequestType.In,
): number[] {
  const { clock, timers, rigs } = setup;
  for (const { driver } of rigs) {
    for (let i = 0; i < count; i++) {
      const buffer = driver.allocate(Math.max(bytes, 512));
      driver.submit({ type, sector: i * (bytes >> 9), in: bytes ? [{ addr: buffer.addr, len: bytes }] : [] });
    }
    driver.kick();
  }
  const doneAtMs: number[] = [];
  for (;;) {
    for (const { driver } of rigs) {
      for (const c of driver.reap()) {
        expect(c.status).toBe(0);
        doneAtMs.push(clock.now());
      }
    }
    if (doneAtMs.length === count * rigs.length || !timers.fireNext()) break;
  }
  return doneAtMs;
}

describe('rate-limited device', () => {
  it('completes throttled reads exactly when their bytes are due', async () => {
    const setup = await limitedRigs(1, { bandwidth: { size: 64 * 1024, refillTimeMs: 100 } });
    // 64 KiB at once from the full bucket, then 16 KiB every 25 ms.
    expect(readAll(setup, 16, 16 * 1024)).toEqual([0, 0, 0, 0, ...Array.from({ length: 12 }, (_, i) => 25 * (i + 1))]);
    expect(setup.rigs[0]!.disk.device.stats.throttled).toBe(12);
  });

  it('limits operations per second', async () => {
    const setup = await limitedRigs(1, { ops: { size: 2, refillTimeMs: 10 } });
    expect(readAll(setup, 6, 4096)).toEqual([0, 0, 5, 10, 15, 20]);
  });

  it('lets an oversized request through once and makes the next wait off its debt', async () => {
    const setup = await limitedRigs(1, { bandwidth: { size: 64 * 1024, refillTimeMs: 100 } });
    // 256 KiB from a 64 KiB bucket: allowed at 0, then owes 192 KiB = 300 ms;
    // the second needs the full bucket again: 400 ms.
    expect(readAll(setup, 2, 256 * 1024)).toEqual([0, 400]);
  });

  it('shares one limiter between two disks (a group)', async () => {
    const setup = await limitedRigs(2, { bandwidth: { size: 32 * 1024, refillTimeMs: 100 } });
    const done = readAll(setup, 4, 16 * 1024);
    // 8 × 16 KiB over both disks: 2 at once, then one per 50 ms in all.
    expect(done).toEqual([0, 0, 50, 100, 150, 200, 250, 300]);
    expect(setup.limiter.bucket('shared', 'bandwidth')?.budget).toBe(0);
  });

  it('retries throttled chains at once when the limits change', async () => {
    const setup = await limitedRigs(1, { bandwidth: { size: 16 * 1024, refillTimeMs: 1000 } });
    const { clock, timers, limiter, rigs } = setup;
    const { driver } = rigs[0]!;
    for (let i = 0; i < 2; i++) {
      driver.submit({ type: BlkRequestType.In, sector: i * 32, in: [{ addr: driver.allocate(16 * 1024).addr, len: 16 * 1024 }] });
    }
    driver.kick();
    expect(driver.reap()).toHaveLength(1); // the second waits 1000 ms under the old limit
    clock.advance(10);
    // 100× faster: the update re-runs the queue, which re-arms its timer for
    // the new rate (the 163 bytes earned so far are kept, ~9.9 ms to go).
    limiter.update({ bandwidth: { size: 16 * 1024, refillTimeMs: 10 } });
    expect(timers.fireNext()).toBe(true);
    expect(clock.now()).toBe(20);
    expect(driver.reap()).toHaveLength(1);
    expect(timers.fireNext()).toBe(false);
  });

  it('stops listening to the limiter after a reset', async () => {
    const setup = await limitedRigs(1, { bandwidth: { size: 16 * 1024, refillTimeMs: 1000 } });
    await setup.rigs[0]!.disk.device.reset();
    expect(() => setup.limiter.update({})).not.toThrow();
  });

  it('charges a flush one op and no bytes', async () => {
    const setup = await limitedRigs(1, {
      bandwidth: { size: 512, refillTimeMs: 1000 },
      ops: { size: 10, refillTimeMs: 1000 },
    });
    setup.limiter.consume(IoKind.Read, 512);
    expect(readAll(setup, 3, 0, BlkRequestType.Flush)).toEqual([0, 0, 0]);
    expect(setup.limiter.bucket('shared', 'ops')?.budget).toBe(6);
  });
});
