// Adaptive poll-then-sleep on a shared word, the way KVM halt-polls a vCPU
// (halt_poll_ns) and QEMU's IOThreads poll before they block (poll-max-ns).
//
// Waking a thread that sleeps in Atomics.wait costs the waker a futex wake
// and, on a virtual machine, an inter-processor interrupt: 8 µs of the
// waker's time measured in Node on the 2-core test machines, 15–20 µs inside
// Chromium's device worker. A thread that polls the word for a short while
// before it sleeps is found awake, and the waker's Atomics.notify costs
// ~50 ns. The sleeper gains too: a worker that slept 30 µs between 1 MiB
// OPFS reads took 58–70 µs a read, against 44 µs in a tight loop (caches
// and the host's scheduling after a halt). Polling burns a core, so the
// window adapts: it grows while events
// keep arriving just after it closed, and shrinks to nothing when the other
// side goes quiet, so an idle guest costs no CPU.
//
// Used by the device worker while it waits for a doorbell, and offered to
// emulators for WFI: `poller.wait(disk.irq.array, disk.irq.index, 0, ms)`.

/**
 * The device worker's default longest poll (createDisk's spinMicros), in µs:
 * longer than a polling vCPU takes from a completion to its next doorbell.
 * QEMU's IOThreads default to 32 µs.
 */
export const DEVICE_POLL_MICROS = 50;

/** A good WFI polling window for an emulator's vCPU, in µs: KVM's default halt_poll_ns. */
export const VCPU_HALT_POLL_MICROS = 200;

export interface HaltPollOptions {
  /** The longest the window grows to, in microseconds (0: never poll). */
  maxMicros: number;
  /** The first window after a sleep that polling would have avoided (default 10 µs, or max if smaller). */
  startMicros?: number;
  /** Clock in ms (default performance.now); tests inject one. */
  now?: () => number;
  /** The sleep (default Atomics.wait); tests inject one. */
  sleep?: (array: Int32Array, index: number, value: number, timeoutMs: number) => 'ok' | 'not-equal' | 'timed-out';
}

export type HaltPollResult = 'polled' | 'woken' | 'timed-out';

export class HaltPoller {
  readonly #maxMs: number;
  readonly #startMs: number;
  readonly #now: () => number;
  readonly #sleep: NonNullable<HaltPollOptions['sleep']>;
  /** The current polling window, in ms. */
  #windowMs = 0;
  /** Waits that ended while polling / in a sleep. */
  polled = 0;
  slept = 0;

  constructor(options: HaltPollOptions) {
    this.#maxMs = Math.max(0, options.maxMicros) / 1000;
    this.#startMs = Math.min(this.#maxMs, Math.max(0, options.startMicros ?? 10) / 1000);
    this.#now = options.now ?? (() => performance.now());
    this.#sleep = options.sleep ?? ((a, i, v, ms) => Atomics.wait(a, i, v, ms));
  }

  /** The current window in microseconds. */
  get windowMicros(): number {
    return this.#windowMs * 1000;
  }

  /**
   * Return once `array[index]` is no longer `value`, or after `timeoutMs`:
   * poll for the current window, then Atomics.wait for the rest.
   */
  wait(array: Int32Array, index: number, value: number, timeoutMs: number): HaltPollResult {
    if (Atomics.load(array, index) !== value) return 'polled';
    const now = this.#now;
    const begin = now();
    if (this.#windowMs > 0) {
      const until = begin + Math.min(this.#windowMs, timeoutMs);
      // performance.now() is coarse in isolated contexts (5 µs steps), so a
      // few loads between clock reads cost nothing in precision.
      for (;;) {
        for (let i = 0; i < 16; i++) {
          if (Atomics.load(array, index) !== value) {
            this.polled++;
            return 'polled';
          }
        }
        if (now() >= until) break;
      }
    }
    const left = timeoutMs - (now() - begin);
    const woke = left > 0 && this.#sleep(array, index, value, left) !== 'timed-out';
    this.slept++;
    this.#adapt(now() - begin, woke);
    return woke || Atomics.load(array, index) !== value ? 'woken' : 'timed-out';
  }

  /** After a sleep: `waitedMs` from the start of the wait until it ended. */
  #adapt(waitedMs: number, woke: boolean): void {
    if (this.#maxMs === 0) return;
    if (woke && waitedMs <= this.#maxMs) {
      // A slightly longer poll would have caught it: grow.
      this.#windowMs = this.#windowMs === 0 ? this.#startMs : Math.min(this.#maxMs, this.#windowMs * 2);
    } else if (waitedMs > this.#maxMs) {
      // The other side went quiet for longer than we would ever poll: shrink.
      this.#windowMs = this.#windowMs / 2 < this.#startMs ? 0 : this.#windowMs / 2;
    }
  }
}
