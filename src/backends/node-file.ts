// A raw disk image in a file, for Node (the vhost-user host and tests).
//
// Positioned, synchronous I/O (`fs.readSync`/`fs.writeSync` at an offset):
// every call completes before it returns, so the device keeps its synchronous
// fast path and a whole batch of guest requests completes in one turn of the
// loop. FLUSH is `fdatasync`.
//
// DISCARD (and WRITE_ZEROES that may unmap) punch a hole, so that a guest's
// `fstrim` gives the space back to the host; WRITE_ZEROES that must stay
// allocated zeroes the range in place (FALLOC_FL_ZERO_RANGE, as QEMU's
// file-posix does). Node's fs has no fallocate, so it is injected (the
// vhost-user addon has one). Without it, or where the file system refuses
// (EOPNOTSUPP: tmpfs has no ZERO_RANGE, some have neither), the range is
// written with zeroes in bounded chunks from one reusable buffer; reads
// return zeroes either way, which is what both requests promise.
//
// Node only: this file imports node:fs and is not re-exported for browsers.

import {
  closeSync,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  openSync,
  readSync,
  readvSync,
  writeSync,
  writevSync,
} from 'node:fs';
import { StorageError, StorageErrorCode, toStorageError, type BlockBackend } from './backend.ts';

/** Largest zero-filling write: bounds memory, however large the range. */
const ZERO_CHUNK_BYTES = 1 << 20;

/** fallocate(2) mode bits (linux/falloc.h). */
const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;
const FALLOC_FL_ZERO_RANGE = 0x10;

/**
 * fallocate(2) errors that mean "this file (system) cannot do that mode":
 * the range is then zero-filled instead, and the mode is not tried again.
 * Anything else (EIO, ENOSPC, EBADF) is a real storage error.
 */
const UNSUPPORTED_ERRNOS: ReadonlySet<string> = new Set(['EOPNOTSUPP', 'ENOTSUP', 'ENOSYS', 'ENODEV', 'EINVAL']);

/** fallocate(2): throws an Error whose `code` is the errno name. */
export type Fallocate = (fd: number, mode: number, offset: number, length: number) => void;

export interface NodeFileBackendOptions {
  /** Open the image read-only (O_RDONLY); writes are refused. */
  readOnly?: boolean;
  /**
   * Deallocate and zero ranges without writing them (the vhost-user addon's
   * `fallocate`). Without it DISCARD and WRITE_ZEROES write zeroes.
   */
  fallocate?: Fallocate;
}

export class NodeFileBackend implements BlockBackend {
  readonly readOnly: boolean;
  readonly supportsDiscard = true;
  readonly supportsWriteZeroes = true;
  readonly path: string;
  /** The open file; −1 once closed. */
  #fd: number;
  #size: number;
  /** Allocated on the first zero-filling discard / write-zeroes, then reused. */
  #zeroes: Uint8Array | null = null;
  readonly #fallocate: Fallocate | null;
  /** fallocate modes the file system refused once (see UNSUPPORTED_ERRNOS). */
  readonly #unsupportedModes = new Set<number>();

  private constructor(path: string, fd: number, size: number, readOnly: boolean, fallocate: Fallocate | null) {
    this.path = path;
    this.#fd = fd;
    this.#size = size;
    this.readOnly = readOnly;
    this.#fallocate = fallocate;
  }

  /** Open an existing image. Missing files and directories are `not-found` / `io` StorageErrors. */
  static open(path: string, options: NodeFileBackendOptions = {}): NodeFileBackend {
    const readOnly = options.readOnly ?? false;
    let fd: number;
    try {
      fd = openSync(path, readOnly ? 'r' : 'r+');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        throw new StorageError(StorageErrorCode.NotFound, `disk image ${path} does not exist`, { cause: err });
      }
      if (code === 'EISDIR') throw notAFile(path, 'a directory', err);
      if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') {
        throw new StorageError(
          StorageErrorCode.Io,
          `disk image ${path} cannot be opened ${readOnly ? 'for reading' : 'for writing (try --read-only)'}`,
          { cause: err },
        );
      }
      const detail = (err as Error).message;
      throw new StorageError(StorageErrorCode.Io, `disk image ${path} cannot be opened (${detail})`, { cause: err });
    }
    const stat = fstatSync(fd);
    if (!stat.isFile() && !stat.isBlockDevice()) {
      closeSync(fd);
      throw notAFile(path, stat.isDirectory() ? 'a directory' : 'not a regular file or block device');
    }
    return new NodeFileBackend(path, fd, stat.size, readOnly, options.fallocate ?? null);
  }

  get size(): number {
    return this.#size;
  }

  read(offset: number, dst: Uint8Array): void {
    this.#check(offset, dst.length);
    let done = 0;
    while (done < dst.length) {
      const n = this.#io(() => readSync(this.#fd, dst, done, dst.length - done, offset + done), 'read');
      // A file shrunk behind our back reads short: what is missing reads as zeroes.
      if (n === 0) {
        dst.fill(0, done);
        return;
      }
      done += n;
    }
  }

  write(offset: number, src: Uint8Array): void {
    this.#checkWritable();
    this.#check(offset, src.length);
    let done = 0;
    while (done < src.length) {
      done += this.#io(() => writeSync(this.#fd, src, done, src.length - done, offset + done), 'write');
    }
  }

  /**
   * Fill `dsts`, back to back, from `offset` with one preadv. Not part of
   * BlockBackend yet: a guest request arrives as many 4 KiB segments (Linux
   * splits a 512 KiB O_DIRECT read into 128), and one system call for all of
   * them instead of one each is what QEMU does; see docs/vhost-user.md.
   */
  readv(offset: number, dsts: Uint8Array[]): void {
    const total = byteLength(dsts);
    this.#check(offset, total);
    const n = this.#io(() => readvSync(this.#fd, dsts, offset), 'readv');
    // Short only at end of file (a file shrunk behind our back): finish piecewise.
    if (n < total) this.#finish(dsts, n, offset, (at, view) => this.read(at, view));
  }

  /** Store `srcs`, back to back, at `offset` with one pwritev (see `readv`). */
  writev(offset: number, srcs: Uint8Array[]): void {
    this.#checkWritable();
    const total = byteLength(srcs);
    this.#check(offset, total);
    const n = this.#io(() => writevSync(this.#fd, srcs, offset), 'writev');
    if (n < total) this.#finish(srcs, n, offset, (at, view) => this.write(at, view));
  }

  /** Complete a short vectored call from byte `done` on, one view at a time. */
  #finish(views: Uint8Array[], done: number, offset: number, each: (at: number, view: Uint8Array) => void): void {
    let skip = done;
    let at = offset + done;
    for (const v of views) {
      if (skip >= v.length) {
        skip -= v.length;
        continue;
      }
      const rest = v.subarray(skip);
      skip = 0;
      each(at, rest);
      at += rest.length;
    }
  }

  flush(): void {
    if (this.readOnly) return;
    this.#io(() => fdatasyncSync(this.#fd), 'fdatasync');
  }

  /** Punch a hole: the blocks go back to the host's file system (virtio 1.2 §5.2.6.2). */
  discard(offset: number, length: number): void {
    this.writeZeroes(offset, length, true);
  }

  /**
   * With `mayUnmap` (VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) the range is punched
   * out like a discard; without it the guest asked for the blocks to stay
   * provisioned (Linux's REQ_NOUNMAP), so they are zeroed in place.
   */
  writeZeroes(offset: number, length: number, mayUnmap = false): void {
    this.#checkWritable();
    this.#check(offset, length);
    if (length === 0) return;
    const mode = FALLOC_FL_KEEP_SIZE | (mayUnmap ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE);
    if (this.#tryFallocate(mode, offset, length)) return;
    this.#fillZeroes(offset, length);
  }

  /** True when fallocate did the job; false when it is absent or this mode is unsupported here. */
  #tryFallocate(mode: number, offset: number, length: number): boolean {
    const fallocate = this.#fallocate;
    if (!fallocate || this.#unsupportedModes.has(mode)) return false;
    try {
      this.#io(() => fallocate(this.#fd, mode, offset, length), 'fallocate');
      return true;
    } catch (err) {
      const code = ((err as StorageError).cause as NodeJS.ErrnoException | undefined)?.code;
      if (code === undefined || !UNSUPPORTED_ERRNOS.has(code)) throw err;
      this.#unsupportedModes.add(mode);
      return false;
    }
  }

  #fillZeroes(offset: number, length: number): void {
    const zeroes = (this.#zeroes ??= new Uint8Array(ZERO_CHUNK_BYTES));
    let done = 0;
    while (done < length) {
      const n = Math.min(zeroes.length, length - done);
      this.write(offset + done, zeroes.subarray(0, n));
      done += n;
    }
  }

  resize(newSize: number): void {
    this.#checkWritable();
    if (!Number.isSafeInteger(newSize) || newSize < 0) {
      throw new StorageError(StorageErrorCode.OutOfRange, `size ${newSize} is not valid`);
    }
    this.#io(() => ftruncateSync(this.#fd, newSize), 'ftruncate');
    this.#size = newSize;
  }

  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    closeSync(fd);
  }

  #io<T>(call: () => T, what: string): T {
    if (this.#fd < 0) throw new StorageError(StorageErrorCode.Closed, `${this.path} is closed`);
    try {
      return call();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new StorageError(StorageErrorCode.QuotaExceeded, `${what} ${this.path}: disk full`, { cause: err });
      }
      throw toStorageError(err, `${what} ${this.path}`);
    }
  }

  #check(offset: number, length: number): void {
    if (!(offset >= 0) || !(length >= 0) || offset + length > this.#size) {
      throw new StorageError(StorageErrorCode.OutOfRange, `range ${offset}+${length} outside disk of ${this.#size} bytes`);
    }
  }

  #checkWritable(): void {
    if (this.readOnly) throw new StorageError(StorageErrorCode.ReadOnly, `${this.path} is read-only`);
  }
}

/** `path` cannot be a disk image: one sentence saying what it is instead. */
function notAFile(path: string, what: string, cause?: unknown): StorageError {
  return new StorageError(StorageErrorCode.Io, `disk image ${path} is ${what}`, { cause });
}

function byteLength(views: Uint8Array[]): number {
  let total = 0;
  for (const v of views) total += v.length;
  return total;
}
