// Time for the limiter, injected so the core never reads a real clock itself.
//
// A clock reports milliseconds from any fixed origin and may be fractional
// (`performance.now()`); only differences between readings matter. It must
// not run backwards: the buckets treat a backwards step as no time passing.
// Tests drive a `ManualClock` and never sleep.

/** A monotonic source of milliseconds (fractional allowed). */
export interface Clock {
  now(): number;
}

/**
 * The platform's monotonic clock: `performance.now()`, present in browsers,
 * workers and Node alike. Read lazily so importing this module touches nothing.
 */
export const performanceClock: Clock = {
  now: () => performance.now(),
};

/** A clock that moves only when told to: for tests and simulations. */
export class ManualClock implements Clock {
  #nowMs: number;

  constructor(startMs = 0) {
    this.#nowMs = startMs;
  }

  now(): number {
    return this.#nowMs;
  }

  /** Move forward by `ms` (must be ≥ 0). */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`ManualClock.advance: ${ms} is not a non-negative number`);
    this.#nowMs += ms;
  }

  /** Jump to an absolute reading (must not be earlier than the current one). */
  set(nowMs: number): void {
    if (!(nowMs >= this.#nowMs)) throw new RangeError(`ManualClock.set: ${nowMs} is before ${this.#nowMs}`);
    this.#nowMs = nowMs;
  }
}
