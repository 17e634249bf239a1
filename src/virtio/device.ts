// What a transport needs from a virtio device, and what it hands the device
// when the driver sets DRIVER_OK. The same contract serves the virtio-mmio
// register file (browser, same-thread) and the vhost-user host (Node), so the
// block device never learns which transport it sits behind.

import type { GuestMemory } from './memory.ts';
import type { SplitQueue } from './queue.ts';

/** Feature bits independent of the device type (virtio 1.2 §6). */
export const VirtioFeature = {
  RingIndirectDesc: 28n,
  RingEventIdx: 29n,
  Version1: 32n,
  AccessPlatform: 33n,
  RingPacked: 34n,
  InOrder: 35n,
  OrderPlatform: 36n,
  SrIov: 37n,
  NotificationData: 38n,
  RingReset: 40n,
} as const;

/** Device status bits (§2.1). */
export const DeviceStatus = {
  Acknowledge: 1,
  Driver: 2,
  DriverOk: 4,
  FeaturesOk: 8,
  DeviceNeedsReset: 64,
  Failed: 128,
} as const;

/** Whether bit `bit` is set in a 64-bit feature mask. */
export function hasFeature(features: bigint, bit: bigint): boolean {
  return ((features >> bit) & 1n) === 1n;
}

/** Everything the device may use once the driver has set DRIVER_OK. */
export interface ActivateContext {
  memory: GuestMemory;
  /**
   * One queue per device queue, in order; null for a queue the driver left
   * disabled. Entries change while active: the transport replaces or clears
   * one when the driver stops or restarts that queue. Read them afresh on
   * every pass, and drop a completion whose queue is no longer the one it
   * was popped from.
   */
  queues: ReadonlyArray<SplitQueue | null>;
  /** Features the driver accepted (⊆ the device's). */
  driverFeatures: bigint;
  /** Signal a used-buffer interrupt for queue `index` (after `needsInterrupt` said so). */
  interrupt(index: number): void;
  /** The ring became unusable: set DEVICE_NEEDS_RESET and send a config interrupt (§2.1.2). */
  needsReset(reason: string): void;
  /**
   * Ask the transport to call `processQueue(index)` again soon, from its own
   * loop (a throttled queue's timer fired). Never call processQueue from a
   * timer directly: the transport must know the device is busy.
   */
  wake(index: number): void;
  /** `inFlight` dropped to 0 outside `processQueue` (an async request completed last). */
  settled(): void;
}

export interface VirtioDevice {
  /** Device type (§5): 2 for block. */
  readonly deviceId: number;
  /** Features the device offers. */
  readonly deviceFeatures: bigint;
  /** How many virtqueues the device has. */
  readonly queueCount: number;
  /** Largest queue size the device accepts (QueueNumMax). */
  readonly queueMaxSize: number;
  /** The device-specific configuration space (§5.2.4 for block). Owned by the device. */
  readonly config: Uint8Array;
  /** A driver wrote `length` bytes of config space at `offset` (already stored in `config`). */
  configWritten(offset: number, length: number): void;
  /**
   * The driver's features were accepted (FEATURES_OK, §3.1.1 step 5), before
   * DRIVER_OK: config fields whose meaning depends on them (block: writeback
   * under CONFIG_WCE) take effect from here. Optional.
   */
  featuresNegotiated?(driverFeatures: bigint): void;
  /** The config space as it reads right after a reset (default: `config` as it is). */
  configAfterReset?(): Uint8Array;
  /**
   * Feature bits (at most two) whose negotiation changes the config space
   * (block: CONFIG_WCE and FLUSH decide writeback's first value). The
   * transport shows `configAfterNegotiation(features)` from the moment
   * FEATURES_OK is accepted, on the emulator's own thread, so a driver that
   * reads config straight after FEATURES_OK (Linux's probe) sees it.
   */
  readonly configFeatureBits?: bigint;
  configAfterNegotiation?(driverFeatures: bigint): Uint8Array;
  /** Subscribe to config changes (resize): the transport bumps ConfigGeneration and interrupts. */
  onConfigChange: (() => void) | null;
  /** Start serving; `processQueue` may be called from now on. */
  activate(context: ActivateContext): void;
  /** The driver notified queue `index` (or the host polls it). Never throws. */
  processQueue(index: number): void;
  /** Number of requests popped but not yet completed. */
  readonly inFlight: number;
  /**
   * Forget the driver: stop touching guest memory. Resolves once every
   * in-flight request has settled; none of them writes guest memory after
   * `reset` is called.
   */
  reset(): Promise<void>;
}
