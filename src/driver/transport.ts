// What a virtio driver needs from a transport, and nothing more (the
// guest-side half of Linux's `virtio_config_ops`): identify the device,
// reset it, move its status, exchange features, set up a queue, notify it,
// take the interrupt cause, read and write config space. The block driver
// and the virtqueue are written against this interface only, so the same
// driver drives virtio-mmio today and virtio-pci next; each transport is
// one file that decodes its own registers.
//
// The operations are as fine-grained as the registers behind them, so an
// implementation can keep Linux's exact order of accesses (the hostile and
// race suites watch it). The two steps every transport does the same way,
// the wait after a reset and the config-generation retry, are helpers here.

import { DriverError } from './errors.ts';

/** Guest-physical addresses of a split queue's three parts (§2.7). */
export interface RingAddresses {
  /** Descriptor table. */
  desc: number;
  /** Driver area: the available ring. */
  avail: number;
  /** Device area: the used ring. */
  used: number;
}

/** Interrupt causes as `takeInterrupt` reports them (MMIO InterruptStatus and the PCI ISR agree). */
export const InterruptCause = {
  /** The device used buffers in a queue. */
  UsedBuffer: 1,
  /** The device changed its config space. */
  ConfigChange: 2,
} as const;

/** The guest-side operations a virtio driver needs from any transport. */
export interface DriverTransport {
  /** Check that a modern virtio device answers and return its device ID. Throws DriverError. */
  probe(): number;
  /** Write status 0 and wait until it reads back 0 (§2.4.2). */
  reset(): Promise<void>;
  /** The device status byte (§2.1). */
  getStatus(): number;
  setStatus(status: number): void;
  /** The 64 feature bits the device offers (§2.2). */
  readDeviceFeatures(): bigint;
  /** The 64 feature bits the driver accepts. */
  writeDriverFeatures(features: bigint): void;
  /** Make queue `index` the one the per-queue operations below act on. */
  selectQueue(index: number): void;
  /** Whether the selected queue is enabled (read back from the device). */
  queueEnabled(): boolean;
  /** The selected queue's maximum size; 0 when the queue does not exist. */
  queueMaxSize(): number;
  setQueueSize(size: number): void;
  setQueueAddresses(rings: RingAddresses): void;
  /** Enable the selected queue: its geometry is fixed from here on. */
  enableQueue(): void;
  /** Tell the device queue `index` has new available buffers. */
  notify(index: number): void;
  /** Read the interrupt cause and acknowledge it; `InterruptCause` bits, 0 when none. */
  takeInterrupt(): number;
  /** Read `width` bytes of config space at `offset`, consistently (§2.5.1). */
  readConfig(offset: number, width: 1 | 2 | 4 | 8): number;
  writeConfig(offset: number, value: number, width: 1 | 2 | 4): void;
}

/**
 * Read until the config generation is the same before and after (§4.2.3.1:
 * a multi-byte field may change between its parts' reads, as a resize does).
 */
export function readConsistently(generation: () => number, read: () => number): number {
  for (;;) {
    const before = generation();
    const value = read();
    if (generation() === before) return value;
  }
}

/** How long a reset may take before the driver gives up on the device. */
const RESET_DEADLINE_MS = 20_000;

/**
 * Poll the status until the device has finished a reset (§2.4.2: wait before
 * re-initialising). Bounded by time, not by polls: chained timers are clamped
 * to 4 ms, so the old 100,000-poll bound let a device that never finished
 * hold the driver for some 400 s, longer than the tests that wait on it.
 */
export async function waitForResetDone(readStatus: () => number): Promise<void> {
  const deadline = performance.now() + RESET_DEADLINE_MS;
  for (let i = 0; ; i++) {
    const status = readStatus();
    if (status === 0) return;
    if (performance.now() > deadline) {
      throw new DriverError(`device did not finish reset in ${RESET_DEADLINE_MS / 1000} s (Status still 0x${(status >>> 0).toString(16)})`);
    }
    await new Promise((r) => setTimeout(r, i < 10 ? 0 : 1));
  }
}
