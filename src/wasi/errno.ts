// Which WASI errno a program sees for each way a disk call can fail, in one
// place (WASI preview 1 `errno`; POSIX meanings for the choices):
//
// - StorageError 'quota-exceeded' -> NOSPC: the origin's storage is full,
//   which is what ENOSPC means to a program.
// - 'unsupported' -> NOTSUP.
// - every other storage failure (I/O, corrupt data, a lost or closed handle,
//   a remote image that changed, a backend worker that timed out) -> IO.
//
// Refusals decided by the adapter itself, before any storage is touched:
// - opening a read-only disk for writing -> ROFS: open(2) says EROFS for
//   "write access requested on a read-only file system", and a read-only disk
//   is that (an HTTP image, an OPFS disk opened read-only);
// - a write, resize or allocate through a descriptor that cannot write ->
//   BADF: write(2), ftruncate(2) and posix_fallocate(3) all say EBADF for
//   "not open for writing". WASI libc cannot always tell the adapter the
//   access mode (browser_wasi_shim hands out no rights, so open() passes
//   none), so a read-only disk's descriptors are all of this kind. The
//   shim's own read-only File answers BADF here too, and wasmtime does.
//   PERM is not used: it means a permission policy, and nothing here has one.
// - a write that starts at or past the end of the disk -> NOSPC, as on a
//   block device (a disk does not grow by writing); one that crosses the end
//   writes what fits and reports the short count.
// - a size change on a disk whose backend cannot resize -> NOTSUP.

import { wasi } from '@bjorn3/browser_wasi_shim';
import { StorageErrorCode, type StorageError } from '../backends/backend.ts';

/** The errno for a StorageError. */
export function errnoFor(error: StorageError): number {
  switch (error.code) {
    case StorageErrorCode.QuotaExceeded:
      return wasi.ERRNO_NOSPC;
    case StorageErrorCode.Unsupported:
      return wasi.ERRNO_NOTSUP;
    default:
      return wasi.ERRNO_IO;
  }
}
