// HaltPoller: poll-then-sleep on a shared word, with a window that grows
// while events come soon after a sleep began and shrinks to nothing while
// the other side is quiet. The policy runs on a scripted clock and sleep, so
// nothing here depends on how busy the machine is; one test uses a real
// second thread and checks only that no wake-up is lost.

import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { HaltPoller, type HaltPollResult } from '../src/host/browser/halt-poll.ts';

/** A scripted other side: each clock read takes 1 µs; the event lands at a set time. */
class Script {
  readonly word = new Int32Array(new SharedArrayBuffer(4));
  /** Now, in ms. */
  t = 0;
  #eventAt = Infinity;
  sleeps = 0;

  readonly now = (): number => {
    this.t += 0.001;
    this.#land();
    return this.t;
  };

  readonly sleep = (_a: Int32Array, _i: number, _v: number, ms: number): 'ok' | 'timed-out' => {
    this.sleeps++;
    if (this.#eventAt <= this.t + ms) {
      this.t = Math.max(this.t, this.#eventAt);
      this.#land();
      return 'ok';
    }
    this.t += ms;
    return 'timed-out';
  };

  /** The word goes 0 → 1 `afterUs` from now (never, for Infinity). */
  event(afterUs: number): void {
    Atomics.store(this.word, 0, 0);
    this.#eventAt = this.t + afterUs / 1000;
  }

  #land(): void {
    if (this.t >= this.#eventAt) Atomics.store(this.word, 0, 1);
  }

  poller(maxMicros: number, startMicros = 10): HaltPoller {
    return new HaltPoller({ maxMicros, startMicros, now: this.now, sleep: this.sleep });
  }
}

/** Run `n` waits whose events come `afterUs` after each began; the results and the window after each. */
function run(s: Script, p: HaltPoller, n: number, afterUs: number, timeoutMs = 1000) {
  const results: HaltPollResult[] = [];
  const windows: number[] = [];
  for (let i = 0; i < n; i++) {
    s.event(afterUs);
    results.push(p.wait(s.word, 0, 0, timeoutMs));
    windows.push(Math.round(p.windowMicros));
  }
  return { results, windows };
}

describe('HaltPoller', () => {
  it('returns at once when the word already changed; a wait that nothing ends times out', () => {
    const s = new Script();
    const p = s.poller(100);
    Atomics.store(s.word, 0, 1);
    expect(p.wait(s.word, 0, 0, 1000)).toBe('polled');
    expect(s.sleeps).toBe(0);
    s.event(Infinity);
    expect(p.wait(s.word, 0, 0, 20)).toBe('timed-out');
    expect(s.t).toBeGreaterThanOrEqual(20);
  });

  it('with maxMicros 0 never polls: every wait sleeps at once', () => {
    const s = new Script();
    const p = s.poller(0);
    const { results, windows } = run(s, p, 10, 5);
    expect(results.every((r) => r === 'woken')).toBe(true);
    expect(windows.every((w) => w === 0)).toBe(true);
    expect(s.sleeps).toBe(10);
    expect(p.polled).toBe(0);
  });

  it('doubles its window after each sleep that a longer poll would have avoided, then catches events polling', () => {
    const s = new Script();
    const p = s.poller(200, 10);
    const { results, windows } = run(s, p, 7, 50);
    expect(windows).toEqual([10, 20, 40, 80, 80, 80, 80]);
    expect(results).toEqual(['woken', 'woken', 'woken', 'woken', 'polled', 'polled', 'polled']);
    expect(p.slept).toBe(4);
    expect(p.polled).toBe(3);
  });

  it('never grows past maxMicros', () => {
    const s = new Script();
    const p = s.poller(100, 10);
    const { results, windows } = run(s, p, 7, 90);
    expect(windows).toEqual([10, 20, 40, 80, 100, 100, 100]);
    expect(results.slice(5)).toEqual(['polled', 'polled']);
  });

  it('does not grow for events later than maxMicros, and halves to nothing while they stay late', () => {
    const s = new Script();
    const p = s.poller(200, 10);
    run(s, p, 5, 50);
    expect(p.windowMicros).toBe(80);
    const late = run(s, p, 5, 1000);
    expect(late.results.every((r) => r === 'woken')).toBe(true);
    expect(late.windows).toEqual([40, 20, 10, 0, 0]);
  });

  it('a timeout longer than maxMicros shrinks the window too', () => {
    const s = new Script();
    const p = s.poller(200, 10);
    run(s, p, 4, 50);
    expect(p.windowMicros).toBe(80);
    s.event(Infinity);
    expect(p.wait(s.word, 0, 0, 5)).toBe('timed-out');
    expect(p.windowMicros).toBe(40);
  });

  it('on real threads, loses no wake-up whether it ends a wait polling or sleeping', async () => {
    // The other side bumps word 0 once per request in word 1, after a delay
    // that varies from none to a few hundred µs.
    const sab = new SharedArrayBuffer(8);
    const w = new Int32Array(sab);
    const side = new Worker(
      `const { workerData } = require('node:worker_threads');
       const w = new Int32Array(workerData);
       for (let n = 0; ; ) {
         Atomics.wait(w, 1, n);
         n = Atomics.load(w, 1);
         if (n < 0) break;
         const until = performance.now() + ((n * 37) % 400) / 1000;
         while (performance.now() < until) {}
         Atomics.add(w, 0, 1);
         Atomics.notify(w, 0);
       }`,
      { eval: true, workerData: sab },
    );
    try {
      const p = new HaltPoller({ maxMicros: 200 });
      for (let n = 1; n <= 300; n++) {
        const before = Atomics.load(w, 0);
        Atomics.store(w, 1, n);
        Atomics.notify(w, 1);
        // Generous: a lost wake-up shows as a timeout, not a slow machine.
        expect(p.wait(w, 0, before, 10_000)).not.toBe('timed-out');
        expect(Atomics.load(w, 0)).toBe(before + 1);
      }
      expect(p.polled + p.slept).toBeLessThanOrEqual(300);
    } finally {
      Atomics.store(w, 1, -1);
      Atomics.notify(w, 1);
      await side.terminate();
    }
  });
});
