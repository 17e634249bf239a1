// The same-thread host: the device runs on the emulator's own thread. A
// register write that needs the device (QueueNotify, Status) runs it right
// there, as a VMM's device model runs on an MMIO exit; asynchronous backends
// complete later on the same event loop.
//
// This is the host for pages without cross-origin isolation (no
// SharedArrayBuffer) and for Node tests. It needs no worker and no Atomics.wait.

import type { BlockBackend } from '../backends/backend.ts';
import { VirtioBlkDevice, type BlockDeviceOptions } from '../block/device.ts';
import type { GuestMemory } from '../virtio/memory.ts';
import { MmioDevice, MmioRegisters, createMmioState } from '../virtio/mmio.ts';

export interface SameThreadDiskOptions extends BlockDeviceOptions {
  memory: GuestMemory;
  backend: BlockBackend;
  /** Put the register state in a SharedArrayBuffer (default: only if available). */
  sharedState?: boolean;
}

export interface SameThreadDisk {
  /** The emulator's register accessor. */
  readonly mmio: MmioRegisters;
  readonly device: VirtioBlkDevice;
  readonly transport: MmioDevice;
  /** The IRQ level (InterruptStatus): non-zero while asserted. */
  readonly interruptLevel: number;
  /** Resolves once the IRQ line is asserted (at once if it already is). */
  waitForInterrupt(): Promise<void>;
  /** Subscribe to IRQ rises (edge: 0 → non-zero). */
  onInterrupt: ((status: number) => void) | null;
  resize(newSizeBytes: number): Promise<void>;
  close(): Promise<void>;
}

export function createSameThreadDisk(options: SameThreadDiskOptions): SameThreadDisk {
  const { memory, backend, sharedState, ...deviceOptions } = options;
  const device = new VirtioBlkDevice(backend, deviceOptions);
  const state = createMmioState(sharedState);
  const transport = new MmioDevice(state, device, memory);
  const mmio = new MmioRegisters(state);
  let waiters: Array<() => void> = [];
  const disk: SameThreadDisk = {
    mmio,
    device,
    transport,
    get interruptLevel() {
      return mmio.interruptLevel;
    },
    waitForInterrupt() {
      if (mmio.interruptLevel !== 0) return Promise.resolve();
      return new Promise<void>((resolve) => waiters.push(resolve));
    },
    onInterrupt: null,
    async resize(newSizeBytes) {
      await device.resize(newSizeBytes);
    },
    async close() {
      await device.reset();
      await backend.close();
    },
  };
  mmio.onDoorbell = () => transport.poll();
  // A throttle timer or a finished reset asks for another pass.
  transport.onWake = () => transport.poll();
  transport.onResetDone = () => transport.poll();
  transport.onInterrupt = (status) => {
    const ready = waiters;
    waiters = [];
    for (const w of ready) w();
    disk.onInterrupt?.(status);
  };
  return disk;
}
