// A raw disk image in a file, for Node (the vhost-user host and tests).
//
// Positioned, synchronous I/O (`fs.readSync`/`fs.writeSync` at an offset):
// every call completes before it returns, so the device keeps its synchronous
// fast path and a whole batch of guest requests completes in one turn of the
// loop. FLUSH is `fdatasync`. Node cannot punch holes (no fallocate), so
// DISCARD and WRITE_ZEROES write zeroes, in bounded chunks from one reusable
// zero buffer; reads after either return zeroes, which is what both promise.
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

export interface NodeFileBackendOptions {
  /** Open the image read-only (O_RDONLY); writes are refused. */
  readOnly?: boolean;
}

export class NodeFileBackend implements BlockBackend {
  readonly readOnly: boolean;
  readonly supportsDiscard = true;
  readonly supportsWriteZeroes = true;
  readonly path: string;
  /** The open file; −1 once closed. */
  #fd: number;
  #size: number;
  /** Allocated on the first discard / write-zeroes, then reused. */
  #zeroes: Uint8Array | null = null;

  private constructor(path: string, fd: number, size: number, readOnly: boolean) {
    this.path = path;
    this.#fd = fd;
    this.#size = size;
    this.readOnly = readOnly;
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
      if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') {
        throw new StorageError(
          StorageErrorCode.Io,
          `disk image ${path} cannot be opened ${readOnly ? 'for reading' : 'for writing (try --read-only)'}`,
          { cause: err },
        );
      }
      throw toStorageError(err, `open ${path}`);
    }
    const stat = fstatSync(fd);
    if (!stat.isFile() && !stat.isBlockDevice()) {
      closeSync(fd);
      throw new StorageError(StorageErrorCode.Io, `${path} is not a regular file`);
    }
    return new NodeFileBackend(path, fd, stat.size, readOnly);
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

  discard(offset: number, length: number): void {
    this.writeZeroes(offset, length);
  }

  writeZeroes(offset: number, length: number): void {
    this.#checkWritable();
    this.#check(offset, length);
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

function byteLength(views: Uint8Array[]): number {
  let total = 0;
  for (const v of views) total += v.length;
  return total;
}
