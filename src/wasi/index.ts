// virtio-blk-web/wasi: the project's disks as browser_wasi_shim files, for
// programs compiled to WASI (docs/wasi.md). A separate entry because it
// imports @bjorn3/browser_wasi_shim (an optional peer dependency): pages that
// do not run WASI programs need neither it nor an import-map entry for it.

export { DiskFile, OpenDiskFile, type DiskFileOptions } from './disk-file.ts';
export { DiskFilestat } from './filestat.ts';
export { errnoFor } from './errno.ts';
export { directDiskIo } from './direct-io.ts';
export { MountError, mountDisk, openSyncDisk, type SyncDisk, type SyncDiskOptions } from './mount.ts';
export * from './facade.ts';
