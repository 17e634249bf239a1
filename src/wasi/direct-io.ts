// Zero-copy reads and writes for disks, for programs that want them: wraps a
// WASI instance's fd_pread, fd_pwrite, fd_read and fd_write imports so that,
// when the descriptor is an OpenDiskFile, each iovec's bytes go between the
// backend and the program's memory directly. Through the shim's Fd API a read
// arrives as a new array the shim then copies, and a write is copied out of
// memory first; at 1 MiB per call that copy costs as much as OPFS's own read.
// Any other descriptor goes to the shim's own import, unchanged.
//
// The WASI preview 1 iovec array is `{buf: u32, buf_len: u32}` records
// (8 bytes each, little-endian); nread/nwritten is a u32. An iovec outside
// the program's memory gets EFAULT instead of a trap.
//
// Call it after `new WASI(...)` and before instantiating the program (the
// imports object is read at instantiation).

import { wasi, type WASI } from '@bjorn3/browser_wasi_shim';
import { OpenDiskFile } from './disk-file.ts';

type IoImport = (fd: number, iovs: number, iovsLen: number, offsetOrOut: bigint | number, out?: number) => number;

/** Route disk descriptors' positioned and streaming I/O straight to guest memory. Returns `w`. */
export function directDiskIo(w: WASI): WASI {
  const imports = w.wasiImport as Record<string, IoImport>;
  // Views on the program's memory, re-derived only when it grew (a grown
  // memory has a new buffer; DESIGN.md: never keep a view across growth).
  let buffer: ArrayBuffer | null = null;
  let view: DataView = new DataView(new ArrayBuffer(0));
  const memory = (): DataView => {
    const current = (w.inst.exports.memory as WebAssembly.Memory).buffer as ArrayBuffer;
    if (current !== buffer) {
      buffer = current;
      view = new DataView(current);
    }
    return view;
  };
  const disk = (fd: number): OpenDiskFile | null => {
    const f = w.fds[fd];
    return f instanceof OpenDiskFile ? f : null;
  };

  /** Move every iovec; returns the errno and leaves the byte count in lastCount. `at` null: the descriptor's position. */
  const transfer = (f: OpenDiskFile, iovs: number, iovsLen: number, at: number | null, write: boolean): number => {
    const view = memory();
    const buffer = view.buffer;
    let offset = at ?? f.position;
    let total = 0;
    let errno: number = wasi.ERRNO_SUCCESS;
    for (let i = 0; i < iovsLen; i++) {
      const buf = view.getUint32(iovs + i * 8, true);
      const len = view.getUint32(iovs + i * 8 + 4, true);
      if (len === 0) continue;
      if (buf + len > buffer.byteLength) {
        errno = wasi.ERRNO_FAULT;
        break;
      }
      const bytes = new Uint8Array(buffer, buf, len);
      const n = write ? f.pwriteFrom(bytes, offset) : f.file.preadInto(bytes, offset);
      if (n < 0) {
        errno = -n;
        break;
      }
      total += n;
      offset += n;
      if (n < len) break;
    }
    if (at === null) f.position = offset;
    lastCount = total;
    // POSIX: bytes moved before a failure are the result; the failure shows
    // on the next call (wasi-libc drops nread when an errno comes with it).
    return total > 0 ? wasi.ERRNO_SUCCESS : errno;
  };
  let lastCount = 0;

  // [import, positioned, writes]: the positioned forms take the offset
  // before nread/nwritten; the streaming ones use and move the position.
  const forms = [
    ['fd_pread', true, false],
    ['fd_pwrite', true, true],
    ['fd_read', false, false],
    ['fd_write', false, true],
  ] as const;
  for (const [name, positioned, write] of forms) {
    const shimImport = imports[name]!;
    imports[name] = (fd, iovs, iovsLen, offsetOrOut, out) => {
      const f = disk(fd);
      if (!f) return shimImport(fd, iovs, iovsLen, offsetOrOut, out);
      if (write && !positioned && f.appending) f.position = f.file.size;
      const errno = transfer(f, iovs, iovsLen, positioned ? Number(offsetOrOut) : null, write);
      memory().setUint32(positioned ? out! : Number(offsetOrOut), lastCount, true);
      return errno;
    };
  }
  return w;
}
