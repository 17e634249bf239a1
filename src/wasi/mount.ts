// Put a disk into a WASI program's file tree: `mountDisk(preopen, 'disks/vda.img',
// backend)` makes the folders on the way and links a DiskFile there, so the
// program opens "/<preopen>/disks/vda.img" like any file. Mount before the
// program starts; the shim's directories are plain in-memory trees.
//
// `openSyncDisk` turns a BackendSpec into a backend the adapter can call
// synchronously from this worker: memory and OPFS are opened here and called
// directly, anything asynchronous (IndexedDB, HTTP, your own module) is
// opened in a backend worker and reached through the facade.

import { wasi, type OpenDirectory } from '@bjorn3/browser_wasi_shim';
import type { BlockBackend } from '../backends/backend.ts';
import { MemoryBackend } from '../backends/memory.ts';
import { OpfsBackend } from '../backends/opfs.ts';
import type { BackendSpec } from '../host/browser/worker-protocol.ts';
import { startBackendWorker, type BackendWorkerDisk, type BackendWorkerOptions } from './backend-host.ts';
import { DiskFile, type DiskFileOptions } from './disk-file.ts';
import type { SyncClientOptions } from './sync-client.ts';

export class MountError extends Error {
  override readonly name = 'MountError';
  constructor(
    /** The WASI errno the shim gave. */
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Link a disk at `path` (relative to `dir`, '/'-separated) and return its
 * DiskFile. Missing folders are created; an existing entry at `path` is an
 * error, not replaced.
 */
export function mountDisk(dir: OpenDirectory, path: string, disk: BlockBackend | DiskFile, options: DiskFileOptions = {}): DiskFile {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.includes('..')) throw new MountError(wasi.ERRNO_INVAL, `"${path}" is not a file path inside the directory`);
  for (let i = 1; i < parts.length; i++) {
    const folder = parts.slice(0, i).join('/');
    if (dir.path_lookup(folder, 0).inode_obj) continue;
    const errno = dir.path_create_directory(folder);
    if (errno !== wasi.ERRNO_SUCCESS) throw new MountError(errno, `cannot create folder "${folder}" (errno ${errno})`);
  }
  const at = parts.join('/');
  if (dir.path_lookup(at, 0).inode_obj) throw new MountError(wasi.ERRNO_EXIST, `"${at}" already exists`);
  const file = disk instanceof DiskFile ? disk : new DiskFile(disk, { name: at, ...options });
  const errno = dir.path_link(at, file, false);
  if (errno !== wasi.ERRNO_SUCCESS) throw new MountError(errno, `cannot link "${at}" (errno ${errno})`);
  return file;
}

export interface SyncDiskOptions extends BackendWorkerOptions, SyncClientOptions {
  /** 'auto' (default): memory and OPFS here, the rest in a backend worker. 'worker': always a backend worker. */
  via?: 'auto' | 'worker';
}

/** A backend opened for synchronous use, and how to let it go. */
export interface SyncDisk {
  readonly backend: BlockBackend;
  /** The backend worker when the disk is served through the facade. */
  readonly remote: BackendWorkerDisk | null;
  /** Close the backend (and stop serving it). */
  close(): Promise<void>;
}

/**
 * Open `spec` for a WASI program on this thread. Call it in the program's
 * worker before the program starts: the facade blocks in Atomics.wait, which
 * a page's main thread may not do.
 */
export async function openSyncDisk(spec: BackendSpec, options: SyncDiskOptions = {}): Promise<SyncDisk> {
  if (options.via !== 'worker' && (spec.kind === 'memory' || spec.kind === 'opfs')) {
    const backend = spec.kind === 'memory' ? new MemoryBackend(spec.size, { data: spec.data, readOnly: spec.readOnly }) : await OpfsBackend.open(spec);
    return { backend, remote: null, close: async () => void (await backend.close()) };
  }
  const remote = await startBackendWorker(spec, options);
  const backend = remote.client(options);
  return {
    backend,
    remote,
    async close() {
      try {
        backend.close();
        await remote.stopped;
      } finally {
        remote.worker.terminate();
      }
    },
  };
}
