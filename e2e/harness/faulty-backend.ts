// A backend module for the e2e storage-failure test (loaded by the device
// worker through BackendSpec {kind: 'module'}): a memory disk whose writes
// into one sector range fail the way OPFS fails when the quota is spent.

import { toStorageError, type BlockBackend } from '../../src/backends/backend.ts';
import { MemoryBackend } from '../../src/backends/memory.ts';

export interface FaultyOptions {
  size: number;
  /** Writes touching [failFrom, failTo) bytes fail with QuotaExceededError. */
  failFrom: number;
  failTo: number;
}

class FaultyBackend extends MemoryBackend {
  readonly #failFrom: number;
  readonly #failTo: number;
  constructor(options: FaultyOptions) {
    super(options.size);
    this.#failFrom = options.failFrom;
    this.#failTo = options.failTo;
  }
  override write(offset: number, src: Uint8Array): void {
    if (offset < this.#failTo && offset + src.length > this.#failFrom) {
      throw toStorageError(new DOMException('The quota has been exceeded.', 'QuotaExceededError'), 'faulty write');
    }
    super.write(offset, src);
  }
}

export function openBackend(options: FaultyOptions): BlockBackend {
  return new FaultyBackend(options);
}
