// HaltPoller: poll-then-sleep on a shared word, with a window that grows
// while events come soon after a sleep began and shrinks to nothing while
// the other side is quiet. A worker thread is the other side.

import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { HaltPoller } from '../src/host/halt-poll.ts';

// The other side: waits for a request in word 1 (a delay in µs), then
// busy-waits that long and bumps word 0. Word 2 counts requests seen.
const SIDE = `
const { workerData } = require('node:worker_threads');
const w = new Int32Array(workerData);
for (let seen = 0; ; ) {
  Atomics.wait(w, 2, seen);
  seen = Atomics.load(w, 2);
  if (seen < 0) break;
  const delayUs = Atomics.load(w, 1);
  const until = performance.now() + delayUs / 1000;
  while (performance.now() < until) {}
  Atomics.add(w, 0, 1);
  Atomics.notify(w, 0);
}
`;

let worker: Worker | null = null;
let words: Int32Array;

function startSide(): void {
  const sab = new SharedArrayBuffer(12);
  words = new Int32Array(sab);
  worker = new Worker(SIDE, { eval: true, workerData: sab });
}

/** Ask the other side to bump word 0 after `delayUs`; returns the value to wait on. */
function request(delayUs: number): number {
  const value = Atomics.load(words, 0);
  Atomics.store(words, 1, delayUs);
  Atomics.add(words, 2, 1);
  Atomics.notify(words, 2);
  return value;
}

afterEach(async () => {
  if (worker) {
    Atomics.store(words, 2, -1);
    Atomics.notify(words, 2);
    await worker.terminate();
    worker = null;
  }
});

describe('HaltPoller', () => {
  it('returns at once when the word already changed, and times out when it never does', () => {
    const w = new Int32Array(new SharedArrayBuffer(4));
    const p = new HaltPoller({ maxMicros: 100 });
    w[0] = 1;
    expect(p.wait(w, 0, 0, 1000)).toBe('polled');
    const t0 = performance.now();
    expect(p.wait(w, 0, 1, 20)).toBe('timed-out');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(19);
  });

  it('with maxMicros 0 never polls: every wait sleeps', () => {
    startSide();
    const p = new HaltPoller({ maxMicros: 0 });
    for (let i = 0; i < 20; i++) expect(p.wait(words, 0, request(0), 5000)).not.toBe('timed-out');
    expect(p.windowMicros).toBe(0);
    expect(p.polled).toBe(0);
    expect(p.slept).toBeLessThanOrEqual(20);
  });

  it('grows its window while events come soon, then catches them polling', () => {
    startSide();
    const p = new HaltPoller({ maxMicros: 2000, startMicros: 10 });
    expect(p.windowMicros).toBe(0);
    let widest = 0;
    for (let i = 0; i < 200; i++) {
      expect(p.wait(words, 0, request(100), 5000)).not.toBe('timed-out');
      widest = Math.max(widest, p.windowMicros);
    }
    // Events ~100 µs after each request fit a window that may grow to 2 ms:
    // it grew past them, and waits then ended while polling (a loaded
    // machine may preempt either thread, so not all of them).
    expect(widest).toBeGreaterThanOrEqual(160);
    expect(p.polled).toBeGreaterThan(50);
  });

  it('shrinks its window to nothing while the other side is quiet longer than the most it polls', () => {
    startSide();
    const p = new HaltPoller({ maxMicros: 200, startMicros: 10 });
    for (let i = 0; i < 50; i++) p.wait(words, 0, request(20), 5000);
    expect(p.windowMicros).toBeGreaterThan(0);
    // Now every event comes 2 ms later: each sleep halves the window.
    for (let i = 0; i < 10; i++) expect(p.wait(words, 0, request(2000), 5000)).toBe('woken');
    expect(p.windowMicros).toBe(0);
  });
});
