// The IndexedDB benchmark page: guest RAM, an IndexedDB disk from the public
// `createDisk` (worker host: the backend runs in the device worker) and the
// worker of idb-bench-worker.ts, which is the guest and runs the raw
// baseline. bench/node/indexeddb.ts drives it through `window.bench`.

import { deleteIndexedDbDisk } from '../../src/backends/indexeddb.ts';
import { createDisk, type Disk } from '../../src/host/browser/disk.ts';
import { connect } from '../../e2e/harness/rpc.ts';
import type { BenchPage } from './page.ts';

const RAM_BASE = 0x4000_0000;
/** Rings plus 16 buffers of 1 MiB. */
const RAM_PAGES = (24 << 20) / 65536;
const BUFFER_BYTES = 1 << 20;
const BUFFERS = 16;
const DISK = 'bench-indexeddb';

const ram = new WebAssembly.Memory({ initial: RAM_PAGES, maximum: RAM_PAGES, shared: true });
const guest = await connect(new Worker(new URL('./idb-bench-worker.ts', import.meta.url), { type: 'module', name: 'bench indexeddb guest' }));
let disk: Disk | null = null;

const ops: Record<string, (args: never) => unknown> = {
  info: () => ({ crossOriginIsolated, userAgent: navigator.userAgent }),
  openDisk: async ({ size, cacheBytes }: { size: number; cacheBytes: number }) => {
    if (disk) throw new Error('a disk is already open');
    await deleteIndexedDbDisk(DISK).catch(() => undefined);
    disk = await createDisk({ memory: [{ guestAddress: RAM_BASE, source: ram }], backend: { kind: 'indexeddb', name: DISK, size, cacheBytes }, host: 'worker' });
    return guest.call('attach', { state: disk.state, ram, ramBase: RAM_BASE, bufferBytes: BUFFER_BYTES, count: BUFFERS });
  },
  stats: () => disk?.stats,
  closeDisk: async () => {
    if (!disk) return;
    await guest.call('detach');
    await disk.close();
    disk = null;
    await deleteIndexedDbDisk(DISK);
  },
  device: (args: unknown) => guest.call('device', args),
  raw: (args: unknown) => guest.call('raw', args),
  flushLatency: (args: unknown) => guest.call('flushLatency', args),
};

window.bench = {
  call: async (op, args) => {
    if (!(op in ops)) throw new Error(`unknown bench op "${op}"`);
    return ops[op]!(args as never);
  },
} satisfies BenchPage;
document.body.dataset.ready = 'true';
