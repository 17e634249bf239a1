// Export any disk (any BlockBackend: memory, OPFS, IndexedDB, HTTP, an
// overlay) as a stream of its bytes, or into a file that does not live in
// memory.
//
// `exportStream` is pull-driven: a block is read only when the consumer asks,
// and the stream queues at most two blocks (its high-water mark), so a slow
// consumer holds the export back instead of filling memory. Where the backend
// can say which ranges hold data (`allocatedRanges`, e.g. IndexedDB's missing
// chunks), a block inside a hole is a fresh zero buffer, never read.
//
// `exportToFile` writes the image into a file in OPFS (a hidden folder,
// .vbw-export) through a writable stream, skipping zero blocks (the file is
// sized first, so they read as zeroes), and returns the file: a File from
// OPFS is backed by storage, so `URL.createObjectURL(file)` offers a download
// of any size without the image in memory. `saveToHandle` does the same into
// a file the user picked (`showSaveFilePicker`). Both work on a page and in
// workers; the writable stream commits on close, so a cancelled or failed
// export leaves no partial file behind.

import { StorageError, StorageErrorCode, toStorageError, type BlockBackend } from '../backends/backend.ts';
import { opfsDirectory } from '../backends/opfs.ts';
import { DEFAULT_BLOCK_BYTES, checkBlockBytes, type TransferOptions } from './progress.ts';
import { abortError, throwIfAborted } from './source.ts';
import { isAllZero } from './zero.ts';

/** The OPFS folder `exportToFile` writes into. */
export const OPFS_EXPORT_FOLDER = '.vbw-export';
/** How far ahead to ask a backend for its allocated ranges: one query per this many bytes. */
const RANGE_WINDOW_BYTES = 64 << 20;

/**
 * Visit the disk block by block, in order: `visit(offset, bytes, hole)` with
 * `hole` true when the backend reported no data there (then `bytes` are zeroes
 * nobody read). Each block's bytes are a new buffer the visitor may keep.
 */
class BlockWalker {
  readonly #backend: BlockBackend;
  readonly #blockBytes: number;
  #offset = 0;
  #dataBytes = 0;
  /** Allocated ranges known for [#windowStart, #windowEnd). */
  #ranges: Array<[number, number]> = [];
  #windowEnd = 0;

  constructor(backend: BlockBackend, blockBytes: number) {
    this.#backend = backend;
    this.#blockBytes = blockBytes;
  }

  get offset(): number {
    return this.#offset;
  }
  get dataBytes(): number {
    return this.#dataBytes;
  }
  get done(): boolean {
    return this.#offset >= this.#backend.size;
  }

  /** The next block, or null at the end. */
  async next(): Promise<{ offset: number; bytes: Uint8Array<ArrayBuffer>; hole: boolean } | null> {
    const size = this.#backend.size;
    const offset = this.#offset;
    if (offset >= size) return null;
    const length = Math.min(this.#blockBytes, size - offset);
    const bytes = new Uint8Array(length);
    const hole = !(await this.#mayHoldData(offset, length));
    if (!hole) {
      await this.#backend.read(offset, bytes);
      this.#dataBytes += length;
    }
    this.#offset = offset + length;
    return { offset, bytes, hole };
  }

  async #mayHoldData(offset: number, length: number): Promise<boolean> {
    const backend = this.#backend;
    if (!backend.allocatedRanges) return true;
    if (offset + length > this.#windowEnd) {
      const windowLength = Math.min(backend.size - offset, Math.max(length, RANGE_WINDOW_BYTES));
      this.#ranges = await backend.allocatedRanges(offset, windowLength);
      this.#windowEnd = offset + windowLength;
    }
    const end = offset + length;
    return this.#ranges.some(([s, e]) => s < end && e > offset);
  }
}

/** The disk's bytes as a stream, block by block (see the header). */
export function exportStream(backend: BlockBackend, options: TransferOptions = {}): ReadableStream<Uint8Array> {
  const { signal, onProgress } = options;
  const walker = new BlockWalker(backend, checkBlockBytes(options.blockBytes ?? DEFAULT_BLOCK_BYTES));
  const what = 'export';
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        signal?.addEventListener('abort', () => controller.error(abortError(signal, what)), { once: true });
        if (walker.done) onProgress?.({ doneBytes: 0, totalBytes: backend.size, dataBytes: 0 });
      },
      async pull(controller) {
        try {
          throwIfAborted(signal, what);
          const block = await walker.next();
          throwIfAborted(signal, what);
          if (!block) return controller.close();
          controller.enqueue(block.bytes);
          onProgress?.({ doneBytes: walker.offset, totalBytes: backend.size, dataBytes: walker.dataBytes });
          if (walker.done) controller.close();
        } catch (err) {
          controller.error(signal?.aborted ? abortError(signal, what) : toStorageError(err, what));
        }
      },
    },
    { highWaterMark: 2 },
  );
}

/**
 * Write the disk into `file` (sized first, zero blocks skipped) and commit it.
 * On failure or cancel the writable is aborted: the file keeps what it held.
 */
export async function saveToHandle(backend: BlockBackend, file: FileSystemFileHandle, options: TransferOptions = {}): Promise<void> {
  const { signal, onProgress } = options;
  const walker = new BlockWalker(backend, checkBlockBytes(options.blockBytes ?? DEFAULT_BLOCK_BYTES));
  const what = `export into "${file.name}"`;
  let writable: FileSystemWritableFileStream | undefined;
  try {
    writable = await file.createWritable({ keepExistingData: false });
    await writable.truncate(backend.size);
    for (;;) {
      throwIfAborted(signal, what);
      const block = await walker.next();
      if (!block) break;
      if (!block.hole && !isAllZero(block.bytes)) await writable.write({ type: 'write', position: block.offset, data: block.bytes });
      onProgress?.({ doneBytes: walker.offset, totalBytes: backend.size, dataBytes: walker.dataBytes });
    }
    throwIfAborted(signal, what);
    if (backend.size === 0) onProgress?.({ doneBytes: 0, totalBytes: 0, dataBytes: 0 });
    await writable.close();
  } catch (err) {
    await writable?.abort().catch(() => undefined);
    if (signal?.aborted) throw abortError(signal, what);
    throw toStorageError(err, what);
  }
}

/**
 * Export the disk into a file in OPFS (folder .vbw-export) and return it as a
 * File backed by storage: hand it to `offerDownload` or `URL.createObjectURL`.
 * The file stays until `clearExportFiles` (a File read after its file is
 * removed fails).
 */
export async function exportToFile(backend: BlockBackend, fileName: string, options: TransferOptions = {}): Promise<File> {
  if (fileName === '' || fileName.includes('/') || fileName === '.' || fileName === '..') {
    throw new RangeError(`"${fileName}" is not a valid file name`);
  }
  let handle: FileSystemFileHandle;
  try {
    handle = await (await opfsDirectory(OPFS_EXPORT_FOLDER, true)).getFileHandle(fileName, { create: true });
  } catch (err) {
    throw toStorageError(err, `export into OPFS file "${fileName}"`);
  }
  try {
    await saveToHandle(backend, handle, options);
  } catch (err) {
    await (await opfsDirectory(OPFS_EXPORT_FOLDER, true)).removeEntry(fileName).catch(() => undefined);
    throw err;
  }
  try {
    return await handle.getFile();
  } catch (err) {
    throw toStorageError(err, `export into OPFS file "${fileName}"`);
  }
}

/** Delete every file `exportToFile` made (their Files stop being readable). */
export async function clearExportFiles(): Promise<number> {
  let folder: FileSystemDirectoryHandle;
  try {
    folder = await opfsDirectory(OPFS_EXPORT_FOLDER, false);
  } catch {
    return 0;
  }
  let removed = 0;
  for await (const name of (folder as unknown as { keys(): AsyncIterable<string> }).keys()) {
    try {
      await folder.removeEntry(name);
      removed++;
    } catch (err) {
      // A file still being written (another export) is left for next time.
      if ((err as { name?: string }).name !== 'NoModificationAllowedError') throw toStorageError(err, `remove export "${name}"`);
    }
  }
  return removed;
}

/**
 * Offer `file` as a download named `fileName` (a page only: an <a download>
 * click). Returns the object URL; it is revoked after `keepMs`.
 */
export function offerDownload(file: Blob, fileName: string, keepMs = 60_000): string {
  if (typeof document === 'undefined') throw new StorageError(StorageErrorCode.Unsupported, 'a download needs a page (document)');
  const url = URL.createObjectURL(file);
  const a = document.createElement('a');
  a.href = url;
  a.download = fileName;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), keepMs);
  return url;
}
