// What a browser host hands an emulator: one `Disk`, whichever host runs
// the device (worker-host.ts or same-thread.ts), and the options that make
// one. Types and constants only, so both hosts and `createDisk` import them
// without importing each other.

import type { BlockBackend, StorageError } from '../../backends/backend.ts';
import type { RateLimiterConfig } from '../../limiter/index.ts';
import type { GuestRegionSpec } from '../../virtio/memory.ts';
import type { MmioAccessor, MmioState } from '../../virtio/mmio/mmio.ts';
import type { VirtioPciFunction, VirtioPciOptions } from '../../virtio/pci/function.ts';
import type { BackendSpec, DeviceSpec } from './worker-protocol.ts';
import type { DiskStats } from './stats.ts';

export type { DiskStats } from './stats.ts';

export const DiskHost = {
  Worker: 'worker',
  SameThread: 'same-thread',
} as const;
export type DiskHost = (typeof DiskHost)[keyof typeof DiskHost];

/** How the guest reaches the disk: a virtio-mmio window, or a virtio-pci function (docs/pci.md). */
export const DiskTransport = {
  Mmio: 'mmio',
  Pci: 'pci',
} as const;
export type DiskTransport = (typeof DiskTransport)[keyof typeof DiskTransport];

/** What a PCI disk takes beside the common options. */
export interface PciDiskOptions {
  /** 'pci': `Disk.pci` is a virtio-pci function over the disk (default 'mmio': `Disk.pci` is null). */
  transport?: DiskTransport;
  /** BAR size and IDs of the PCI function. */
  pci?: VirtioPciOptions;
  /**
   * Same-thread host: where a doorbell runs the device. By default a register
   * write that needs the device (a notify, a status change) runs it inside
   * the write. An emulator that must not run device code (and raise
   * interrupts) inside the guest's access passes a scheduler, e.g.
   * `(run) => queueMicrotask(run)`: doorbells rung before `run` is called
   * are coalesced into one run. The worker host ignores it (the device runs
   * in its worker).
   */
  scheduleDoorbell?: (run: () => void) => void;
}

export interface CreateDiskOptions extends PciDiskOptions {
  /**
   * Guest RAM as the guest sees it: regions over the emulator's
   * WebAssembly.Memory (shared, for the worker host) or (Shared)ArrayBuffer.
   * aarch64 `virt`: one region at guest address 0x4000_0000.
   */
  memory: GuestRegionSpec[];
  /** The storage: a description (either host) or, same-thread only, a backend object. */
  backend: BackendSpec | BlockBackend;
  device?: DeviceSpec;
  /** Default 'auto': the worker host when SharedArrayBuffer is usable, else same-thread. */
  host?: DiskHost | 'auto';
  /** Make the device worker yourself (a bundler that needs its own worker URL). */
  createWorker?: () => Worker;
  /**
   * Worker host: the most microseconds the device worker polls for the next
   * doorbell before it sleeps (src/host/browser/halt-poll.ts). The window adapts: it
   * grows while doorbells come just after it closed and shrinks to nothing
   * while the guest is idle. Polling keeps the device worker off the
   * sleep/wake path (a wake-up costs the waker 8–20 µs on a VM, and a thread
   * that halts between requests copies slower after it wakes). Default
   * `DEVICE_POLL_MICROS` (50); 0 sleeps at once.
   */
  spinMicros?: number;
}

/** The IRQ line: `Atomics.load(array, index)` is non-zero while asserted (it is InterruptStatus). */
export interface InterruptLine {
  readonly array: Int32Array;
  readonly index: number;
}

export interface Disk {
  readonly host: DiskHost;
  /** The register window (size MMIO_WINDOW_SIZE): call it synchronously on the emulator's thread. */
  readonly mmio: MmioAccessor;
  /**
   * The register file's state. To drive the registers from another thread,
   * post it there and wrap it in `new MmioRegisters(state)` (worker host).
   */
  readonly state: MmioState;
  /**
   * The virtio-pci function when the disk was made with `transport: 'pci'`,
   * else null. Give the guest either it or `mmio`, never both: they are two
   * register views of one device.
   */
  readonly pci: VirtioPciFunction | null;
  readonly irq: InterruptLine;
  /** InterruptStatus, non-zero while the line is asserted. */
  readonly interruptLevel: number;
  /** Resolves once the line is asserted (at once if it is). */
  waitForInterrupt(): Promise<void>;
  /** Called when the line rises (device thread → this thread, asynchronously). */
  onInterrupt: ((status: number) => void) | null;
  /** Called when a request failed in storage (the guest got IOERR; the device keeps serving). */
  onStorageError: ((error: StorageError) => void) | null;
  /** Called when the device set DEVICE_NEEDS_RESET. */
  onNeedsReset: ((reason: string) => void) | null;
  /** Live counters (read them any time; the worker host updates them after each batch). */
  readonly stats: DiskStats;
  /** Change the disk size; the guest gets a config-change interrupt. */
  resize(sizeBytes: number): Promise<void>;
  /** Replace the guest's rate limit while it runs (null: unlimited). */
  setRateLimit(config: RateLimiterConfig | null): Promise<void>;
  /** Make completed writes durable now, from the host side. */
  flush(): Promise<void>;
  /** Stop the device, close the backend (an OPFS disk's lock is released), end the worker. */
  close(): Promise<void>;
}

