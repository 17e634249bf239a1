// A disk in the origin private file system (OPFS), read and written through a
// FileSystemSyncAccessHandle.
//
// The handle is opened up front (`OpfsBackend.open`, async), so every later
// call is synchronous: the device's fast path never awaits. Sync access
// handles exist only in dedicated workers, which is where the device runs.
// `read`/`write` hand guest-RAM views (on a shared WebAssembly.Memory) straight
// to the handle: no copy (DESIGN.md: verified in Chromium).
//
// Ownership: a sync access handle is already exclusive in the platform, but a
// second opener would only learn that from a NoModificationAllowedError after
// its own setup, and a read-only opener could slip in beside a writer. A Web
// Lock named after the disk makes the rule explicit and immediate: writers take
// it exclusively, read-only openers share it, and `ifAvailable` means a loser
// gets StorageError 'in-use' at once instead of queueing (never a hang). The
// lock is released on close, or by the browser when the tab or worker dies.
//
// Creation is atomic: a new disk is made and sized under a temporary name
// (NAME.vbw-creating) and only then moved to NAME, so a crash at any moment
// leaves either no disk or a disk of its full size, never the empty file that
// an older version left when the browser died between creating the file and
// sizing it (11 of 15 kills at that moment, issue 12). Such an empty file is
// not a disk: with a size it is replaced by a new disk, without one it is
// 'not-found'. A leftover temporary file is reused by the next creation and
// hidden from listOpfsDisks.
//
// OPFS cannot punch holes. DISCARD and WRITE_ZEROES write zeroes from one
// reusable zero chunk (no allocation the size of the range); a range that
// runs to the end of the disk and may be unmapped is truncated away and
// re-extended instead, which leaves a sparse, zero-reading tail (mkfs discards
// the whole disk first, so that case is common). Offsets are plain numbers, so
// disks over 4 GiB work.

import { StorageError, StorageErrorCode, toStorageError, type BlockBackend } from './backend.ts';
import { acquireLock, acquireLockWithin, inUseError, type HeldLock } from './web-lock.ts';

export interface OpfsBackendOptions {
  /** File name of the disk (no '/'). */
  name: string;
  /** Folder inside the OPFS root, '/'-separated ('' or omitted: the root). Created with a new disk. */
  directory?: string;
  /**
   * Size in bytes for a disk that does not exist yet; it is created sparse.
   * An existing disk keeps the size it has. Without `size` the disk must exist.
   */
  size?: number;
  /**
   * Open read-only: writes, discards, write-zeroes and resize are refused.
   * Read-only openers can share a disk (across tabs and workers); none can
   * share it with a writer.
   */
  readOnly?: boolean;
  /**
   * How long to keep trying when another holder has the disk, in ms
   * (default 0: fail with 'in-use' at once). After a page reload the old
   * page's worker releases its lock a moment later; a short wait lets the
   * new page take over without the user seeing 'in-use'. Never unbounded.
   */
  lockWaitMs?: number;
}

/** Suffix of the temporary name a new disk is sized under before it moves into place. */
const CREATING_SUFFIX = '.vbw-creating';

/** The Web Lock that guards a disk; exported so tools can query `navigator.locks`. */
export function opfsLockName(name: string, directory = ''): string {
  return `virtio-blk-web:opfs:${normalizeDirectory(directory)}/${name}`;
}

/** Bytes per write when zeroing: large enough to amortise calls, small enough to keep around. */
const ZERO_CHUNK_BYTES = 1 << 20;
/** Shared by every instance; only ever passed to `write`, so it stays all zeroes. */
let zeroChunk: Uint8Array | undefined;

/** `createSyncAccessHandle` with the `mode` option (Chromium 121+); absent from TypeScript's lib. */
interface FileHandleWithModes {
  createSyncAccessHandle(options?: { mode?: 'readwrite' | 'read-only' | 'readwrite-unsafe' }): Promise<FileSystemSyncAccessHandle>;
}

export class OpfsBackend implements BlockBackend {
  /** The options object for every read and write: one per backend, not one per call. */
  readonly #at = { at: 0 };
  readonly readOnly: boolean;
  readonly supportsDiscard = true;
  readonly supportsWriteZeroes = true;
  /** For messages: 'directory/name'. */
  readonly path: string;
  /** Null once closed; every call checks it first, so a closed backend throws 'closed'. */
  #handle: FileSystemSyncAccessHandle | null;
  /**
   * The disk's size in bytes. Equals the file's size: no one else can change
   * the file while we hold the handle and the lock (read-only sharers cannot
   * write), and only `resize` changes it here.
   */
  #size: number;
  /** The disk's Web Lock, held until close; null without Web Locks. */
  #lock: HeldLock | null;

  private constructor(path: string, handle: FileSystemSyncAccessHandle, readOnly: boolean, lock: HeldLock | null) {
    this.path = path;
    this.#handle = handle;
    this.#size = handle.getSize();
    this.readOnly = readOnly;
    this.#lock = lock;
  }

  /**
   * Open (or create, when `size` is given) a disk. Call it in a dedicated
   * worker. Throws StorageError: 'in-use' when another tab or worker holds
   * the disk, 'not-found' when it does not exist and no size was given.
   */
  static async open(options: OpfsBackendOptions): Promise<OpfsBackend> {
    const { name, size, readOnly = false } = options;
    const directory = normalizeDirectory(options.directory ?? '');
    checkName(name);
    if (size !== undefined && !(Number.isSafeInteger(size) && size >= 0)) {
      throw new RangeError(`disk size ${size} is not a whole number of bytes`);
    }
    const path = directory ? `${directory}/${name}` : name;
    if (typeof FileSystemFileHandle === 'undefined' || !('createSyncAccessHandle' in FileSystemFileHandle.prototype)) {
      throw new StorageError(
        StorageErrorCode.Unsupported,
        `OPFS disk "${path}": sync access handles exist only in dedicated workers; open it in the device worker`,
      );
    }
    const lock = await acquireLockWithin(
      opfsLockName(name, directory),
      readOnly ? 'shared' : 'exclusive',
      () => inUse(path),
      options.lockWaitMs ?? 0,
    );
    let handle: FileSystemSyncAccessHandle | undefined;
    try {
      const create = size !== undefined && !readOnly;
      const file = create ? await createOrOpenFile(directory, name, size, path) : await existingDisk(directory, name, path);
      try {
        handle = await (file as unknown as FileHandleWithModes).createSyncAccessHandle(
          readOnly ? { mode: 'read-only' } : undefined,
        );
      } catch (err) {
        const error = toStorageError(err, `OPFS disk "${path}": cannot open`);
        if (error.code === StorageErrorCode.InUse) throw inUse(path, err);
        throw error;
      }
      return new OpfsBackend(path, handle, readOnly, lock);
    } catch (err) {
      try {
        handle?.close();
      } catch {
        // Already failing: the original error is the one worth reporting.
      }
      lock?.release();
      await lock?.released;
      throw err instanceof StorageError || err instanceof RangeError ? err : toStorageError(err, `OPFS disk "${path}"`);
    }
  }

  get size(): number {
    return this.#size;
  }

  read(offset: number, dst: Uint8Array): void {
    const handle = this.#open();
    this.#check(offset, dst.length);
    const done = this.#transfer(handle, 'read', offset, dst, 'read');
    // Only a file shorter than #size reads short; past its end the disk is zeroes.
    if (done < dst.length) dst.fill(0, done);
  }

  write(offset: number, src: Uint8Array): void {
    const handle = this.#open();
    this.#checkWritable();
    this.#check(offset, src.length);
    this.#writeAll(handle, offset, src, 'write');
  }

  flush(): void {
    const handle = this.#open();
    // A read-only handle refuses flush() (NoModificationAllowedError), and
    // there is nothing of ours to make durable.
    if (this.readOnly) return;
    try {
      handle.flush();
    } catch (err) {
      throw toStorageError(err, `OPFS disk "${this.path}": flush`);
    }
  }

  discard(offset: number, length: number): void {
    // Reads after a discard return zeroes here: OPFS has no cheaper way to
    // drop data, and a deterministic answer is kinder to the guest.
    this.writeZeroes(offset, length, true);
  }

  writeZeroes(offset: number, length: number, mayUnmap: boolean): void {
    const handle = this.#open();
    this.#checkWritable();
    this.#check(offset, length);
    if (length === 0) return;
    if (mayUnmap && offset + length === this.#size) {
      try {
        handle.truncate(offset);
        handle.truncate(this.#size);
      } catch (err) {
        throw toStorageError(err, `OPFS disk "${this.path}": unmap of ${length} bytes at ${offset}`);
      }
      return;
    }
    zeroChunk ??= new Uint8Array(ZERO_CHUNK_BYTES);
    for (let done = 0; done < length; ) {
      const n = Math.min(ZERO_CHUNK_BYTES, length - done);
      this.#writeAll(handle, offset + done, n === ZERO_CHUNK_BYTES ? zeroChunk : zeroChunk.subarray(0, n), 'write-zeroes');
      done += n;
    }
  }

  resize(newSize: number): void {
    const handle = this.#open();
    this.#checkWritable();
    if (!(Number.isSafeInteger(newSize) && newSize >= 0)) {
      throw new StorageError(StorageErrorCode.OutOfRange, `disk size ${newSize} is not a whole number of bytes`);
    }
    try {
      handle.truncate(newSize);
    } catch (err) {
      throw toStorageError(err, `OPFS disk "${this.path}": resize to ${newSize} bytes`);
    }
    this.#size = newSize;
  }

  /**
   * Flush, close the handle and let go of the lock. The promise settles once
   * the lock is gone, so the disk can be opened again right after it.
   */
  async close(): Promise<void> {
    const handle = this.#handle;
    if (!handle) return;
    this.#handle = null;
    const lock = this.#lock;
    this.#lock = null;
    try {
      // Closing flushes too, but say so explicitly: close is the last chance.
      if (!this.readOnly) handle.flush();
      handle.close();
    } catch (err) {
      throw toStorageError(err, `OPFS disk "${this.path}": close`);
    } finally {
      lock?.release();
      await lock?.released;
    }
  }

  /**
   * The one I/O loop: `handle.read` or `handle.write` until `bytes` is done or
   * the handle moves nothing (a short file). Returns the bytes moved. The
   * first call passes `bytes` itself, so the usual whole transfer makes no
   * subarray (a view the engine has seen is faster to hand to OPFS).
   */
  #transfer(handle: FileSystemSyncAccessHandle, op: 'read' | 'write', offset: number, bytes: Uint8Array, what: string): number {
    let done = 0;
    try {
      while (done < bytes.length) {
        this.#at.at = offset + done;
        const view = done === 0 ? bytes : bytes.subarray(done);
        const n = op === 'read' ? handle.read(view, this.#at) : handle.write(view, this.#at);
        if (n <= 0) break;
        done += n;
      }
    } catch (err) {
      throw toStorageError(err, `OPFS disk "${this.path}": ${what} of ${bytes.length} bytes at ${offset}`);
    }
    return done;
  }

  #writeAll(handle: FileSystemSyncAccessHandle, offset: number, src: Uint8Array, what: string): void {
    const done = this.#transfer(handle, 'write', offset, src, what);
    if (done < src.length) {
      throw new StorageError(StorageErrorCode.Io, `OPFS disk "${this.path}": ${what} at ${offset} stopped after ${done} of ${src.length} bytes`);
    }
  }

  #open(): FileSystemSyncAccessHandle {
    if (!this.#handle) throw new StorageError(StorageErrorCode.Closed, `OPFS disk "${this.path}" is closed`);
    return this.#handle;
  }

  #check(offset: number, length: number): void {
    if (!(offset >= 0 && length >= 0 && Number.isSafeInteger(offset + length) && offset + length <= this.#size)) {
      throw new StorageError(StorageErrorCode.OutOfRange, `range ${offset}+${length} outside disk of ${this.#size} bytes`);
    }
  }

  #checkWritable(): void {
    if (this.readOnly) throw new StorageError(StorageErrorCode.ReadOnly, `OPFS disk "${this.path}" is open read-only`);
  }
}

/** Delete a disk. Throws 'in-use' while someone has it open, 'not-found' when it does not exist. */
export async function deleteOpfsDisk(name: string, directory = ''): Promise<void> {
  const dir = normalizeDirectory(directory);
  checkName(name);
  const path = dir ? `${dir}/${name}` : name;
  const lock = await acquireLock(opfsLockName(name, dir), 'exclusive', () => inUse(path));
  try {
    const folder = await directoryHandle(dir, false);
    await removeQuietly(dir, name + CREATING_SUFFIX);
    await folder.removeEntry(name);
  } catch (err) {
    const error = toStorageError(err, `OPFS disk "${path}": delete`);
    throw error.code === StorageErrorCode.InUse ? inUse(path, err) : error;
  } finally {
    lock?.release();
    await lock?.released;
  }
}

async function removeQuietly(directory: string, name: string): Promise<void> {
  try {
    await (await directoryHandle(directory, false)).removeEntry(name);
  } catch {
    // Best effort: the caller is reporting the error that brought it here.
  }
}

/** The disks (files) in an OPFS folder with their sizes; empty when the folder does not exist. */
export async function listOpfsDisks(directory = ''): Promise<Array<{ name: string; size: number }>> {
  let folder: FileSystemDirectoryHandle;
  try {
    folder = await directoryHandle(normalizeDirectory(directory), false);
  } catch (err) {
    if ((err as { name?: unknown } | null)?.name === 'NotFoundError') return [];
    throw toStorageError(err, `OPFS folder "${directory}": list`);
  }
  const disks: Array<{ name: string; size: number }> = [];
  // `values()` is not in TypeScript's DOM lib for directory handles yet.
  for await (const entry of (folder as unknown as { values(): AsyncIterable<FileSystemHandle> }).values()) {
    if (entry.kind === 'file' && !entry.name.endsWith(CREATING_SUFFIX)) disks.push({ name: entry.name, size: (await (entry as FileSystemFileHandle).getFile()).size });
  }
  return disks.sort((a, b) => a.name.localeCompare(b.name));
}

function normalizeDirectory(directory: string): string {
  const parts = directory.split('/').filter((p) => p !== '');
  for (const part of parts) checkName(part);
  return parts.join('/');
}

function checkName(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\\') || name.endsWith(CREATING_SUFFIX)) {
    throw new RangeError(`"${name}" is not a valid OPFS file or folder name`);
  }
}

/** The OPFS folder at `directory` ('/'-separated), created when `create`. */
export async function opfsDirectory(directory: string, create = false): Promise<FileSystemDirectoryHandle> {
  return directoryHandle(normalizeDirectory(directory), create);
}

async function directoryHandle(directory: string, create: boolean): Promise<FileSystemDirectoryHandle> {
  let folder = await navigator.storage.getDirectory();
  for (const part of directory ? directory.split('/') : []) folder = await folder.getDirectoryHandle(part, { create });
  return folder;
}

/**
 * The disk's file when it exists and is not an empty leftover (see the
 * header); 'not-found' otherwise.
 */
async function existingDisk(directory: string, name: string, path: string): Promise<FileSystemFileHandle> {
  const file = await findFile(directory, name, path);
  if (!file || (await file.getFile()).size === 0) {
    throw new StorageError(StorageErrorCode.NotFound, `OPFS disk "${path}" does not exist (give a size to create it)`);
  }
  return file;
}

/** The file at `name`, or null when there is none; throws StorageError for anything else. */
async function findFile(directory: string, name: string, path: string): Promise<FileSystemFileHandle | null> {
  try {
    return await (await directoryHandle(directory, false)).getFileHandle(name);
  } catch (err) {
    if ((err as { name?: unknown } | null)?.name === 'NotFoundError') return null;
    throw toStorageError(err, `OPFS disk "${path}"`);
  }
}

/**
 * The existing disk at `name`, or a new one of `size` bytes made atomically:
 * sized and flushed under the temporary name, then moved into place (which
 * also replaces an empty leftover). The caller holds the disk's exclusive lock,
 * so nobody else uses the temporary name meanwhile.
 */
async function createOrOpenFile(directory: string, name: string, size: number, path: string): Promise<FileSystemFileHandle> {
  const existing = await findFile(directory, name, path);
  if (existing && (size === 0 || (await existing.getFile()).size > 0)) return existing;
  let folder: FileSystemDirectoryHandle;
  try {
    folder = await directoryHandle(directory, true);
  } catch (err) {
    throw toStorageError(err, `OPFS disk "${path}": cannot create its folder`);
  }
  const temporary = name + CREATING_SUFFIX;
  try {
    const file = await folder.getFileHandle(temporary, { create: true });
    const handle = await file.createSyncAccessHandle();
    try {
      // A leftover from an earlier crash may hold anything: start from empty.
      handle.truncate(0);
      handle.truncate(size);
      handle.flush();
    } finally {
      handle.close();
    }
    await (file as unknown as MovableFileHandle).move(name);
  } catch (err) {
    // A disk we could not size (quota) leaves nothing behind.
    await removeQuietly(directory, temporary);
    throw toStorageError(err, `OPFS disk "${path}": cannot create ${size} bytes`);
  }
  try {
    return await folder.getFileHandle(name);
  } catch (err) {
    throw toStorageError(err, `OPFS disk "${path}"`);
  }
}

/** `FileSystemHandle.move(newName)` (Chromium 110+); absent from TypeScript's lib. */
interface MovableFileHandle {
  move(newName: string): Promise<void>;
}

function inUse(path: string, cause?: unknown): StorageError {
  return inUseError(`OPFS disk "${path}"`, cause);
}
