// Read a byte stream into caller-owned, fixed-size blocks: the one place an
// import's memory is decided. The importer keeps a fixed pool of blocks (two:
// one being written while the next fills), so an image of any size passes
// through the same few MiB; the source is read only when a block is free,
// which is the back-pressure a ReadableStream expects (its own queue stays
// at its high-water mark).
//
// Every stream is read with its default reader, chunk by chunk, each chunk
// copied into the block and its unread tail kept for the next block. A BYOB
// reader would save that copy for byte streams (File.stream(), a fetch body),
// and this reader used one until e2e/transfer.spec.ts caught Chromium 150
// leaving a BYOB read of a Blob's stream unsettled for good, about 1 import in
// 40 (the copy costs far less than the storage writes it feeds).
//
// The stream must deliver exactly the declared size: ending early or running
// past it is a typed 'truncated' error, never a disk silently padded or cut.

import { StorageError, StorageErrorCode } from '../backends/backend.ts';

export class BlockReader {
  readonly #label: string;
  readonly #totalBytes: number;
  #doneBytes = 0;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  /** The unread tail of the last chunk. */
  #leftover: Uint8Array | null = null;

  constructor(stream: ReadableStream<Uint8Array>, totalBytes: number, label: string) {
    this.#label = label;
    this.#totalBytes = totalBytes;
    this.#reader = stream.getReader();
  }

  /** Bytes delivered so far. */
  get doneBytes(): number {
    return this.#doneBytes;
  }

  /**
   * Fill `block` with the next bytes: all of it, or up to the declared end.
   * Returns the bytes filled; 0 at the end.
   */
  async fill(block: Uint8Array): Promise<number> {
    const want = Math.min(block.length, this.#totalBytes - this.#doneBytes);
    let filled = 0;
    while (filled < want) {
      const chunk = this.#leftover ?? (await this.#nextChunk(filled));
      const n = Math.min(chunk.length, want - filled);
      block.set(n === chunk.length ? chunk : chunk.subarray(0, n), filled);
      this.#leftover = n < chunk.length ? chunk.subarray(n) : null;
      filled += n;
    }
    this.#doneBytes += filled;
    if (this.#doneBytes === this.#totalBytes && filled > 0) await this.#expectEnd();
    return filled;
  }

  /** Stop reading and tell the source (releases a fetch's connection, a file's reader). */
  async cancel(reason?: unknown): Promise<void> {
    await this.#reader.cancel(reason).catch(() => undefined);
  }

  async #nextChunk(filled: number): Promise<Uint8Array> {
    for (;;) {
      const { value, done } = await this.#reader.read();
      if (done) throw this.#short(filled);
      if (!(value instanceof Uint8Array)) {
        throw new StorageError(StorageErrorCode.Io, `${this.#label}: the stream gave a ${Object.prototype.toString.call(value)}, not a Uint8Array`);
      }
      if (value.length > 0) return value;
    }
  }

  /** After the declared size, the source must end. */
  async #expectEnd(): Promise<void> {
    let extra = this.#leftover?.length ?? 0;
    if (extra === 0) {
      for (;;) {
        const { value, done } = await this.#reader.read();
        if (done) break;
        if (value.length > 0) {
          extra = value.length;
          break;
        }
      }
    }
    if (extra > 0) {
      await this.cancel();
      throw new StorageError(StorageErrorCode.Truncated, `${this.#label} holds more than the ${this.#totalBytes} bytes declared`);
    }
  }

  #short(filled: number): StorageError {
    const got = this.#doneBytes + filled;
    return new StorageError(StorageErrorCode.Truncated, `${this.#label} ended after ${got} of the ${this.#totalBytes} bytes declared`);
  }
}
