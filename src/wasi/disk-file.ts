// A project disk as a browser_wasi_shim file: `DiskFile` is the Inode (what a
// directory holds and `stat` describes), `OpenDiskFile` the Fd a program gets
// from path_open. Every call is synchronous, as the shim's are: the backend
// must answer before it returns (memory, OPFS in this worker, or an
// asynchronous backend behind the facade, SyncBackendClient).
//
// The shim's Fd API returns read data as a new Uint8Array that it then copies
// into the program's memory, and copies written data out of it before the
// call: one copy each way that the adapter cannot avoid through that API.
// `directDiskIo` (direct-io.ts) gives the adapter the program's iovecs
// instead, so OPFS and memory read and write the program's memory directly.
//
// A disk has a size and does not grow by writing (a block device's rule):
// reads past the end return EOF, writes there fail with NOSPC, and a write
// crossing the end writes what fits. Resizing is explicit: fd_filestat_set_size
// and fd_allocate, when the backend can resize. errno.ts says which errno
// each failure gets and why; a storage error also goes to `onStorageError`,
// so the host learns what the program only sees as EIO.

import { Fd, Inode, wasi } from '@bjorn3/browser_wasi_shim';
import { StorageError, StorageErrorCode, isPromise, toStorageError, type BlockBackend, type MaybePromise } from '../backends/backend.ts';
import { errnoFor } from './errno.ts';
import { DiskFilestat } from './filestat.ts';

export interface DiskFileOptions {
  /** Serve the disk read-only even when the backend could write (default: the backend's own). */
  readOnly?: boolean;
  /** Told about every storage failure; the program gets its errno (EIO mostly). */
  onStorageError?: (error: StorageError) => void;
  /** For messages (default 'disk'). */
  name?: string;
}

/** Rights that imply writing (wasi-libc asks for them when open() has O_WRONLY or O_RDWR). */
const WRITE_RIGHTS = BigInt(wasi.RIGHTS_FD_WRITE | wasi.RIGHTS_FD_ALLOCATE | wasi.RIGHTS_FD_FILESTAT_SET_SIZE);
const READ_RIGHTS = BigInt(
  wasi.RIGHTS_FD_READ | wasi.RIGHTS_FD_SEEK | wasi.RIGHTS_FD_TELL | wasi.RIGHTS_FD_SYNC | wasi.RIGHTS_FD_DATASYNC | wasi.RIGHTS_FD_FILESTAT_GET | wasi.RIGHTS_FD_ADVISE,
);
const FD_FLAGS = wasi.FDFLAGS_APPEND | wasi.FDFLAGS_DSYNC | wasi.FDFLAGS_NONBLOCK | wasi.FDFLAGS_RSYNC | wasi.FDFLAGS_SYNC;
const SYNC_FLAGS = wasi.FDFLAGS_DSYNC | wasi.FDFLAGS_SYNC;
const EMPTY = new Uint8Array(0);
const NS_PER_MS = 1_000_000n;

export class DiskFile extends Inode {
  readonly backend: BlockBackend;
  readonly readOnly: boolean;
  readonly name: string;
  readonly #onStorageError: ((error: StorageError) => void) | undefined;
  /** Timestamps in ns since the epoch; mtim and ctim move with every write and resize. */
  #atim: bigint;
  #mtim: bigint;
  #ctim: bigint;

  constructor(backend: BlockBackend, options: DiskFileOptions = {}) {
    super();
    this.backend = backend;
    this.readOnly = options.readOnly === true || backend.readOnly;
    this.name = options.name ?? 'disk';
    this.#onStorageError = options.onStorageError;
    this.#atim = this.#mtim = this.#ctim = BigInt(Date.now()) * NS_PER_MS;
  }

  get size(): number {
    return this.backend.size;
  }

  /** A descriptor on the disk, for a WASI fds array (path_open is the other way in). */
  open(options: { readOnly?: boolean; append?: boolean } = {}): OpenDiskFile {
    return new OpenDiskFile(this, !(this.readOnly || options.readOnly === true), options.append ? wasi.FDFLAGS_APPEND : 0);
  }

  override path_open(oflags: number, fs_rights_base: bigint, fd_flags: number): { ret: number; fd_obj: OpenDiskFile | null } {
    const truncate = (oflags & wasi.OFLAGS_TRUNC) !== 0;
    if (this.readOnly && (truncate || (fs_rights_base & WRITE_RIGHTS) !== 0n)) return { ret: wasi.ERRNO_ROFS, fd_obj: null };
    // No rights at all means the caller did not say (browser_wasi_shim's
    // directories grant none, so wasi-libc asks for none): the disk decides.
    const writable = !this.readOnly && (fs_rights_base === 0n || (fs_rights_base & BigInt(wasi.RIGHTS_FD_WRITE)) !== 0n);
    if (truncate) {
      const ret = this.setSize(0);
      if (ret !== wasi.ERRNO_SUCCESS) return { ret, fd_obj: null };
    }
    return { ret: wasi.ERRNO_SUCCESS, fd_obj: new OpenDiskFile(this, writable, fd_flags & FD_FLAGS) };
  }

  override stat(): DiskFilestat {
    return new DiskFilestat(this.ino, BigInt(this.backend.size), { atim: this.#atim, mtim: this.#mtim, ctim: this.#ctim });
  }

  /**
   * Read up to `dst.length` bytes at `offset` into `dst`. Returns the bytes
   * read (0 at or past the end), or a negative errno.
   */
  preadInto(dst: Uint8Array, offset: number): number {
    const size = this.backend.size;
    if (!(offset >= 0)) return -wasi.ERRNO_INVAL;
    if (offset >= size || dst.length === 0) return 0;
    const n = Math.min(dst.length, size - offset);
    // The hot path: no closure, no allocation (a 4 KiB OPFS read takes ~4 µs).
    let done: MaybePromise;
    try {
      done = this.backend.read(offset, n === dst.length ? dst : dst.subarray(0, n));
    } catch (err) {
      return -this.#failed(toStorageError(err, `${this.name}: read of ${n} bytes at ${offset}`));
    }
    return isPromise(done) ? -this.#asynchronous(done, 'read') : n;
  }

  /** Write `src` at `offset`, clipped at the end of the disk. Returns the bytes written, or a negative errno. */
  pwriteFrom(src: Uint8Array, offset: number): number {
    if (this.readOnly) return -wasi.ERRNO_BADF;
    const size = this.backend.size;
    if (!(offset >= 0 && Number.isSafeInteger(offset))) return -wasi.ERRNO_INVAL;
    if (src.length === 0) return 0;
    if (offset >= size) return -wasi.ERRNO_NOSPC;
    const n = Math.min(src.length, size - offset);
    let done: MaybePromise;
    try {
      done = this.backend.write(offset, n === src.length ? src : src.subarray(0, n));
    } catch (err) {
      return -this.#failed(toStorageError(err, `${this.name}: write of ${n} bytes at ${offset}`));
    }
    if (isPromise(done)) return -this.#asynchronous(done, 'write');
    this.#mtim = this.#ctim = BigInt(Date.now()) * NS_PER_MS;
    return n;
  }

  /** Make completed writes durable (fd_sync, fd_datasync). */
  sync(): number {
    return this.#call('flush', () => this.backend.flush());
  }

  /** Change the disk's size (fd_filestat_set_size, fd_allocate, O_TRUNC). */
  setSize(size: number): number {
    if (this.readOnly) return wasi.ERRNO_BADF;
    if (!(Number.isSafeInteger(size) && size >= 0)) return wasi.ERRNO_FBIG;
    if (size === this.backend.size) return wasi.ERRNO_SUCCESS;
    const resize = this.backend.resize;
    if (!resize) return wasi.ERRNO_NOTSUP;
    const errno = this.#call('resize', () => resize.call(this.backend, size));
    if (errno === wasi.ERRNO_SUCCESS) this.#mtim = this.#ctim = BigInt(Date.now()) * NS_PER_MS;
    return errno;
  }

  /** fd_filestat_set_times. */
  setTimes(atim: bigint, mtim: bigint, fstFlags: number): number {
    const now = BigInt(Date.now()) * NS_PER_MS;
    if (fstFlags & wasi.FSTFLAGS_ATIM_NOW) this.#atim = now;
    else if (fstFlags & wasi.FSTFLAGS_ATIM) this.#atim = atim;
    if (fstFlags & wasi.FSTFLAGS_MTIM_NOW) this.#mtim = now;
    else if (fstFlags & wasi.FSTFLAGS_MTIM) this.#mtim = mtim;
    return wasi.ERRNO_SUCCESS;
  }

  /** Run one backend call; map a failure to its errno and report it. */
  #call(what: string, fn: () => MaybePromise): number {
    let done: MaybePromise;
    try {
      done = fn();
    } catch (err) {
      return this.#failed(toStorageError(err, `${this.name}: ${what}`));
    }
    return isPromise(done) ? this.#asynchronous(done, what) : wasi.ERRNO_SUCCESS;
  }

  /**
   * A backend answered with a promise: the program cannot wait for it, so the
   * result (and any late write into a read buffer) is abandoned. Put such a
   * backend behind the facade.
   */
  #asynchronous(done: Promise<void>, what: string): number {
    done.catch(() => undefined);
    return this.#failed(new StorageError(StorageErrorCode.Unsupported, `${this.name}: ${what} answered asynchronously; serve this backend through startBackendWorker`));
  }

  #failed(error: StorageError): number {
    this.#onStorageError?.(error);
    return errnoFor(error);
  }
}

/** An open descriptor on a DiskFile: a position, an access mode and the fd flags. */
export class OpenDiskFile extends Fd {
  readonly file: DiskFile;
  /** Whether this descriptor may write (false on a read-only disk, or when opened without write rights). */
  readonly writable: boolean;
  /** The file position for fd_read, fd_write and fd_seek. */
  position = 0;
  #flags: number;

  constructor(file: DiskFile, writable: boolean, flags: number) {
    super();
    this.file = file;
    this.writable = writable;
    this.#flags = flags;
  }

  /** Whether writes through fd_write go to the end (O_APPEND). */
  get appending(): boolean {
    return (this.#flags & wasi.FDFLAGS_APPEND) !== 0;
  }

  override fd_read(size: number): { ret: number; data: Uint8Array } {
    const { ret, data } = this.fd_pread(size, BigInt(this.position));
    this.position += data.length;
    return { ret, data };
  }

  override fd_pread(size: number, offset: bigint): { ret: number; data: Uint8Array } {
    const at = Number(offset);
    const n = Math.max(0, Math.min(size, this.file.size - at));
    if (n === 0) return { ret: wasi.ERRNO_SUCCESS, data: EMPTY };
    const data = new Uint8Array(n);
    const got = this.file.preadInto(data, at);
    return got < 0 ? { ret: -got, data: EMPTY } : { ret: wasi.ERRNO_SUCCESS, data };
  }

  override fd_write(data: Uint8Array): { ret: number; nwritten: number } {
    if (this.appending) this.position = this.file.size;
    const result = this.fd_pwrite(data, BigInt(this.position));
    this.position += result.nwritten;
    return result;
  }

  override fd_pwrite(data: Uint8Array, offset: bigint): { ret: number; nwritten: number } {
    const n = this.pwriteFrom(data, Number(offset));
    return n < 0 ? { ret: -n, nwritten: 0 } : { ret: wasi.ERRNO_SUCCESS, nwritten: n };
  }

  /** fd_pwrite's core for direct-io.ts: bytes written or a negative errno; honours O_SYNC/O_DSYNC. */
  pwriteFrom(src: Uint8Array, offset: number): number {
    if (!this.writable) return -wasi.ERRNO_BADF;
    const n = this.file.pwriteFrom(src, offset);
    if (n > 0 && this.#flags & SYNC_FLAGS) {
      const errno = this.file.sync();
      if (errno !== wasi.ERRNO_SUCCESS) return -errno;
    }
    return n;
  }

  override fd_seek(offset: bigint, whence: number): { ret: number; offset: bigint } {
    let base: number;
    switch (whence) {
      case wasi.WHENCE_SET:
        base = 0;
        break;
      case wasi.WHENCE_CUR:
        base = this.position;
        break;
      case wasi.WHENCE_END:
        base = this.file.size;
        break;
      default:
        return { ret: wasi.ERRNO_INVAL, offset: BigInt(this.position) };
    }
    const next = BigInt(base) + offset;
    if (next < 0n || next > BigInt(Number.MAX_SAFE_INTEGER)) return { ret: wasi.ERRNO_INVAL, offset: BigInt(this.position) };
    this.position = Number(next);
    return { ret: wasi.ERRNO_SUCCESS, offset: next };
  }

  override fd_tell(): { ret: number; offset: bigint } {
    return { ret: wasi.ERRNO_SUCCESS, offset: BigInt(this.position) };
  }

  override fd_sync(): number {
    return this.file.sync();
  }

  override fd_filestat_get(): { ret: number; filestat: DiskFilestat } {
    return { ret: wasi.ERRNO_SUCCESS, filestat: this.file.stat() };
  }

  override fd_fdstat_get(): { ret: number; fdstat: InstanceType<typeof wasi.Fdstat> } {
    const fdstat = new wasi.Fdstat(wasi.FILETYPE_REGULAR_FILE, this.#flags);
    fdstat.fs_rights_base = this.writable ? READ_RIGHTS | WRITE_RIGHTS : READ_RIGHTS;
    return { ret: wasi.ERRNO_SUCCESS, fdstat };
  }

  override fd_fdstat_set_flags(flags: number): number {
    if (flags & ~FD_FLAGS) return wasi.ERRNO_INVAL;
    this.#flags = flags;
    return wasi.ERRNO_SUCCESS;
  }

  override fd_filestat_set_size(size: bigint): number {
    if (!this.writable) return wasi.ERRNO_BADF;
    return this.file.setSize(Number(size));
  }

  override fd_allocate(offset: bigint, len: bigint): number {
    if (!this.writable) return wasi.ERRNO_BADF;
    const end = offset + len;
    if (offset < 0n || len <= 0n) return wasi.ERRNO_INVAL;
    if (end <= BigInt(this.file.size)) return wasi.ERRNO_SUCCESS;
    return this.file.setSize(end > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(end));
  }

  override fd_filestat_set_times(atim: bigint, mtim: bigint, fst_flags: number): number {
    return this.file.setTimes(atim, mtim, fst_flags);
  }
}
