// The WASI adapter (src/wasi) in Node, over the memory backend: the backend
// contract through the shim Fd API, then the adapter's own rules — errnos for
// read-only disks, the end of the disk, failing and asynchronous backends;
// O_APPEND, O_SYNC, seeking, resizing; the filestat layout the shim gets
// wrong; mounting; and zero-copy iovecs through a real WASI instance's imports.

import { Directory, OpenDirectory, PreopenDirectory, WASI, wasi } from '@bjorn3/browser_wasi_shim';
import { describe, expect, test } from 'vitest';
import { StorageError, StorageErrorCode, type BlockBackend } from '../src/backends/backend.ts';
import { MemoryBackend } from '../src/backends/memory.ts';
import { DiskFile, OpenDiskFile } from '../src/wasi/disk-file.ts';
import { directDiskIo } from '../src/wasi/direct-io.ts';
import { MountError, mountDisk } from '../src/wasi/mount.ts';
import { adapterFactory } from '../e2e/harness/wasi-fd-backend.ts';
import { backendContract, pattern, type BackendFactory } from './contract/backend-contract.ts';

const KiB = 1024;
const RIGHTS_WRITE = BigInt(wasi.RIGHTS_FD_WRITE);
const RIGHTS_READ = BigInt(wasi.RIGHTS_FD_READ);

describe('backend contract through the WASI adapter: memory', () => {
  const factory = adapterFactory({
    create: async ({ size, data, readOnly }) => new MemoryBackend(size, { data, readOnly }),
    resizable: true,
  } satisfies BackendFactory);
  test('every contract case is either run or declared not applicable', () => {
    expect(backendContract.filter((c) => c.applies(factory)).length).toBeGreaterThanOrEqual(13);
  });
  for (const c of backendContract) {
    if (c.applies(factory)) test(c.name, () => c.run(factory));
  }
});

function openFd(file: DiskFile, rights = 0n, fdflags = 0, oflags = 0): OpenDiskFile {
  const { ret, fd_obj } = file.path_open(oflags, rights, fdflags);
  expect(ret).toBe(wasi.ERRNO_SUCCESS);
  return fd_obj!;
}

describe('errnos', () => {
  test('a read-only disk: EROFS when write rights or O_TRUNC are asked for, EBADF on every write', () => {
    const backend = new MemoryBackend(64 * KiB, { data: pattern(64 * KiB, 1), readOnly: true });
    const file = new DiskFile(backend);
    expect(file.path_open(0, RIGHTS_READ | RIGHTS_WRITE, 0)).toEqual({ ret: wasi.ERRNO_ROFS, fd_obj: null });
    expect(file.path_open(wasi.OFLAGS_TRUNC, 0n, 0).ret).toBe(wasi.ERRNO_ROFS);
    // browser_wasi_shim's directories grant no rights, so wasi-libc asks for none: the open succeeds.
    const fd = openFd(file);
    expect(fd.writable).toBe(false);
    expect(fd.fd_pwrite(new Uint8Array(4), 0n)).toEqual({ ret: wasi.ERRNO_BADF, nwritten: 0 });
    expect(fd.fd_write(new Uint8Array(4))).toEqual({ ret: wasi.ERRNO_BADF, nwritten: 0 });
    expect(fd.fd_filestat_set_size(0n)).toBe(wasi.ERRNO_BADF);
    expect(fd.fd_allocate(0n, 1n)).toBe(wasi.ERRNO_BADF);
    expect(fd.fd_sync()).toBe(wasi.ERRNO_SUCCESS);
    expect(fd.fd_pread(16, 100n).data).toEqual(pattern(64 * KiB, 1).subarray(100, 116));
    expect(backend.bytes).toEqual(pattern(64 * KiB, 1));
  });

  test('a writable disk opened with read rights only refuses writes with EBADF', () => {
    const file = new DiskFile(new MemoryBackend(4 * KiB));
    const fd = openFd(file, RIGHTS_READ);
    expect(fd.fd_pwrite(new Uint8Array([1]), 0n).ret).toBe(wasi.ERRNO_BADF);
    expect(openFd(file, RIGHTS_READ | RIGHTS_WRITE).fd_pwrite(new Uint8Array([1]), 0n)).toEqual({ ret: 0, nwritten: 1 });
  });

  test('the end of the disk: reads return EOF, a crossing write is short, a write past the end gets ENOSPC', () => {
    const backend = new MemoryBackend(8 * KiB);
    const fd = openFd(new DiskFile(backend));
    expect(fd.fd_pread(100, 8n * 1024n)).toEqual({ ret: 0, data: new Uint8Array(0) });
    expect(fd.fd_pread(100, 8n * 1024n - 10n).data.length).toBe(10);
    expect(fd.fd_pwrite(pattern(100, 2), 8n * 1024n - 10n)).toEqual({ ret: 0, nwritten: 10 });
    expect(backend.bytes.subarray(8 * KiB - 10)).toEqual(pattern(100, 2).subarray(0, 10));
    expect(fd.fd_pwrite(pattern(100, 2), 8n * 1024n)).toEqual({ ret: wasi.ERRNO_NOSPC, nwritten: 0 });
    expect(backend.size).toBe(8 * KiB);
  });

  test('a failing backend gives EIO and reports the StorageError to the host; quota gives ENOSPC', () => {
    const reported: StorageError[] = [];
    let fail: StorageError = new StorageError(StorageErrorCode.Io, 'the platform said no', { cause: new Error('NotReadableError') });
    const backend = Object.assign(new MemoryBackend(4 * KiB), {
      read: () => {
        throw fail;
      },
      write: () => {
        throw Object.assign(new Error('quota'), { name: 'QuotaExceededError' });
      },
    });
    const fd = openFd(new DiskFile(backend, { onStorageError: (e) => reported.push(e) }));
    expect(fd.fd_pread(10, 0n).ret).toBe(wasi.ERRNO_IO);
    expect(reported[0]).toBe(fail);
    fail = new StorageError(StorageErrorCode.Corrupt, 'checksum');
    expect(fd.fd_read(10)).toEqual({ ret: wasi.ERRNO_IO, data: new Uint8Array(0) });
    expect(fd.fd_tell().offset).toBe(0n);
    expect(fd.fd_pwrite(new Uint8Array(1), 0n).ret).toBe(wasi.ERRNO_NOSPC);
    expect(reported[2]).toMatchObject({ name: 'StorageError', code: StorageErrorCode.QuotaExceeded });
  });

  test('a backend that answers asynchronously gets EIO, not a hang, and the host hears why', () => {
    const reported: StorageError[] = [];
    const backend = Object.assign(new MemoryBackend(4 * KiB), { flush: () => Promise.resolve() });
    const fd = openFd(new DiskFile(backend, { onStorageError: (e) => reported.push(e) }));
    expect(fd.fd_sync()).toBe(wasi.ERRNO_NOTSUP);
    expect(reported[0]!.code).toBe(StorageErrorCode.Unsupported);
    expect(reported[0]!.message).toContain('startBackendWorker');
  });
});

describe('descriptors', () => {
  test('fd_read and fd_write move the position; fd_seek and fd_tell follow POSIX', () => {
    const backend = new MemoryBackend(64 * KiB);
    const fd = openFd(new DiskFile(backend));
    expect(fd.fd_write(pattern(1000, 3))).toEqual({ ret: 0, nwritten: 1000 });
    expect(fd.fd_tell().offset).toBe(1000n);
    expect(fd.fd_seek(-500n, wasi.WHENCE_CUR)).toEqual({ ret: 0, offset: 500n });
    expect(fd.fd_read(500).data).toEqual(pattern(1000, 3).subarray(500));
    expect(fd.fd_seek(-1n, wasi.WHENCE_SET).ret).toBe(wasi.ERRNO_INVAL);
    expect(fd.fd_seek(-10n, wasi.WHENCE_END)).toEqual({ ret: 0, offset: BigInt(64 * KiB - 10) });
    expect(fd.fd_read(100).data.length).toBe(10);
    expect(fd.fd_read(100).data.length).toBe(0);
    expect(fd.fd_seek(0n, 9).ret).toBe(wasi.ERRNO_INVAL);
  });

  test('O_APPEND writes at the end of the disk (where a disk has no room: ENOSPC)', () => {
    const backend = new MemoryBackend(4 * KiB);
    const fd = openFd(new DiskFile(backend), 0n, wasi.FDFLAGS_APPEND);
    expect(fd.fd_fdstat_get().fdstat.fs_flags).toBe(wasi.FDFLAGS_APPEND);
    expect(fd.fd_write(new Uint8Array([1])).ret).toBe(wasi.ERRNO_NOSPC);
    expect(fd.fd_fdstat_set_flags(0)).toBe(0);
    expect(fd.fd_fdstat_set_flags(1 << 9)).toBe(wasi.ERRNO_INVAL);
  });

  test('fd_sync and fd_datasync flush; O_DSYNC flushes after every write', () => {
    let flushes = 0;
    const backend = Object.assign(new MemoryBackend(4 * KiB), { flush: () => void flushes++ });
    const file = new DiskFile(backend);
    const plain = openFd(file);
    plain.fd_pwrite(new Uint8Array(8), 0n);
    expect(flushes).toBe(0);
    expect(plain.fd_sync()).toBe(0);
    expect(flushes).toBe(1);
    const dsync = openFd(file, 0n, wasi.FDFLAGS_DSYNC);
    dsync.fd_pwrite(new Uint8Array(8), 0n);
    dsync.fd_write(new Uint8Array(8));
    expect(flushes).toBe(3);
  });

  test('fd_filestat_set_size and fd_allocate resize a resizable disk; a fixed one says ENOTSUP', () => {
    const backend = new MemoryBackend(4 * KiB, { data: pattern(4 * KiB, 4) });
    const fd = openFd(new DiskFile(backend));
    expect(fd.fd_allocate(0n, 4096n)).toBe(0);
    expect(fd.fd_allocate(4096n, 4096n)).toBe(0);
    expect(backend.size).toBe(8 * KiB);
    expect(fd.fd_filestat_set_size(2048n)).toBe(0);
    expect(backend.bytes).toEqual(pattern(4 * KiB, 4).subarray(0, 2048));
    expect(fd.fd_filestat_get().filestat.size).toBe(2048n);
    const fixed: BlockBackend = new MemoryBackend(4 * KiB);
    Object.defineProperty(fixed, 'resize', { value: undefined });
    const fixedFd = openFd(new DiskFile(fixed));
    expect(fixedFd.fd_filestat_set_size(4096n)).toBe(0);
    expect(fixedFd.fd_filestat_set_size(8192n)).toBe(wasi.ERRNO_NOTSUP);
    expect(fixedFd.fd_allocate(0n, 8192n)).toBe(wasi.ERRNO_NOTSUP);
    expect(fixed.size).toBe(4 * KiB);
  });
});

describe('filestat', () => {
  test('written with WASI preview 1 layout (the shim 0.4.2 puts timestamps at 38/46/52)', () => {
    const before = BigInt(Date.now()) * 1_000_000n;
    const file = new DiskFile(new MemoryBackend(5 * 1024 * KiB));
    const fd = openFd(file);
    expect(fd.fd_filestat_set_times(0x1111_2222_3333_4444n, 0x0555_6666_7777_8888n, wasi.FSTFLAGS_ATIM | wasi.FSTFLAGS_MTIM)).toBe(0);
    const view = new DataView(new ArrayBuffer(80));
    new Uint8Array(view.buffer).fill(0xaa);
    fd.fd_filestat_get().filestat.write_bytes(view, 8);
    expect(view.getBigUint64(8 + 8, true)).toBe(file.ino);
    expect(view.getUint8(8 + 16)).toBe(wasi.FILETYPE_REGULAR_FILE);
    expect(view.getBigUint64(8 + 24, true)).toBe(1n);
    expect(view.getBigUint64(8 + 32, true)).toBe(5n * 1024n * 1024n);
    expect(view.getBigUint64(8 + 40, true)).toBe(0x1111_2222_3333_4444n);
    expect(view.getBigUint64(8 + 48, true)).toBe(0x0555_6666_7777_8888n);
    const ctim = view.getBigUint64(8 + 56, true);
    expect(ctim >= before && ctim <= BigInt(Date.now()) * 1_000_000n).toBe(true);
    expect(view.getUint8(8 + 64)).toBe(0xaa);
    // The shim's own Filestat, for contrast: its atim overwrites the top bytes of size.
    const shim = new wasi.Filestat(1n, wasi.FILETYPE_REGULAR_FILE, 5n * 1024n * 1024n);
    shim.atim = 0xffff_ffff_ffff_ffffn;
    shim.write_bytes(view, 8);
    expect(view.getBigUint64(8 + 32, true)).not.toBe(5n * 1024n * 1024n);
  });

  test('writes move mtime and ctime', async () => {
    const file = new DiskFile(new MemoryBackend(4 * KiB));
    const fd = openFd(file);
    fd.fd_filestat_set_times(0n, 0n, wasi.FSTFLAGS_MTIM);
    fd.fd_pwrite(new Uint8Array(1), 0n);
    expect(file.stat().mtim > 0n).toBe(true);
  });
});

describe('mountDisk', () => {
  test('makes the folders, links the disk and refuses to replace an entry', () => {
    const preopen = new PreopenDirectory('/', new Map());
    const file = mountDisk(preopen, 'disks/vm/vda.img', new MemoryBackend(4 * KiB));
    const found = preopen.path_open(0, 'disks/vm/vda.img', 0, 0n, 0n, 0);
    expect(found.ret).toBe(0);
    expect(found.fd_obj).toBeInstanceOf(OpenDiskFile);
    expect((found.fd_obj as OpenDiskFile).file).toBe(file);
    expect(preopen.path_filestat_get(0, 'disks/vm/vda.img').filestat!.size).toBe(4096n);
    expect(preopen.path_lookup('disks/vm', 0).inode_obj).toBeInstanceOf(Directory);
    expect(() => mountDisk(preopen, 'disks/vm/vda.img', new MemoryBackend(1))).toThrow(MountError);
    expect(() => mountDisk(preopen, '../x', new MemoryBackend(1))).toThrow(MountError);
    expect(preopen.path_open(0, 'disks/vm/vda.img', wasi.OFLAGS_DIRECTORY, 0n, 0n, 0).ret).toBe(wasi.ERRNO_NOTDIR);
    expect(new OpenDirectory(new Directory(new Map())).path_lookup('x', 0).ret).toBe(wasi.ERRNO_NOENT);
  });
});

describe('directDiskIo', () => {
  /** A WASI instance with the disk at fd 3, over a plain memory the test owns. */
  function instance(backend: BlockBackend): { imports: Record<string, (...a: never[]) => number>; mem: Uint8Array; view: DataView; fd: OpenDiskFile } {
    const fd = new DiskFile(backend).open();
    const w = directDiskIo(new WASI([], [], [undefined as never, undefined as never, undefined as never, fd]));
    const memory = new WebAssembly.Memory({ initial: 2 });
    w.inst = { exports: { memory } } as unknown as WebAssembly.Instance & { exports: { memory: WebAssembly.Memory } };
    return { imports: w.wasiImport as never, mem: new Uint8Array(memory.buffer), view: new DataView(memory.buffer), fd };
  }

  test('fd_pwrite and fd_pread with several iovecs move bytes between the disk and the program memory', () => {
    const backend = new MemoryBackend(64 * KiB);
    const { imports, mem, view } = instance(backend);
    mem.set(pattern(3000, 5), 10_000);
    // iovecs at 0: {10000, 1000}, {11000, 2000}; nwritten at 100.
    view.setUint32(0, 10_000, true);
    view.setUint32(4, 1000, true);
    view.setUint32(8, 11_000, true);
    view.setUint32(12, 2000, true);
    expect((imports.fd_pwrite as (...a: unknown[]) => number)(3, 0, 2, 5000n, 100)).toBe(0);
    expect(view.getUint32(100, true)).toBe(3000);
    expect(backend.bytes.subarray(5000, 8000)).toEqual(pattern(3000, 5));
    view.setUint32(0, 20_000, true);
    view.setUint32(8, 30_000, true);
    expect((imports.fd_pread as (...a: unknown[]) => number)(3, 0, 2, 5000n, 100)).toBe(0);
    expect(view.getUint32(100, true)).toBe(3000);
    expect(mem.subarray(20_000, 21_000)).toEqual(pattern(3000, 5).subarray(0, 1000));
    expect(mem.subarray(30_000, 32_000)).toEqual(pattern(3000, 5).subarray(1000));
  });

  test('fd_read and fd_write use and move the position; an iovec outside memory is EFAULT', () => {
    const backend = new MemoryBackend(64 * KiB);
    const { imports, mem, view, fd } = instance(backend);
    mem.set(pattern(100, 6), 1000);
    view.setUint32(0, 1000, true);
    view.setUint32(4, 100, true);
    fd.position = 300;
    expect((imports.fd_write as (...a: unknown[]) => number)(3, 0, 1, 100)).toBe(0);
    expect(fd.position).toBe(400);
    expect(backend.bytes.subarray(300, 400)).toEqual(pattern(100, 6));
    fd.position = 300;
    view.setUint32(0, 5000, true);
    expect((imports.fd_read as (...a: unknown[]) => number)(3, 0, 1, 100)).toBe(0);
    expect(mem.subarray(5000, 5100)).toEqual(pattern(100, 6));
    view.setUint32(0, mem.length - 10, true);
    expect((imports.fd_read as (...a: unknown[]) => number)(3, 0, 1, 100)).toBe(wasi.ERRNO_FAULT);
  });
});
