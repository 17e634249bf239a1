// The storage contract every backend implements, and the one error type they
// throw. A call may finish synchronously (OPFS sync access handles, memory,
// Node positioned I/O) or return a promise (IndexedDB, HTTP); the device keeps
// a synchronous fast path for the first kind and awaits only the second.
//
// Buffers are views straight into guest RAM: a backend reads into `dst` and
// writes from `src` and keeps no reference to either after its call (or its
// promise) completes, because the guest reuses that memory.

/** Completion of a backend call: nothing when it finished synchronously. */
export type MaybePromise = void | Promise<void>;

export interface BlockBackend {
  /** Size of the disk in bytes. The device exposes floor(size / 512) sectors. */
  readonly size: number;
  /** Whether writes, discards and write-zeroes are refused. */
  readonly readOnly: boolean;
  /** Whether `discard` may be offered to the guest (VIRTIO_BLK_F_DISCARD). */
  readonly supportsDiscard: boolean;
  /** Whether `writeZeroes` may be offered to the guest (VIRTIO_BLK_F_WRITE_ZEROES). */
  readonly supportsWriteZeroes: boolean;
  /**
   * Optional: what names this disk's content, for a copy-on-write overlay to
   * pin its base to (overlay.ts). A string (a chunked image's manifest hash)
   * or an HTTP image's validators (ETag, else Last-Modified). Backends that
   * cannot name their content omit it; the overlay then needs a caller-given
   * identity.
   */
  readonly identity?: string | { readonly size: number; readonly etag: string | null; readonly lastModified: string | null };

  /** Fill `dst` with the bytes at `offset`. The range lies inside the disk. */
  read(offset: number, dst: Uint8Array): MaybePromise;
  /** Store `src` at `offset`. The range lies inside the disk. */
  write(offset: number, src: Uint8Array): MaybePromise;
  /**
   * Optional vectored forms: fill `dsts` (or store `srcs`) back to back from
   * `offset` in one call. A guest request usually arrives as many page-sized
   * segments (Linux splits a 512 KiB read into 128 of 4 KiB); a backend with
   * a vectored primitive (preadv) serves them with one call instead of one
   * each. The device uses them for requests of more than one segment.
   */
  readv?(offset: number, dsts: Uint8Array[]): MaybePromise;
  writev?(offset: number, srcs: Uint8Array[]): MaybePromise;
  /** Make every completed write durable. */
  flush(): MaybePromise;
  /** The range may be deallocated; later reads return zeroes or the old data. */
  discard(offset: number, length: number): MaybePromise;
  /**
   * Later reads of the range return zeroes. `mayUnmap` allows deallocating the
   * range instead of writing zeroes (VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP).
   */
  writeZeroes(offset: number, length: number, mayUnmap: boolean): MaybePromise;
  /**
   * Optional: the parts of [offset, offset + length) that may hold non-zero
   * data, as sorted, disjoint [start, end) byte ranges clipped to the query.
   * Bytes outside them read as zeroes, so a reader (an export) can skip them
   * without reading. Over-reporting is allowed (an allocated range may hold
   * zeroes), under-reporting never. Backends that cannot tell omit it
   * (IndexedDB knows its missing chunks; OPFS cannot see holes).
   */
  allocatedRanges?(offset: number, length: number): Array<[number, number]> | Promise<Array<[number, number]>>;
  /** Change the size (grow or shrink). Optional: backends that cannot resize omit it. */
  resize?(newSize: number): MaybePromise;
  /** Release handles. Pending calls must have completed. */
  close(): MaybePromise;
}

/** What went wrong in storage. Every code maps to VIRTIO_BLK_S_IOERR for the guest. */
export const StorageErrorCode = {
  /** The platform refused or failed the operation (the platform error is `cause`). */
  Io: 'io',
  /** The storage quota is exhausted (QuotaExceededError). */
  QuotaExceeded: 'quota-exceeded',
  /** The disk is opened elsewhere (another tab or worker holds it). */
  InUse: 'in-use',
  /** A write was attempted on a read-only backend. */
  ReadOnly: 'read-only',
  /** The range lies outside the disk. */
  OutOfRange: 'out-of-range',
  /** The backend cannot do this operation. */
  Unsupported: 'unsupported',
  /** The data read back does not match what was stored (checksum or length). */
  Corrupt: 'corrupt',
  /** The backend was closed, or its handle was lost. */
  Closed: 'closed',
  /** The disk does not exist. */
  NotFound: 'not-found',
  /** A remote read-only image changed under a running guest (its ETag, Last-Modified or size moved). */
  ImageChanged: 'image-changed',
  /** A copy-on-write overlay's top was made over another base (its size or identity differs). */
  BaseMismatch: 'base-mismatch',
  /** A disk of that name exists already (an import that may not replace it). */
  Exists: 'exists',
  /** An image source ended before its declared size, or ran past it. */
  Truncated: 'truncated',
  /** The operation was cancelled through its AbortSignal (the signal's reason is `cause`). */
  Aborted: 'aborted',
} as const;
export type StorageErrorCode = (typeof StorageErrorCode)[keyof typeof StorageErrorCode];

export class StorageError extends Error {
  override readonly name = 'StorageError';
  constructor(
    readonly code: StorageErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Wrap any thrown value as a StorageError, keeping the original as `cause`. */
export function toStorageError(err: unknown, what: string): StorageError {
  if (err instanceof StorageError) return err;
  const name = (err as { name?: unknown } | null)?.name;
  const code =
    name === 'QuotaExceededError'
      ? StorageErrorCode.QuotaExceeded
      : name === 'NoModificationAllowedError'
        ? StorageErrorCode.InUse
        : name === 'NotFoundError'
          ? StorageErrorCode.NotFound
          : name === 'InvalidStateError'
            ? StorageErrorCode.Closed
            : StorageErrorCode.Io;
  const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return new StorageError(code, `${what}: ${detail}`, { cause: err });
}

/** True when `value` is a promise-like (the call went asynchronous). */
export function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null | undefined)?.then === 'function';
}
