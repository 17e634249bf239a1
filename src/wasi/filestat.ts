// A Filestat that writes WASI preview 1's `filestat` layout: dev u64 @0, ino
// u64 @8, filetype u8 @16, nlink u64 @24, size u64 @32, atim u64 @40, mtim u64
// @48, ctim u64 @56 (64 bytes). browser_wasi_shim 0.4.2 writes the three
// timestamps at 38, 46 and 52: atim's low bytes land on the top of `size`,
// and bytes 60-63 are never written. The shim calls `write_bytes` on
// whatever Filestat an inode or descriptor returns, so overriding it fixes
// every path (fd_filestat_get, path_filestat_get) for the adapter's files.

import { wasi } from '@bjorn3/browser_wasi_shim';

export class DiskFilestat extends wasi.Filestat {
  constructor(ino: bigint, size: bigint, times: { atim: bigint; mtim: bigint; ctim: bigint }) {
    super(ino, wasi.FILETYPE_REGULAR_FILE, size);
    this.nlink = 1n;
    this.atim = times.atim;
    this.mtim = times.mtim;
    this.ctim = times.ctim;
  }

  override write_bytes(view: DataView, ptr: number): void {
    view.setBigUint64(ptr, this.dev, true);
    view.setBigUint64(ptr + 8, this.ino, true);
    view.setUint8(ptr + 16, this.filetype);
    // Bytes 17-23 are padding: zero them rather than leave the program's garbage.
    for (let i = 17; i < 24; i++) view.setUint8(ptr + i, 0);
    view.setBigUint64(ptr + 24, this.nlink, true);
    view.setBigUint64(ptr + 32, this.size, true);
    view.setBigUint64(ptr + 40, this.atim, true);
    view.setBigUint64(ptr + 48, this.mtim, true);
    view.setBigUint64(ptr + 56, this.ctim, true);
  }
}
