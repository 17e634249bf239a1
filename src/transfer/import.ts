// Import an image (File, Blob, URL, ReadableStream) into a disk, streaming,
// in bounded memory, sparse-aware.
//
// `importIntoBackend` does the copy into any open BlockBackend: two blocks
// (one being written while the next is read, src/transfer/blocks.ts), each
// split into data and zero runs (zero.ts). Into a fresh disk, which reads as
// zeroes, zero runs are skipped: nothing is stored for them. Into an existing
// disk they become writeZeroes with unmap allowed (IndexedDB deletes the
// chunks, OPFS writes or truncates), never a write of zero bytes, and the
// disk past the image's end is zeroed the same way.
//
// `importImage` also makes the disk, by the creation rules of its backend:
// - OPFS: the image is written into a disk of its size in a hidden folder
//   (DIR/.vbw-import/NAME) and moved over NAME only once complete and closed,
//   while the import holds NAME's Web Lock. A crash, an error or a cancel at
//   any moment leaves NAME as it was (absent, or the old disk). Needs a
//   dedicated worker, like every OPFS disk (sync access handles).
// - IndexedDB cannot rename a database, so the disk is made under its own
//   name (atomically: it exists once its 'meta' record does) and deleted
//   again when the import fails or is cancelled. A crash of the browser in
//   the middle leaves a disk holding the first part of the image; the
//   caller sees no completed import for it (docs/transfer.md).
//
// Every failure is a StorageError: 'truncated' (the source is shorter or
// longer than declared), 'io' / 'not-found' (a fetch), 'quota-exceeded',
// 'exists', 'in-use', 'aborted' (with the signal's reason as cause).

import { StorageError, StorageErrorCode, toStorageError, type BlockBackend } from '../backends/backend.ts';
import { IndexedDbBackend, deleteIndexedDbDisk, listIndexedDbDisks } from '../backends/indexeddb.ts';
import { OpfsBackend, listOpfsDisks, opfsDirectory, opfsLockName } from '../backends/opfs.ts';
import { acquireLock, inUseError } from '../backends/web-lock.ts';
import { BlockReader } from './blocks.ts';
import { DEFAULT_BLOCK_BYTES, ZERO_GRAIN_BYTES, checkBlockBytes, type TransferOptions } from './progress.ts';
import { abortError, openSource, throwIfAborted, type ImageSource } from './source.ts';
import { splitRuns } from './zero.ts';

const SECTOR = 512;
/** In an existing disk, zero stretches shorter than this are written as data (one write beats write, zero, write). */
const MIN_UNMAP_BYTES = 64 * 1024;
/** Where OPFS imports are built before they move into place (a folder: listOpfsDisks shows files only). */
export const OPFS_IMPORT_FOLDER = '.vbw-import';

export interface ImportOptions extends TransferOptions {
  /** The image's size in bytes: required for a ReadableStream (and a URL without Content-Length). */
  size?: number;
}

export interface ImportResult {
  /** The disk's size: the image's, rounded up to whole sectors (or the existing disk's). */
  diskBytes: number;
  /** Bytes the source delivered. */
  imageBytes: number;
  /** Bytes written as data; the rest of the image was zero blocks. */
  dataBytes: number;
}

/** Where `importImage` puts the image. */
export type ImportTarget =
  | { kind: 'opfs'; name: string; directory?: string }
  | { kind: 'indexeddb'; name: string; chunkBytes?: number; cacheBytes?: number };

export interface ImportImageOptions extends ImportOptions {
  /**
   * When the disk exists: 'fail' (default) with StorageError 'exists';
   * 'replace' it with a new disk of the image's size (atomic on OPFS); or
   * 'overwrite' it in place, keeping its size (the image must fit; a cancel
   * leaves it part old, part new).
   */
  existing?: 'fail' | 'replace' | 'overwrite';
}

/** The image's size rounded up to whole sectors: the size of the disk made for it. */
export function diskBytesFor(imageBytes: number): number {
  return Math.ceil(imageBytes / SECTOR) * SECTOR;
}

/**
 * Copy `source` into the open `backend` from offset 0. `fresh` says the
 * backend reads as zeroes everywhere (a disk just made), so zero blocks are
 * skipped; otherwise they, and the disk past the image, are write-zeroed.
 * Flushes at the end. Does not close the backend.
 */
export async function importIntoBackend(
  source: ImageSource,
  backend: BlockBackend,
  options: ImportOptions & { fresh?: boolean } = {},
): Promise<ImportResult> {
  const opened = await openSource(source, options.size, options.signal);
  return copyInto(opened.stream, opened.size, opened.label, backend, options.fresh ?? false, options);
}

async function copyInto(
  stream: ReadableStream<Uint8Array>,
  imageBytes: number,
  label: string,
  backend: BlockBackend,
  fresh: boolean,
  options: TransferOptions,
): Promise<ImportResult> {
  const { signal, onProgress } = options;
  const blockBytes = checkBlockBytes(options.blockBytes ?? DEFAULT_BLOCK_BYTES);
  const what = `import of ${label}`;
  const reader = new BlockReader(stream, imageBytes, label);
  if (diskBytesFor(imageBytes) > backend.size) {
    await reader.cancel();
    throw new StorageError(StorageErrorCode.OutOfRange, `${label} is ${imageBytes} bytes, more than the disk's ${backend.size}`);
  }
  const pool: Uint8Array[] = [new Uint8Array(blockBytes), new Uint8Array(blockBytes)];
  let written: Promise<number> | null = null;
  let offset = 0;
  let doneBytes = 0;
  let dataBytes = 0;
  const onAbort = () => void reader.cancel(signal?.reason);
  signal?.addEventListener('abort', onAbort);
  try {
    for (let i = 0; ; i ^= 1) {
      throwIfAborted(signal, what);
      const block = pool[i]!;
      const filled = await reader.fill(block);
      throwIfAborted(signal, what);
      // The previous block is stored (its buffer free again) before this one starts.
      if (written) {
        dataBytes += await written;
        onProgress?.({ doneBytes, totalBytes: imageBytes, dataBytes });
        written = null;
      }
      if (filled === 0) break;
      // An image that ends inside a sector: the rest of that sector is zeroes.
      const length = Math.min(blockBytes, diskBytesFor(filled));
      block.fill(0, filled, length);
      written = storeBlock(backend, offset, block.subarray(0, length), fresh);
      offset += length;
      doneBytes += filled;
    }
    if (!fresh && offset < backend.size) await zeroRange(backend, offset, backend.size - offset);
    throwIfAborted(signal, what);
    await backend.flush();
    if (doneBytes === 0) onProgress?.({ doneBytes, totalBytes: imageBytes, dataBytes });
    return { diskBytes: backend.size, imageBytes, dataBytes };
  } catch (err) {
    await written?.catch(() => undefined);
    await reader.cancel(err);
    if (signal?.aborted) throw abortError(signal, what);
    throw toStorageError(err, what);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** Store one block: its data runs written, its zero runs skipped (fresh) or write-zeroed. Returns the data bytes. */
async function storeBlock(backend: BlockBackend, offset: number, block: Uint8Array, fresh: boolean): Promise<number> {
  let data = 0;
  for (const run of splitRuns(block, ZERO_GRAIN_BYTES, fresh ? ZERO_GRAIN_BYTES : MIN_UNMAP_BYTES)) {
    if (run.zero) {
      if (!fresh) await zeroRange(backend, offset + run.offset, run.length);
    } else {
      await backend.write(offset + run.offset, block.subarray(run.offset, run.offset + run.length));
      data += run.length;
    }
  }
  return data;
}

let zeroes: Uint8Array | undefined;

/** Make a range read as zeroes: unmapped where the backend can, written from one zero buffer where it cannot. */
async function zeroRange(backend: BlockBackend, offset: number, length: number): Promise<void> {
  if (backend.supportsWriteZeroes) return void (await backend.writeZeroes(offset, length, true));
  zeroes ??= new Uint8Array(DEFAULT_BLOCK_BYTES);
  for (let done = 0; done < length; done += zeroes.length) {
    const n = Math.min(zeroes.length, length - done);
    await backend.write(offset + done, zeroes.subarray(0, n));
  }
}

/**
 * Import `source` into the OPFS or IndexedDB disk `target`, making it (see
 * the header for how each backend keeps creation atomic) at the image's size
 * rounded up to whole sectors, or overwriting an existing one when asked.
 */
export async function importImage(source: ImageSource, target: ImportTarget, options: ImportImageOptions = {}): Promise<ImportResult> {
  const existing = options.existing ?? 'fail';
  const opened = await openSource(source, options.size, options.signal);
  const copy = (backend: BlockBackend, fresh: boolean) => copyInto(opened.stream, opened.size, opened.label, backend, fresh, options);
  const size = diskBytesFor(opened.size);
  try {
    return target.kind === 'opfs'
      ? await importOpfs(target, size, existing, copy)
      : await importIndexedDb(target, size, existing, copy);
  } catch (err) {
    await opened.stream.cancel(err).catch(() => undefined);
    if (options.signal?.aborted) throw abortError(options.signal, `import of ${opened.label}`);
    throw err instanceof StorageError || err instanceof RangeError ? err : toStorageError(err, `import of ${opened.label}`);
  }
}

type Copy = (backend: BlockBackend, fresh: boolean) => Promise<ImportResult>;

function existsError(what: string): StorageError {
  return new StorageError(StorageErrorCode.Exists, `${what} exists already (pass existing: 'replace' or 'overwrite')`);
}

async function importOpfs(target: { name: string; directory?: string }, size: number, existing: string, copy: Copy): Promise<ImportResult> {
  const directory = target.directory ?? '';
  const { name } = target;
  const what = `OPFS disk "${directory ? `${directory}/` : ''}${name}"`;
  // Build under the hidden folder while holding the final name's lock, so no
  // one opens (or imports into) NAME meanwhile; then move into place. The
  // lock is taken before looking for NAME, so the answer cannot go stale.
  let lock = await acquireLock(opfsLockName(name, directory), 'exclusive', () => inUseError(what));
  const hidden = directory ? `${directory}/${OPFS_IMPORT_FOLDER}` : OPFS_IMPORT_FOLDER;
  let building = false;
  try {
    const found = (await listOpfsDisks(directory)).some((d) => d.name === name);
    if (found && existing === 'fail') throw existsError(what);
    if (found && existing === 'overwrite') {
      // The backend takes the lock itself (Web Locks are not re-entrant).
      lock?.release();
      await lock?.released;
      lock = null;
      return await withBackend(await OpfsBackend.open({ name, directory }), (b) => copy(b, false));
    }
    building = true;
    const folder = await opfsDirectory(hidden, true);
    // A leftover from a crashed import holds anything: start from nothing.
    await folder.removeEntry(name).catch(() => undefined);
    const result = await withBackend(await OpfsBackend.open({ name, directory: hidden, size }), (b) => copy(b, true));
    const file = await folder.getFileHandle(name);
    await (file as unknown as MovableHandle).move(await opfsDirectory(directory, true), name);
    return result;
  } catch (err) {
    if (building) await (await opfsDirectory(hidden, true).catch(() => null))?.removeEntry(name).catch(() => undefined);
    throw err;
  } finally {
    lock?.release();
    await lock?.released;
  }
}

async function importIndexedDb(
  target: { name: string; chunkBytes?: number; cacheBytes?: number },
  size: number,
  existing: string,
  copy: Copy,
): Promise<ImportResult> {
  const { name, chunkBytes, cacheBytes } = target;
  const found = (await listIndexedDbDisks()).some((d) => d.name === name);
  if (found && existing === 'fail') throw existsError(`IndexedDB disk "${name}"`);
  if (found && existing === 'overwrite') return withBackend(await IndexedDbBackend.open({ name, cacheBytes }), (b) => copy(b, false));
  if (found) await deleteIndexedDbDisk(name);
  // Created incomplete: until markComplete, a crash or a failure leaves no disk under the name.
  const backend = await IndexedDbBackend.open({ name, size, chunkBytes, cacheBytes, incomplete: true });
  try {
    return await withBackend(backend, async (b) => {
      const result = await copy(b, true);
      await backend.markComplete();
      return result;
    });
  } catch (err) {
    // Half an image is no disk: take it away again.
    await deleteIndexedDbDisk(name).catch(() => undefined);
    throw err;
  }
}

/** Run `body`, then close the backend whatever happened (a failed close after a failure is not the news). */
async function withBackend<T>(backend: BlockBackend, body: (b: BlockBackend) => Promise<T>): Promise<T> {
  let result: T;
  try {
    result = await body(backend);
  } catch (err) {
    await Promise.resolve(backend.close()).catch(() => undefined);
    throw err;
  }
  await backend.close();
  return result;
}

/** `FileSystemHandle.move(directory, newName)` (Chromium 110+); absent from TypeScript's lib. */
interface MovableHandle {
  move(directory: FileSystemDirectoryHandle, newName: string): Promise<void>;
}
