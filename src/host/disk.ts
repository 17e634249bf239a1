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
// guest-physical base, and watches `disk.irq` (or `onInterrupt`).

import { StorageError, type BlockBackend } from '../backends/backend.ts';
import { DiskLimits, type RateLimiterConfig } from '../limiter/index.ts';
import { GuestMemory, type GuestRegionSpec } from '../virtio/memory.ts';
import { MmioWord, type MmioState } from '../virtio/mmio.ts';
import type { MmioAccessor } from '../driver/driver.ts';
import { openBackend } from './open-backend.ts';
import type { BackendSpec, DeviceSpec } from './protocol.ts';
import { createSameThreadDisk } from './same-thread.ts';
import { waitAsync } from './wait-async.ts';
import { createWorkerDisk } from './worker-host.ts';
import { emptyStats, gatherStats, type DiskStats } from './stats.ts';

export type { DiskStats } from './stats.ts';

export const DiskHost = {
  Worker: 'worker',
  SameThread: 'same-thread',
} as const;
export type DiskHost = (typeof DiskHost)[keyof typeof DiskHost];

export interface CreateDiskOptions {
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
   * doorbell before it sleeps (src/host/halt-poll.ts). The window adapts: it
   * grows while doorbells come just after it closed and shrinks to nothing
   * while the guest is idle. Polling keeps the device worker off the
   * sleep/wake path (a wake-up costs the waker 8–20 µs on a VM, and a thread
   * that halts between requests copies slower after it wakes). Default
   * `DEVICE_POLL_MICROS` (50); 0 sleeps at once.
   */
  spinMicros?: number;
}

/** Live counters (read them any time; the worker host updates them after each batch). */

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
  return sameThreadDisk(options.memory, backend, options.device ?? {});
}

function isSpec(backend: BackendSpec | BlockBackend): backend is BackendSpec {
  return typeof (backend as { kind?: unknown }).kind === 'string';
}

/** Adapt the core's same-thread host to `Disk`. */
function sameThreadDisk(memory: GuestRegionSpec[], backend: BlockBackend, spec: DeviceSpec): Disk {
  let disk: Disk;
  const { rateLimit, rateLimitGroup, ...device } = spec;
  const limits = new DiskLimits(rateLimit, rateLimitGroup);
  const inner = createSameThreadDisk({
    ...device,
    limiter: limits.current,
    memory: new GuestMemory(memory),
    backend,
    onStorageError: (error) => disk.onStorageError?.(error),
  });
  inner.transport.onNeedsReset = (reason) => disk.onNeedsReset?.(reason);
  inner.onInterrupt = (status) => disk.onInterrupt?.(status);
  const state = inner.mmio.state;
  disk = {
    host: DiskHost.SameThread,
    mmio: inner.mmio,
    state,
    irq: { array: state, index: MmioWord.InterruptStatus },
    get interruptLevel() {
      return inner.interruptLevel;
    },
    waitForInterrupt: () => inner.waitForInterrupt(),
    onInterrupt: null,
    onStorageError: null,
    onNeedsReset: null,
    get stats(): DiskStats {
      return gatherStats(emptyStats(), inner.device, inner.transport);
    },
    async setRateLimit(config) {
      limits.set(config);
      inner.device.setLimiter(limits.current);
    },
    resize: (sizeBytes) => inner.resize(sizeBytes),
    flush: async () => backend.flush(),
    close: () => inner.close(),
  };
  return disk;
}

/** Resolve once `line` is asserted. */
export async function waitForLine(line: InterruptLine): Promise<void> {
  while (Atomics.load(line.array, line.index) === 0) await waitAsync(line.array, line.index, 0);
}
