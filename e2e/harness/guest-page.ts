// The guest harness page: attaches a disk with `createDisk` (worker host when
// the page is cross-origin isolated, same-thread host when not) and a guest
// that drives it — a vCPU worker over shared memory, or, without isolation,
// the driver on this page. Playwright calls `window.harness.call(op, args)`:
// page ops (attach, resize, stats, close, deleteDisk) run here, every other op
// goes to the guest (vcpu.ts).

import { deleteOpfsDisk } from '../../src/backends/opfs.ts';
import { createDisk, type Disk } from '../../src/host/browser/disk.ts';
import type { BackendSpec, DeviceSpec } from '../../src/host/browser/worker-protocol.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';
import { groupHoldCounts, groupHoldRelease, groupHoldStart, groupRun } from './group-run.ts';
import { connect, toWireError, type HarnessClient, type WireError } from './rpc.ts';
import { RAM_BASE, vcpuHandlers } from './vcpu.ts';

declare global {
  interface Window {
    harness?: HarnessClient;
  }
}

const PAGE = 64 * 1024;

interface AttachArgs {
  backend: BackendSpec;
  device?: DeviceSpec;
  host?: 'worker' | 'same-thread' | 'auto';
  ramPages?: number;
  maxPages?: number;
  queueSize?: number;
  /** Run the guest on this page even with the worker host (an emulator on the main thread). */
  guestOnPage?: boolean;
  spinMicros?: number;
}

let disk: Disk | null = null;
let guest: ((op: string, args: unknown) => Promise<unknown>) | null = null;
let vcpuWorker: Worker | null = null;
const storageErrors: WireError[] = [];
const needsReset: string[] = [];
/** Interrupt callbacks seen on this page (the vCPU acknowledges the line itself). */
let interruptCallbacks = 0;

const pageOps: Record<string, (args: never) => unknown> = {
  isolated: () => crossOriginIsolated,
  attach: async ({ backend, device, host, ramPages = 512, maxPages = 1024, queueSize, guestOnPage = false, spinMicros }: AttachArgs) => {
    const shared = crossOriginIsolated;
    const ram = new WebAssembly.Memory({ initial: ramPages, maximum: maxPages, shared });
    const memory = [{ guestAddress: RAM_BASE, source: ram, size: maxPages * PAGE }];
    disk = await createDisk({ memory, backend, device, host, spinMicros });
    disk.onStorageError = (error) => storageErrors.push(toWireError(error));
    disk.onNeedsReset = (reason) => needsReset.push(reason);
    disk.onInterrupt = () => void interruptCallbacks++;
    if (disk.host === 'worker' && !guestOnPage) {
      vcpuWorker = new Worker(new URL('./vcpu-worker.ts', import.meta.url), { type: 'module', name: 'vcpu' });
      const vcpu = await connect(vcpuWorker);
      await vcpu.call('boot', { ram, maxBytes: maxPages * PAGE, state: disk.state });
      guest = (op, args) => vcpu.call('guest', { op, args });
    } else {
      const d = disk;
      const handlers = vcpuHandlers({
        mmio: d.mmio,
        ram,
        memory: new GuestMemory(memory),
        waitForInterrupt: () => d.waitForInterrupt(),
      });
      guest = async (op, args) => {
        const handler = handlers[op];
        if (!handler) throw new Error(`unknown guest op "${op}"`);
        return handler(args as never);
      };
    }
    const info = await guest('init', { queueSize });
    return { host: disk.host, guestOnPage: disk.host !== 'worker' || guestOnPage, ...(info as object) };
  },
  resize: async ({ sizeBytes }: { sizeBytes: number }) => {
    await disk!.resize(sizeBytes);
    return disk!.stats.capacitySectors;
  },
  stats: () => disk!.stats,
  storageErrors: () => storageErrors,
  needsReset: () => needsReset,
  interruptCallbacks: () => interruptCallbacks,
  hostFlush: () => disk!.flush(),
  setRateLimit: ({ config }: { config: Parameters<Disk['setRateLimit']>[0] }) => disk!.setRateLimit(config),
  close: async () => {
    await disk?.close();
    vcpuWorker?.terminate();
    disk = null;
    guest = null;
  },
  deleteDisk: ({ name, directory }: { name: string; directory?: string }) => deleteOpfsDisk(name, directory),
  groupRun,
  groupHoldStart,
  groupHoldCounts,
  groupHoldRelease,
};


async function call(op: string, args: unknown): Promise<unknown> {
  const pageOp = pageOps[op];
  if (pageOp) return pageOp(args as never);
  if (!guest) throw new Error('no disk attached');
  return guest(op, args);
}

window.harness = {
  async call<T>(op: string, args?: unknown): Promise<T> {
    try {
      return (await call(op, args)) as T;
    } catch (err) {
      const wire = toWireError(err);
      throw Object.assign(new Error(`${wire.name}${wire.code ? ` [${wire.code}]` : ''}: ${wire.message}`), { code: wire.code });
    }
  },
  async attempt(op: string, args?: unknown): Promise<WireError | null> {
    try {
      await call(op, args);
      return null;
    } catch (err) {
      return toWireError(err);
    }
  },
};
document.body.dataset.ready = 'true';
