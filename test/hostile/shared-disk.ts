// The hostile suite's backend: a memory disk whose bytes live in a buffer the
// test can see (a SharedArrayBuffer when the device runs in a worker), so a
// case can check that a refused request changed nothing, and an optional gate
// that holds chosen operations on a promise until the test releases them (a
// slow asynchronous backend, for resets and TOCTOU races mid-request).
//
// The gate is a few Int32 words in a SharedArrayBuffer, so the same gate works
// when the backend runs in the device worker (loaded through BackendSpec
// {kind: 'module'}, see e2e/harness/hostile-backend.ts) and the test on the
// page. Environment-neutral: no node: imports.

import type { BlockBackend, MaybePromise } from '../../src/backends/backend.ts';
import { MemoryBackend } from '../../src/backends/memory.ts';
import { waitAsync } from '../../src/host/browser/wait-async.ts';

/** Backend operations the gate can hold. */
export type GateOp = 'read' | 'write' | 'flush' | 'discard' | 'writeZeroes';

/** Words of the gate's Int32Array. */
export const GateWord = {
  /** Operations that reached the gate (each takes a ticket). */
  Started: 0,
  /** Tickets below this value may proceed. */
  Released: 1,
  /** Non-zero: every operation proceeds at once. */
  Open: 2,
  Length: 4,
} as const;

export interface SharedDiskOptions {
  /** The disk's bytes, used in place (not copied). */
  data: Uint8Array;
  readOnly?: boolean;
  /** The gate's words (a SharedArrayBuffer); null: nothing is held. */
  gate?: Int32Array | null;
  /** Which operations the gate holds (default: all but flush). */
  gateOps?: readonly GateOp[];
}

class SharedDiskBackend extends MemoryBackend {
  readonly #gate: Int32Array | null;
  readonly #ops: ReadonlySet<GateOp>;

  constructor(options: SharedDiskOptions) {
    super(options.data.length, { data: options.data, shareBuffer: true, readOnly: options.readOnly });
    this.#gate = options.gate ?? null;
    this.#ops = new Set(options.gateOps ?? ['read', 'write', 'discard', 'writeZeroes']);
  }

  override read(offset: number, dst: Uint8Array): MaybePromise {
    return this.#through('read', () => super.read(offset, dst));
  }
  override write(offset: number, src: Uint8Array): MaybePromise {
    return this.#through('write', () => super.write(offset, src));
  }
  override flush(): MaybePromise {
    return this.#through('flush', () => super.flush());
  }
  override discard(offset: number, length: number): MaybePromise {
    return this.#through('discard', () => super.discard(offset, length));
  }
  override writeZeroes(offset: number, length: number): MaybePromise {
    return this.#through('writeZeroes', () => super.writeZeroes(offset, length));
  }

  /** Run `op` now, or (gated) once the test released this call's ticket. */
  #through(op: GateOp, run: () => void): MaybePromise {
    const g = this.#gate;
    if (!g || !this.#ops.has(op) || Atomics.load(g, GateWord.Open) !== 0) return run();
    const ticket = Atomics.add(g, GateWord.Started, 1);
    Atomics.notify(g, GateWord.Started);
    return (async () => {
      for (;;) {
        const released = Atomics.load(g, GateWord.Released);
        if (released > ticket || Atomics.load(g, GateWord.Open) !== 0) break;
        await waitAsync(g, GateWord.Released, released);
      }
      run();
    })();
  }
}

/** The module-backend entry point (BackendSpec {kind: 'module'}). */
export function openBackend(options: SharedDiskOptions): BlockBackend {
  return new SharedDiskBackend(options);
}

/** The test's side of a gate. */
export class Gate {
  readonly words: Int32Array;
  constructor(words = new Int32Array(new SharedArrayBuffer(GateWord.Length * 4))) {
    this.words = words;
  }

  /** Operations that reached the gate so far. */
  get started(): number {
    return Atomics.load(this.words, GateWord.Started);
  }

  /** Resolve true once `count` operations reached the gate; false after `timeoutMs` (a hang). */
  async waitStarted(count: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const now = this.started;
      if (now >= count) return true;
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await waitAsync(this.words, GateWord.Started, now, left);
    }
  }

  /** Let `count` more held operations proceed. */
  release(count = 1): void {
    Atomics.add(this.words, GateWord.Released, count);
    Atomics.notify(this.words, GateWord.Released);
  }

  /** Let everything through, now and from now on. */
  open(): void {
    Atomics.store(this.words, GateWord.Open, 1);
    this.release(0x1000_0000);
  }
}
