// The HTTP benchmark page: guest RAM, a disk from the public `createDisk`
// (worker host: the HTTP backend runs in the device worker) and the vCPU
// worker of http-vcpu.ts, which also fetches the baseline. bench/node/http.ts
// drives it through `window.bench`, as bench/run.ts drives page.ts.

import { createDisk, type Disk } from '../../src/host/browser/disk.ts';
import type { BackendSpec } from '../../src/host/browser/worker-protocol.ts';
import { connect } from '../../e2e/harness/rpc.ts';
import type { BenchPage } from './page.ts';

const RAM_BASE = 0x4000_0000;
/** Rings plus 16 buffers of 1 MiB. */
const RAM_PAGES = (24 << 20) / 65536;
const BUFFER_BYTES = 1 << 20;
const BUFFERS = 16;

const ram = new WebAssembly.Memory({ initial: RAM_PAGES, maximum: RAM_PAGES, shared: true });
const vcpu = await connect(new Worker(new URL('./http-vcpu.ts', import.meta.url), { type: 'module', name: 'bench http vcpu' }));
let disk: Disk | null = null;

const ops: Record<string, (args: never) => unknown> = {
  info: () => ({ crossOriginIsolated, userAgent: navigator.userAgent }),
  openDisk: async ({ backend }: { backend: BackendSpec }) => {
    if (disk) throw new Error('a disk is already open');
    disk = await createDisk({ memory: [{ guestAddress: RAM_BASE, source: ram }], backend, host: 'worker' });
    return vcpu.call('attach', { state: disk.state, ram, ramBase: RAM_BASE, bufferBytes: BUFFER_BYTES, count: BUFFERS });
  },
  closeDisk: async () => {
    if (!disk) return;
    await vcpu.call('detach');
    await disk.close();
    disk = null;
  },
  trace: (args: unknown) => vcpu.call('trace', args),
  /** The open disk's device counters (shared memory: readable while the vCPU is busy). */
  diskStats: () => disk?.stats ?? null,
  fetch: (args: unknown) => vcpu.call('fetch', args),
  removeOpfsDirectory: (args: unknown) => vcpu.call('removeOpfsDirectory', args),
};

const bench: BenchPage = {
  call: async (op, args) => {
    const fn = ops[op];
    if (!fn) throw new Error(`unknown bench op "${op}"`);
    return fn(args as never);
  },
};
window.bench = bench;
document.body.dataset.ready = 'true';
