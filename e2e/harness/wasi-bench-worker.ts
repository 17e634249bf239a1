// The benchmark's WASI program worker (bench/node/wasi.ts drives it through
// wasi-bench-page.ts). A WASI program's calls are played without a program:
// a plain WebAssembly.Memory stands for its memory, an iovec in it for its
// buffer, and the rows call the WASI instance's own fd_pread/fd_pwrite/
// fd_sync imports, exactly what compiled code calls. Three paths per row:
// - direct: the backend itself, reading into and writing from that memory
//   (awaited for IndexedDB, the natural way to call it);
// - shim: the imports of a stock browser_wasi_shim WASI over the adapter's
//   Fd (the shim copies each buffer once, its API returns data);
// - iovec: the same with directDiskIo (the adapter hands the iovec itself to
//   the backend).
// OPFS is opened here and called directly by every path; IndexedDB is opened
// twice with the same options, here for `direct` and in a backend worker
// for the adapter's paths (the facade), so each side keeps its own cache.

import { WASI, wasi } from '@bjorn3/browser_wasi_shim';
import type { BlockBackend } from '../../src/backends/backend.ts';
import { IndexedDbBackend, deleteIndexedDbDisk } from '../../src/backends/indexeddb.ts';
import { OpfsBackend } from '../../src/backends/opfs.ts';
import { startBackendWorker } from '../../src/wasi/backend-host.ts';
import { directDiskIo } from '../../src/wasi/direct-io.ts';
import { DiskFile } from '../../src/wasi/disk-file.ts';
import type { SyncBackendClient } from '../../src/wasi/sync-client.ts';
import { serve } from './rpc.ts';

const MiB = 1 << 20;
/** Program memory: iovec table at 0, counters at 64, the buffer from 1 MiB. */
const BUFFER_AT = MiB;
const memory = new WebAssembly.Memory({ initial: (4 * MiB) / 65536 });

type Path = 'direct' | 'shim' | 'iovec';

interface Disk {
  direct: BlockBackend;
  adapterBackend: BlockBackend;
  imports: Record<Exclude<Path, 'direct'>, Record<string, (...args: unknown[]) => number>>;
  close(): Promise<void>;
}

let disk: Disk | null = null;

function wasiFor(backend: BlockBackend, iovec: boolean): Record<string, (...args: unknown[]) => number> {
  const fd = new DiskFile(backend, { onStorageError: (e) => console.error(e) }).open();
  const w = new WASI([], [], [undefined as never, undefined as never, undefined as never, fd]);
  if (iovec) directDiskIo(w);
  w.inst = { exports: { memory } } as never;
  return w.wasiImport as never;
}

export interface WasiBenchResult {
  requests: number;
  bytes: number;
  seconds: number;
  errors: number;
}

serve({
  open: async ({ backend, size, cacheBytes }: { backend: 'opfs' | 'indexeddb'; size: number; cacheBytes: number }) => {
    if (disk) throw new Error('a disk is open');
    if (backend === 'opfs') {
      const opfs = await OpfsBackend.open({ name: 'wasi-bench.img', directory: 'bench', size });
      disk = { direct: opfs, adapterBackend: opfs, imports: { shim: wasiFor(opfs, false), iovec: wasiFor(opfs, true) }, close: () => opfs.close() };
    } else {
      for (const name of ['wasi-bench-direct', 'wasi-bench-facade']) await deleteIndexedDbDisk(name).catch(() => undefined);
      const direct = await IndexedDbBackend.open({ name: 'wasi-bench-direct', size, cacheBytes });
      const remote = await startBackendWorker({ kind: 'indexeddb', name: 'wasi-bench-facade', size, cacheBytes });
      const client: SyncBackendClient = remote.client({ name: 'bench facade' });
      disk = {
        direct,
        adapterBackend: client,
        imports: { shim: wasiFor(client, false), iovec: wasiFor(client, true) },
        async close() {
          await direct.close();
          client.close();
          remote.worker.terminate();
        },
      };
    }
    return { crossOriginIsolated };
  },
  close: async () => {
    await disk?.close();
    disk = null;
  },
  /** Run `requests` ([offset, length] pairs) one at a time through `path`; writes end with a sync. */
  run: async ({ path, requests, write }: { path: Path; requests: Array<[number, number]>; write: boolean }): Promise<WasiBenchResult> => {
    const d = disk!;
    const view = new DataView(memory.buffer);
    const bytesView = new Uint8Array(memory.buffer);
    for (let i = 0; i < MiB; i++) bytesView[BUFFER_AT + i] = (i * 31) & 0xff;
    let bytes = 0;
    let errors = 0;
    const began = performance.now();
    if (path === 'direct') {
      for (const [offset, length] of requests) {
        const buffer = new Uint8Array(memory.buffer, BUFFER_AT, length);
        await (write ? d.direct.write(offset, buffer) : d.direct.read(offset, buffer));
        bytes += length;
      }
      if (write) await d.direct.flush();
    } else {
      const imports = d.imports[path];
      const call = write ? imports.fd_pwrite! : imports.fd_pread!;
      for (const [offset, length] of requests) {
        view.setUint32(0, BUFFER_AT, true);
        view.setUint32(4, length, true);
        const errno = call(3, 0, 1, BigInt(offset), 64);
        if (errno !== wasi.ERRNO_SUCCESS) errors++;
        bytes += view.getUint32(64, true);
      }
      if (write && imports.fd_sync!(3) !== wasi.ERRNO_SUCCESS) errors++;
    }
    return { requests: requests.length, bytes, seconds: (performance.now() - began) / 1000, errors };
  },
});
