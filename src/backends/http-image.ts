// What the two HTTP image backends have in common above the block layer: they
// are read-only, cannot discard, have nothing to flush, check every range
// against the image, and read (plain or vectored) through a BlockReader.

import { StorageError, StorageErrorCode, type BlockBackend } from './backend.ts';
import type { BlockReader, HttpStats } from './http-blocks.ts';

export abstract class HttpImageBackend implements BlockBackend {
  readonly readOnly = true;
  readonly supportsDiscard = false;
  readonly supportsWriteZeroes = false;
  readonly size: number;
  readonly #reader: BlockReader;
  #closed = false;

  protected constructor(size: number, reader: BlockReader) {
    this.size = size;
    this.#reader = reader;
  }

  /** Fetch, cache and read-ahead counters. */
  get stats(): Readonly<HttpStats> {
    return this.#reader.stats;
  }

  async read(offset: number, dst: Uint8Array): Promise<void> {
    this.#check(offset, dst.length);
    await this.#reader.readInto(offset, [dst]);
  }

  async readv(offset: number, dsts: Uint8Array[]): Promise<void> {
    let length = 0;
    for (const d of dsts) length += d.length;
    this.#check(offset, length);
    await this.#reader.readInto(offset, dsts);
  }

  async write(): Promise<void> {
    throw this.#readOnly();
  }

  async writev(): Promise<void> {
    throw this.#readOnly();
  }

  /** Nothing is ever written, so there is nothing to make durable. */
  flush(): void {}

  async discard(): Promise<void> {
    throw this.#readOnly();
  }

  async writeZeroes(): Promise<void> {
    throw this.#readOnly();
  }

  /** Abort every fetch in flight; later calls fail with 'closed'. */
  close(): void {
    this.#closed = true;
    this.#reader.close();
  }

  #check(offset: number, length: number): void {
    if (this.#closed) throw new StorageError(StorageErrorCode.Closed, 'HTTP image backend is closed');
    if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new StorageError(StorageErrorCode.OutOfRange, `range ${offset}+${length} outside image of ${this.size} bytes`);
    }
  }

  #readOnly(): StorageError {
    return new StorageError(StorageErrorCode.ReadOnly, 'an HTTP image is read-only');
  }
}
