// A backend that completes later, as IndexedDB and HTTP do, for the reset
// race tests (test/race/reset-race.test.ts, e2e/reset-race.spec.ts).
//
// Every call returns a promise and does its work only when the promise
// settles: a read fills the guest's buffer then, a write takes the guest's
// bytes then. So a request the device let go of too early would write guest
// memory (or the disk) after the driver saw Status read 0, which is what the
// tests look for. Each call waits a different number of turns — a microtask,
// or one to three macrotask hops — so completions interleave with the
// device's reset and with each other.

import type { BlockBackend } from '../../src/backends/backend.ts';
import type { MemoryBackend } from '../../src/backends/memory.ts';

/** One macrotask hop: setImmediate in Node, a MessageChannel message in a browser worker. */
function macrotask(): Promise<void> {
  const immediate = (globalThis as { setImmediate?: (fn: () => void) => unknown }).setImmediate;
  if (immediate) return new Promise((resolve) => void immediate(resolve));
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(null);
  });
}

/** A small seeded generator (mulberry32), so a run can be repeated. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  };
}

export class AsyncBackend implements BlockBackend {
  readonly #inner: MemoryBackend;
  readonly #random: () => number;
  /** Calls started and not yet settled. */
  pending = 0;

  constructor(inner: MemoryBackend, seed = 1) {
    this.#inner = inner;
    this.#random = rng(seed);
  }

  get size(): number {
    return this.#inner.size;
  }
  get readOnly(): boolean {
    return this.#inner.readOnly;
  }
  get supportsDiscard(): boolean {
    return this.#inner.supportsDiscard;
  }
  get supportsWriteZeroes(): boolean {
    return this.#inner.supportsWriteZeroes;
  }

  read(offset: number, dst: Uint8Array): Promise<void> {
    return this.#later(() => this.#inner.read(offset, dst));
  }
  write(offset: number, src: Uint8Array): Promise<void> {
    return this.#later(() => this.#inner.write(offset, src));
  }
  flush(): Promise<void> {
    return this.#later(() => this.#inner.flush());
  }
  discard(offset: number, length: number): Promise<void> {
    return this.#later(() => this.#inner.discard(offset, length));
  }
  writeZeroes(offset: number, length: number): Promise<void> {
    return this.#later(() => this.#inner.writeZeroes(offset, length));
  }
  close(): void {
    this.#inner.close();
  }

  /** Run `work` after 0 (a microtask) to 3 macrotask hops. */
  async #later(work: () => void): Promise<void> {
    this.pending++;
    try {
      const hops = Math.floor(this.#random() * 4);
      if (hops === 0) await Promise.resolve();
      for (let i = 0; i < hops; i++) await macrotask();
      work();
    } finally {
      this.pending--;
    }
  }
}
