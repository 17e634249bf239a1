// A disk held in an ArrayBuffer (or a SharedArrayBuffer, so that a page and a
// worker can both look at it). Every call completes synchronously. Flush is a
// no-op: there is nothing more durable to reach.

import { StorageError, StorageErrorCode, type BlockBackend } from './backend.ts';

export interface MemoryBackendOptions {
  readOnly?: boolean;
  /** Initial contents; copied unless `shareBuffer` is set. */
  data?: Uint8Array;
  /** Use `data`'s memory as the disk itself instead of copying it. */
  shareBuffer?: boolean;
}

export class MemoryBackend implements BlockBackend {
  readonly readOnly: boolean;
  readonly supportsDiscard = true;
  readonly supportsWriteZeroes = true;
  /** The disk's bytes; replaced on resize. */
  #bytes: Uint8Array;

  constructor(size: number, options: MemoryBackendOptions = {}) {
    this.readOnly = options.readOnly ?? false;
    if (options.data && options.shareBuffer) {
      this.#bytes = options.data;
    } else {
      this.#bytes = new Uint8Array(size);
      if (options.data) this.#bytes.set(options.data.subarray(0, size));
    }
  }

  get size(): number {
    return this.#bytes.length;
  }

  /** The disk's current bytes (no copy). */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  read(offset: number, dst: Uint8Array): void {
    this.#check(offset, dst.length);
    dst.set(this.#bytes.subarray(offset, offset + dst.length));
  }

  write(offset: number, src: Uint8Array): void {
    this.#checkWritable();
    this.#check(offset, src.length);
    this.#bytes.set(src, offset);
  }

  flush(): void {}

  /** Discarded bytes read back as zeroes (the spec allows old data or zeroes). */
  discard(offset: number, length: number): void {
    this.#zero(offset, length);
  }

  writeZeroes(offset: number, length: number): void {
    this.#zero(offset, length);
  }

  #zero(offset: number, length: number): void {
    this.#checkWritable();
    this.#check(offset, length);
    this.#bytes.fill(0, offset, offset + length);
  }

  resize(newSize: number): void {
    const next = new Uint8Array(newSize);
    next.set(this.#bytes.subarray(0, Math.min(newSize, this.#bytes.length)));
    this.#bytes = next;
  }

  close(): void {}

  #check(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.#bytes.length) {
      throw new StorageError(
        StorageErrorCode.OutOfRange,
        `range ${offset}+${length} outside disk of ${this.#bytes.length} bytes`,
      );
    }
  }

  #checkWritable(): void {
    if (this.readOnly) throw new StorageError(StorageErrorCode.ReadOnly, 'disk is read-only');
  }
}
