// The backend contract through the WASI adapter: a BlockBackend whose every
// call goes through an OpenDiskFile's shim Fd API (fd_pread, fd_pwrite,
// fd_sync, fd_filestat_get, fd_filestat_set_size), the calls a WASI program's
// imports make. Used by test/wasi.test.ts (memory, in Node) and
// e2e/harness/wasi-worker.ts (OPFS, IndexedDB, an overlay and HTTP images, in
// Chromium).
//
// The wrapper is a block layer over a file, as an emulator's raw-image
// driver is: it refuses ranges outside the disk before calling (a file
// descriptor would clip a write at the end, POSIX-style, where the contract
// wants nothing written), and turns errnos back into StorageErrors: BADF on
// a write is 'read-only', and EIO, NOSPC or NOTSUP come with the
// StorageError the adapter reported to its host, which the wrapper rethrows
// (so the contract also checks that errors reach the host with their code).

import { wasi } from '@bjorn3/browser_wasi_shim';
import { StorageError, StorageErrorCode, type BlockBackend } from '../../src/backends/backend.ts';
import { DiskFile, type OpenDiskFile } from '../../src/wasi/disk-file.ts';
import type { BackendFactory } from '../../test/contract/backend-contract.ts';

const ZERO_PIECE = new Uint8Array(1 << 20);

export class FdBackend implements BlockBackend {
  readonly supportsDiscard = true;
  readonly supportsWriteZeroes = true;
  readonly file: DiskFile;
  readonly fd: OpenDiskFile;
  readonly inner: BlockBackend;
  /** The storage errors the adapter reported, newest last. */
  readonly reported: StorageError[] = [];
  readonly resize?: (newSize: number) => void;

  constructor(inner: BlockBackend) {
    this.inner = inner;
    this.file = new DiskFile(inner, { name: 'contract disk', onStorageError: (e) => this.reported.push(e) });
    const { ret, fd_obj } = this.file.path_open(0, 0n, 0);
    if (ret !== wasi.ERRNO_SUCCESS || !fd_obj) throw new Error(`path_open gave errno ${ret}`);
    this.fd = fd_obj;
    if (inner.resize) {
      this.resize = (newSize) => this.#check(this.fd.fd_filestat_set_size(BigInt(newSize)), 'resize');
    }
  }

  get size(): number {
    const { ret, filestat } = this.fd.fd_filestat_get();
    this.#check(ret, 'fd_filestat_get');
    return Number(filestat.size);
  }

  get readOnly(): boolean {
    return !this.fd.writable;
  }

  read(offset: number, dst: Uint8Array): void {
    this.#range(offset, dst.length);
    for (let done = 0; done < dst.length; ) {
      const { ret, data } = this.fd.fd_pread(dst.length - done, BigInt(offset + done));
      this.#check(ret, 'fd_pread');
      if (data.length === 0) throw new StorageError(StorageErrorCode.OutOfRange, `fd_pread at ${offset + done}: end of file`);
      dst.set(data, done);
      done += data.length;
    }
  }

  write(offset: number, src: Uint8Array): void {
    this.#range(offset, src.length);
    for (let done = 0; done < src.length; ) {
      const { ret, nwritten } = this.fd.fd_pwrite(done === 0 ? src : src.subarray(done), BigInt(offset + done));
      this.#check(ret, 'fd_pwrite');
      if (nwritten === 0) throw new StorageError(StorageErrorCode.Io, `fd_pwrite at ${offset + done} wrote nothing`);
      done += nwritten;
    }
  }

  flush(): void {
    this.#check(this.fd.fd_sync(), 'fd_sync');
  }

  /** A WASI program has no discard: it writes zeroes, which the contract accepts. */
  discard(offset: number, length: number): void {
    this.writeZeroes(offset, length);
  }

  writeZeroes(offset: number, length: number): void {
    if (!this.fd.writable) throw new StorageError(StorageErrorCode.ReadOnly, 'read-only descriptor');
    this.#range(offset, length);
    for (let done = 0; done < length; done += ZERO_PIECE.length) {
      this.write(offset + done, ZERO_PIECE.subarray(0, Math.min(ZERO_PIECE.length, length - done)));
    }
  }

  async close(): Promise<void> {
    this.fd.fd_close();
    await this.inner.close();
  }

  #range(offset: number, length: number): void {
    const size = this.size;
    if (!(offset >= 0 && length >= 0 && offset + length <= size)) {
      throw new StorageError(StorageErrorCode.OutOfRange, `range ${offset}+${length} outside disk of ${size} bytes`);
    }
  }

  #check(errno: number, what: string): void {
    if (errno === wasi.ERRNO_SUCCESS) return;
    if (errno === wasi.ERRNO_BADF) throw new StorageError(StorageErrorCode.ReadOnly, `${what}: EBADF (descriptor cannot write)`);
    const reported = this.reported.at(-1);
    if (!reported) throw new StorageError(StorageErrorCode.Io, `${what}: errno ${errno} with no storage error reported to the host`);
    throw reported;
  }
}

/** `inner`'s disks, each seen through the adapter. */
export function adapterFactory(inner: BackendFactory): BackendFactory {
  const wrapped = new WeakMap<BlockBackend, BlockBackend>();
  return {
    async create(options) {
      const backend = await inner.create(options);
      const fd = new FdBackend(backend);
      wrapped.set(fd, backend);
      return fd;
    },
    ...(inner.reopen
      ? {
          async reopen(backend, options) {
            const under = wrapped.get(backend);
            if (!under) throw new Error('reopen of a disk this factory did not make');
            (backend as FdBackend).fd.fd_close();
            const again = new FdBackend(await inner.reopen!(under, options));
            wrapped.set(again, again.inner);
            return again;
          },
        }
      : {}),
    sparseHugeDisks: inner.sparseHugeDisks,
    resizable: inner.resizable,
    writable: inner.writable,
  };
}
