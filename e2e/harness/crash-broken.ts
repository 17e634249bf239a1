// A deliberately broken backend for the crash trials' self-test (the hidden
// `--break-flush` option of scripts/crash-trials.ts): it proves that each
// trial mode can fail, by giving the trials a disk that really loses flushed
// writes, and is never used otherwise.
//
// It wraps a real backend with a write-back buffer: writes (and
// write-zeroes, discards) are held in the worker's memory and reach the real
// backend only at a FLUSH, a resize, a read or a close. Every second FLUSH,
// and every close, reports success without sending the buffer on (it stays
// buffered until the next honest FLUSH, or is dropped by the close). A
// SIGKILL after such a FLUSH loses writes the FLUSH promised, as a device
// that acknowledged a cache flush it never did would. Holding the writes in
// memory is what makes the loss visible to a SIGKILL: OPFS writes reach the
// kernel at once, so an OPFS FLUSH that did nothing would lose nothing to a
// killed process (only to a power cut, which these trials do not make).

import type { BlockBackend, MaybePromise } from '../../src/backends/backend.ts';

/** FLUSHes seen by every wrapper in this worker (a creation trial makes a disk, and a wrapper, per FLUSH). */
let flushes = 0;

type Pending = { kind: 'write'; offset: number; data: Uint8Array } | { kind: 'zeroes'; offset: number; length: number; mayUnmap: boolean } | { kind: 'discard'; offset: number; length: number };

export class BrokenFlushBackend implements BlockBackend {
  readonly #inner: BlockBackend;
  #pending: Pending[] = [];
  readonly readOnly: boolean;
  readonly supportsDiscard: boolean;
  readonly supportsWriteZeroes: boolean;

  constructor(inner: BlockBackend) {
    this.#inner = inner;
    ({ readOnly: this.readOnly, supportsDiscard: this.supportsDiscard, supportsWriteZeroes: this.supportsWriteZeroes } = inner);
  }

  /** A getter: a resize changes it. */
  get size(): number {
    return this.#inner.size;
  }

  async #drain(): Promise<void> {
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) {
      if (p.kind === 'write') await this.#inner.write(p.offset, p.data);
      else if (p.kind === 'zeroes') await this.#inner.writeZeroes(p.offset, p.length, p.mayUnmap);
      else await this.#inner.discard(p.offset, p.length);
    }
  }

  async read(offset: number, dst: Uint8Array): Promise<void> {
    await this.#drain();
    await this.#inner.read(offset, dst);
  }
  write(offset: number, src: Uint8Array): MaybePromise {
    this.#pending.push({ kind: 'write', offset, data: src.slice() });
  }
  writeZeroes(offset: number, length: number, mayUnmap: boolean): MaybePromise {
    this.#pending.push({ kind: 'zeroes', offset, length, mayUnmap });
  }
  discard(offset: number, length: number): MaybePromise {
    this.#pending.push({ kind: 'discard', offset, length });
  }
  async flush(): Promise<void> {
    // The broken part: every second FLUSH claims success and does nothing.
    if (flushes++ % 2 === 1) return;
    await this.#drain();
    await this.#inner.flush();
  }
  async resize(newSize: number): Promise<void> {
    await this.#drain();
    await this.#inner.resize!(newSize);
  }
  async close(): Promise<void> {
    // Broken too: the buffer is dropped, not written.
    this.#pending = [];
    await this.#inner.close();
  }
}
