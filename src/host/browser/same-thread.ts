// The same-thread host: the device runs on the emulator's own thread. A
// register write that needs the device (QueueNotify, Status) runs it right
// there, as a VMM's device model runs on an MMIO exit; asynchronous backends
// complete later on the same event loop.
//
// This is the host for pages without cross-origin isolation (no
// SharedArrayBuffer) and for Node tests. It needs no worker and no
// Atomics.wait. It returns the same `Disk` as the worker host, plus the
// in-process objects (device, transport, backend) tests and tools reach into.

import type { BlockBackend, StorageError } from '../../backends/backend.ts';
import { VirtioBlkDevice, type BlockDeviceOptions } from '../../block/device.ts';
import { DiskLimits, type RateLimiterConfig } from '../../limiter/index.ts';
import type { GuestMemory } from '../../virtio/memory.ts';
import { MmioDevice, MmioRegisters, MmioWord, createMmioState } from '../../virtio/mmio/mmio.ts';
import { VirtioPciFunction } from '../../virtio/pci/function.ts';
import { emptyStats, gatherStats } from './stats.ts';
import { DiskHost, DiskTransport, type Disk, type DiskStats, type PciDiskOptions } from './types.ts';

export interface SameThreadDiskOptions extends BlockDeviceOptions, PciDiskOptions {
  memory: GuestMemory;
  backend: BlockBackend;
  /** Put the register state in a SharedArrayBuffer (default: only if available). */
  sharedState?: boolean;
  /** Throttle the guest (replaced later with `setRateLimit`); `limiter`, if given, is used as is instead. */
  rateLimit?: RateLimiterConfig;
  /** Share a budget with other disks: the `buffer` of a `RateLimitGroup`. */
  rateLimitGroup?: SharedArrayBuffer;
}

export interface SameThreadDisk extends Disk {
  /** The emulator's register accessor. */
  readonly mmio: MmioRegisters;
  readonly pci: VirtioPciFunction | null;
  readonly device: VirtioBlkDevice;
  readonly transport: MmioDevice;
  readonly backend: BlockBackend;
}

export function createSameThreadDisk(options: SameThreadDiskOptions): SameThreadDisk {
  const { memory, backend, sharedState, rateLimit, rateLimitGroup, limiter, onStorageError, transport: kind, pci: pciOptions, scheduleDoorbell, ...deviceOptions } =
    options;
  const limits = new DiskLimits(rateLimit, rateLimitGroup);
  const device = new VirtioBlkDevice(backend, {
    ...deviceOptions,
    limiter: limiter ?? limits.current,
    onStorageError: (error: StorageError) => {
      onStorageError?.(error);
      disk.onStorageError?.(error);
    },
  });
  const state = createMmioState(sharedState);
  const transport = new MmioDevice(state, device, memory);
  const mmio = new MmioRegisters(state);
  const pci = kind === DiskTransport.Pci ? new VirtioPciFunction(state, pciOptions) : null;
  let waiters: Array<() => void> = [];
  const disk: SameThreadDisk = {
    host: DiskHost.SameThread,
    mmio,
    pci,
    state,
    irq: { array: state, index: MmioWord.InterruptStatus },
    device,
    transport,
    backend,
    get interruptLevel() {
      return mmio.interruptLevel;
    },
    waitForInterrupt() {
      if (mmio.interruptLevel !== 0) return Promise.resolve();
      return new Promise<void>((resolve) => waiters.push(resolve));
    },
    onInterrupt: null,
    onStorageError: null,
    onNeedsReset: null,
    get stats(): DiskStats {
      return gatherStats(emptyStats(), device, transport);
    },
    async setRateLimit(config) {
      limits.set(config);
      device.setLimiter(limits.current);
    },
    async resize(newSizeBytes) {
      await device.resize(newSizeBytes);
    },
    flush: async () => backend.flush(),
    async close() {
      await device.reset();
      await backend.close();
    },
  };
  let scheduled = false;
  const run = (): void => {
    scheduled = false;
    transport.poll();
  };
  const doorbell = scheduleDoorbell
    ? () => {
        if (scheduled) return;
        scheduled = true;
        scheduleDoorbell(run);
      }
    : () => transport.poll();
  // Either register view rings the same device.
  mmio.onDoorbell = doorbell;
  if (pci) pci.onDoorbell = doorbell;
  // A throttle timer or a finished reset asks for another pass.
  transport.onWake = () => transport.poll();
  transport.onResetDone = () => {
    transport.poll();
    // A reset the device finished cleared the interrupt word.
    pci?.updateInterruptLevel();
  };
  transport.onNeedsReset = (reason) => disk.onNeedsReset?.(reason);
  transport.onInterrupt = (status) => {
    const ready = waiters;
    waiters = [];
    for (const w of ready) w();
    pci?.updateInterruptLevel();
    disk.onInterrupt?.(status);
  };
  return disk;
}
