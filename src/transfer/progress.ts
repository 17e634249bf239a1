// What a transfer reports while it runs, and the options every transfer takes.

/** Progress of an import or export. `doneBytes` only grows and ends at `totalBytes`. */
export interface TransferProgress {
  /** Bytes of the image handled so far (read from the source, or handed to the consumer). */
  doneBytes: number;
  /** The image's size in bytes. */
  totalBytes: number;
  /**
   * Bytes that carried data: written to the disk (import), or read from it
   * (export). The rest were zero blocks, skipped or unmapped, or holes the
   * backend reported, never read.
   */
  dataBytes: number;
}

export interface TransferOptions {
  /** Cancel: the transfer stops at its next block, releases what it holds and fails with StorageError 'aborted'. */
  signal?: AbortSignal;
  /** Called after each block, and once at the end with doneBytes === totalBytes. */
  onProgress?: (progress: TransferProgress) => void;
  /**
   * Bytes per block (a multiple of 4096; default 1 MiB). An import holds two
   * blocks, an export's stream queues at most two: this is its memory.
   */
  blockBytes?: number;
}

export const DEFAULT_BLOCK_BYTES = 1 << 20;
/** Zero detection works in pages: whole sectors, and the grain of every backend here. */
export const ZERO_GRAIN_BYTES = 4096;

export function checkBlockBytes(blockBytes: number): number {
  if (!(Number.isSafeInteger(blockBytes) && blockBytes > 0 && blockBytes % ZERO_GRAIN_BYTES === 0 && blockBytes <= 64 << 20)) {
    throw new RangeError(`block size ${blockBytes} is not a multiple of ${ZERO_GRAIN_BYTES} bytes up to 64 MiB`);
  }
  return blockBytes;
}
