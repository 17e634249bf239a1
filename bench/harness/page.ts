// The benchmark page: owns guest RAM (a shared WebAssembly.Memory, as an
// emulator would), creates disks through the public `createDisk` (the worker
// host: the device in its own module worker), and starts the benchmark's own
// workers: the vCPU (guest driver), the raw-storage baseline and the pong half
// of the Atomics round trip. bench/run.ts drives it through `window.bench`.

import { createDisk, type Disk } from '../../src/host/browser/disk.ts';
import type { RateLimiterConfig } from '../../src/limiter/index.ts';
import { groupRun, type GroupRunArgs } from '../../e2e/harness/group-run.ts';
import { connect, type HarnessClient } from '../../e2e/harness/rpc.ts';
import type { BenchBackend, WorkloadResult, WorkloadSpec } from './protocol.ts';

/** aarch64 `virt` puts RAM here; the driver's rings and buffers live in it. */
const RAM_BASE = 0x4000_0000;
/** Guest RAM: rings, indirect tables and up to 32 × 1 MiB of data buffers. */
const RAM_PAGES = (48 << 20) / 65536;
/** The raw worker's own shared memory: its 8 buffers of up to 1 MiB. */
const RAW_RAM_PAGES = (8 << 20) / 65536;

export interface BenchPage {
  call(op: string, args?: unknown): Promise<unknown>;
}

declare global {
  interface Window {
    bench?: BenchPage;
  }
}

function start(url: URL, name: string): Promise<HarnessClient> {
  return connect(new Worker(url, { type: 'module', name }));
}

const ram = new WebAssembly.Memory({ initial: RAM_PAGES, maximum: RAM_PAGES, shared: true });
const rawRam = new WebAssembly.Memory({ initial: RAW_RAM_PAGES, maximum: RAW_RAM_PAGES, shared: true });
const [vcpu, raw, pong] = await Promise.all([
  start(new URL('./vcpu-worker.ts', import.meta.url), 'bench vcpu'),
  start(new URL('./raw-worker.ts', import.meta.url), 'bench raw'),
  start(new URL('./pong-worker.ts', import.meta.url), 'bench pong'),
]);
await raw.call('setRam', { memory: rawRam });

let disk: Disk | null = null;

function statsNow() {
  const s = disk!.stats;
  return { completed: s.completed, notifications: s.notifications, interrupts: s.interrupts, ioErrors: s.ioErrors };
}

const ops: Record<string, (args: never) => Promise<unknown> | unknown> = {
  info: () => ({
    crossOriginIsolated,
    userAgent: navigator.userAgent,
    hardwareConcurrency: navigator.hardwareConcurrency,
  }),
  /** Create an OPFS disk file filled with data (the raw worker does it: sync handles live in workers). */
  prepareOpfs: (args: { directory: string; name: string; sizeBytes: number }) => raw.call('fill', args),
  removeOpfs: (args: { directory: string; name: string }) => raw.call('remove', args),
  /** Open the disk through the worker host and bring the guest driver up on it. */
  openDisk: async ({ backend, limiter, spinMicros, haltPollMicros }: { backend: BenchBackend; limiter?: RateLimiterConfig; spinMicros?: number; haltPollMicros?: number }) => {
    if (disk) throw new Error('a disk is already open');
    const spec =
      backend.kind === 'memory'
        ? ({ kind: 'memory', size: backend.sizeBytes } as const)
        : ({ kind: 'opfs', name: backend.name, directory: backend.directory } as const);
    disk = await createDisk({
      memory: [{ guestAddress: RAM_BASE, source: ram }],
      backend: spec,
      device: limiter ? { rateLimit: limiter } : {},
      host: 'worker',
      spinMicros,
    });
    return vcpu.call('attach', { state: disk.state, ram, ramBase: RAM_BASE, haltPollMicros: haltPollMicros ?? 0 });
  },
  /** Two disks in one rate-limit group, driven from this page (e2e/harness/group-run.ts). */
  groupLimiter: (args: GroupRunArgs) => groupRun(args),
  closeDisk: async () => {
    if (!disk) return;
    await vcpu.call('detach');
    await disk.close();
    disk = null;
  },
  /** A workload through the whole device path; with the device's counters over it. */
  device: async (spec: WorkloadSpec) => {
    const before = statsNow();
    const result = await vcpu.call<WorkloadResult>('workload', spec);
    const after = statsNow();
    return {
      ...result,
      deviceCompleted: after.completed - before.completed,
      notifications: after.notifications - before.notifications,
      interrupts: after.interrupts - before.interrupts,
    };
  },
  rawOpen: (backend: BenchBackend) =>
    raw.call('open', backend.kind === 'memory' ? { kind: 'memory', sizeBytes: backend.sizeBytes } : backend),
  raw: (spec: WorkloadSpec) => raw.call<WorkloadResult>('workload', spec),
  rawClose: () => raw.call('close'),
  /** The bare Atomics notify → wait round trip between two workers. */
  atomicsRoundTrip: async ({ rounds }: { rounds: number }) => {
    const words = new Int32Array(new SharedArrayBuffer(8));
    const echoes = pong.call<number>('pong', { words });
    const result = await vcpu.call('pingPong', { words, rounds });
    await echoes;
    return result;
  },
};

window.bench = {
  call: async (op, args) => {
    const fn = ops[op];
    if (!fn) throw new Error(`unknown bench op "${op}"`);
    return fn(args as never);
  },
};
document.body.dataset.ready = 'true';
