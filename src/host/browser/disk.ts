// `createDisk`: the one call an emulator makes to get a virtio-blk disk.
//
// It returns the same `Disk` whichever host runs the device:
// - 'worker' (needs cross-origin isolation): the device runs in a module
//   worker over the shared register file (worker-host.ts);
// - 'same-thread': the device runs on the caller's thread (the core's
//   same-thread host), for pages that cannot send COOP/COEP. OPFS works there
//   only when the caller is itself a dedicated worker (sync access handles).
// 'auto' picks the worker when SharedArrayBuffer is usable.
//
// The emulator calls `disk.mmio.read/write` synchronously at the window's
// guest-physical base, and watches `disk.irq` (or `onInterrupt`); with
// `transport: 'pci'` it puts `disk.pci` on its PCI bus instead (docs/pci.md).

import type { BlockBackend } from '../../backends/backend.ts';
import { GuestMemory } from '../../virtio/memory.ts';
import { openBackend } from './open-backend.ts';
import type { BackendSpec } from './worker-protocol.ts';
import { createSameThreadDisk } from './same-thread.ts';
import { DiskHost, type CreateDiskOptions, type Disk, type InterruptLine } from './types.ts';
import { waitAsync } from './wait-async.ts';
import { createWorkerDisk } from './worker-host.ts';

export {
  DiskHost,
  DiskTransport,
  type CreateDiskOptions,
  type Disk,
  type DiskStats,
  type InterruptLine,
  type PciDiskOptions,
} from './types.ts';

/** Whether this context can run the worker host (SharedArrayBuffer usable, and Web Workers). */
export function canUseWorkerHost(): boolean {
  return (
    typeof SharedArrayBuffer === 'function' &&
    typeof Worker === 'function' &&
    (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated !== false
  );
}

export async function createDisk(options: CreateDiskOptions): Promise<Disk> {
  const host = options.host ?? 'auto';
  const useWorker = host === DiskHost.Worker || (host === 'auto' && canUseWorkerHost());
  if (useWorker) {
    if (!isSpec(options.backend)) {
      throw new TypeError('the worker host needs a backend description ({kind: ...}), not a backend object');
    }
    return createWorkerDisk({ ...options, backend: options.backend });
  }
  const backend = isSpec(options.backend) ? await openBackend(options.backend) : options.backend;
  return createSameThreadDisk({
    ...options.device,
    memory: new GuestMemory(options.memory),
    backend,
    transport: options.transport,
    pci: options.pci,
    scheduleDoorbell: options.scheduleDoorbell,
  });
}

function isSpec(backend: BackendSpec | BlockBackend): backend is BackendSpec {
  return typeof (backend as { kind?: unknown }).kind === 'string';
}

/** Resolve once `line` is asserted. */
export async function waitForLine(line: InterruptLine): Promise<void> {
  while (Atomics.load(line.array, line.index) === 0) await waitAsync(line.array, line.index, 0);
}
