// The shared state of a virtio transport: one Int32Array over a
// SharedArrayBuffer (worker host) or an ArrayBuffer (same thread), read and
// written by the emulator's thread (`TransportRegisters`) and the device's
// (`TransportDevice`). Transport-neutral: virtio-mmio's register file and a
// PCI common-config table decode their own registers onto the same words.
//
// Layout (32-bit words, then byte areas):
// - device words, written only by the device side when it is built;
// - driver words (features, selectors, Status, InterruptStatus) and the
//   doorbell, event and mask words the two sides signal with;
// - one view of QUEUE_WORDS words per queue: the only way to reach a queue's
//   registers, so no value a driver writes is ever an index into the state;
// - the config space as the driver sees it, as it reads after a reset, and as
//   it reads after FEATURES_OK (one image per combination of the device's
//   configFeatureBits).

import { DeviceStatus } from '../device.ts';

/** Most virtqueues a device may have on these transports. */
export const MAX_QUEUES = 8;
/** Largest device config space a transport carries. */
export const MAX_CONFIG_BYTES = 256;
/** Most feature bits a device may name in configFeatureBits. */
export const MAX_CONFIG_FEATURE_BITS = 2;

/**
 * Set in the Status word, above the eight status bits, while a reset waits
 * for the device: Status reads the old bits (non-zero) until the device
 * stores 0 over the whole word.
 */
export const STATUS_RESET_PENDING = 1 << 16;
/** The status bits a driver may write (§2.1); DEVICE_NEEDS_RESET is the device's alone. */
export const DRIVER_STATUS_BITS = 0xff & ~DeviceStatus.DeviceNeedsReset;

/** InterruptStatus bits (§4.2.2 for MMIO; the PCI ISR uses the same two, §4.1.4.5). */
export const InterruptBit = {
  UsedBuffer: 1,
  ConfigChange: 2,
} as const;

/** Event bits the emulator's side raises for the device side. */
export const TransportEvent = {
  /** One or more queue notifications; which queues is in the notify mask word. */
  Notify: 1,
  /** Status changed in a way the device acts on (FEATURES_OK, DRIVER_OK). */
  Status: 2,
  /** The emulator reset the registers (the device was idle): drop device state. */
  Reset: 4,
  /** A reset is waiting for the device to drop its in-flight work and reset the registers. */
  ResetRequest: 8,
  /** The driver wrote config space; the dirty bytes are in the config-dirty words. */
  Config: 16,
  /** A queue was enabled or disabled after DRIVER_OK; which is in the queue-changed mask word. */
  Queue: 32,
} as const;

/** Device-side activity, for the reset handshake. */
export const Activity = {
  /** No batch running and nothing in flight: the emulator may reset at once. */
  Idle: 0,
  /** The device is processing or has requests in flight. */
  Busy: 1,
  /** The emulator thread is resetting the registers right now. */
  Resetting: 2,
} as const;

/** Word indices into the state. */
export const W = {
  // Written by the device side only (TransportDevice's constructor): no register writes them.
  DeviceFeaturesLo: 0,
  DeviceFeaturesHi: 1,
  NumQueues: 2,
  DeviceId: 3,
  ConfigSize: 4,
  // Driver-writable registers.
  DriverFeaturesLo: 5,
  DriverFeaturesHi: 6,
  DeviceFeaturesSel: 7,
  DriverFeaturesSel: 8,
  QueueSel: 9,
  /** The eight status bits, plus STATUS_RESET_PENDING. */
  Status: 11,
  InterruptStatus: 12,
  ConfigGeneration: 13,
  /** Incremented on every event; the device worker Atomics.waits on it. */
  Doorbell: 14,
  /** TransportEvent bits not yet consumed. */
  Events: 15,
  /** Bit q: queue q was notified. */
  NotifyMask: 16,
  /** Bit q: queue q was enabled or disabled while DRIVER_OK was set. */
  QueueChangedMask: 17,
  /** Activity value. */
  Activity: 18,
  /** Number of notifications seen (statistics). */
  NotifyCount: 19,
  /** Number of interrupts raised (statistics). */
  InterruptCount: 20,
  /** VirtioDevice.configFeatureBits, as a 64-bit pair: which negotiated image FEATURES_OK shows. */
  ConfigFeatureBitsLo: 21,
  ConfigFeatureBitsHi: 22,
  /** Bitmap of config bytes the driver wrote (8 words: 256 bytes). */
  ConfigDirty: 24,
} as const;

const QUEUE_BASE = 32;
const QUEUE_WORDS = 20;
/** Words of one queue's view. */
export const Q = {
  NumMax: 0,
  Num: 1,
  Ready: 2,
  DescLo: 3,
  DescHi: 4,
  DriverLo: 5,
  DriverHi: 6,
  DeviceLo: 7,
  DeviceHi: 8,
  /**
   * Even while the snapshot below is stable, odd while the emulator writes
   * it; bumped on every enable or disable and every reset, so the device can
   * tell the queue it built is no longer the one the driver has.
   */
  Epoch: 9,
  // Snapshot taken when the driver enables the queue: later writes to the
  // registers above cannot move a live queue.
  SnapNum: 10,
  SnapDescLo: 11,
  SnapDescHi: 12,
  SnapDriverLo: 13,
  SnapDriverHi: 14,
  SnapDeviceLo: 15,
  SnapDeviceHi: 16,
} as const;

/** A queue's address registers and their snapshot words. */
export const SNAPSHOT_FIELDS: ReadonlyArray<readonly [number, number]> = [
  [Q.DescLo, Q.SnapDescLo],
  [Q.DescHi, Q.SnapDescHi],
  [Q.DriverLo, Q.SnapDriverLo],
  [Q.DriverHi, Q.SnapDriverHi],
  [Q.DeviceLo, Q.SnapDeviceLo],
  [Q.DeviceHi, Q.SnapDeviceHi],
];

const CONFIG_BYTE = (QUEUE_BASE + MAX_QUEUES * QUEUE_WORDS) * 4;
export const CONFIG_AFTER_RESET_BYTE = CONFIG_BYTE + MAX_CONFIG_BYTES;
export const CONFIG_NEGOTIATED_BYTE = CONFIG_AFTER_RESET_BYTE + MAX_CONFIG_BYTES;
export { CONFIG_BYTE };
/** Bytes of shared memory one transport needs. */
export const TRANSPORT_STATE_BYTES = CONFIG_NEGOTIATED_BYTE + (MAX_CONFIG_BYTES << MAX_CONFIG_FEATURE_BITS);

/**
 * Indices of the state words other threads wait on: the device worker
 * Atomics.waits on `Doorbell`; an emulator polls or Atomics.waits on
 * `InterruptStatus` (the IRQ level).
 */
export const TransportWord = { Doorbell: W.Doorbell, InterruptStatus: W.InterruptStatus } as const;

/** The shared block: create it with `createTransportState`, send it to the other thread as is. */
export type TransportState = Int32Array;

/** Allocate transport state; shared when `shared` (default: when SharedArrayBuffer exists). */
export function createTransportState(shared = typeof SharedArrayBuffer !== 'undefined'): TransportState {
  const buffer = shared ? new SharedArrayBuffer(TRANSPORT_STATE_BYTES) : new ArrayBuffer(TRANSPORT_STATE_BYTES);
  return new Int32Array(buffer);
}

/**
 * Whether `buffer` is shared. Without cross-origin isolation a page has no
 * `SharedArrayBuffer` global at all, so a bare instanceof would throw there.
 */
export function isShared(buffer: ArrayBufferLike): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && buffer instanceof SharedArrayBuffer;
}

/** Wake the device side: record the event and notify a waiting worker. */
export function ringDoorbell(state: TransportState, event: number): void {
  Atomics.or(state, W.Events, event);
  Atomics.add(state, W.Doorbell, 1);
  // Waking a worker blocked in Atomics.wait on the doorbell. Harmless (returns
  // 0) on a non-shared buffer, where nobody can be waiting.
  if (isShared(state.buffer)) Atomics.notify(state, W.Doorbell);
}

/** One view per queue the transport can hold; the only way to reach a queue's words. */
export function queueViews(state: TransportState): readonly Int32Array[] {
  const views: Int32Array[] = [];
  for (let q = 0; q < MAX_QUEUES; q++) {
    views.push(new Int32Array(state.buffer, state.byteOffset + (QUEUE_BASE + q * QUEUE_WORDS) * 4, QUEUE_WORDS));
  }
  return views;
}

/** The config area at byte offset `at` of the state. */
export function configBytes(state: TransportState, at: number): Uint8Array {
  return new Uint8Array(state.buffer, state.byteOffset + at, MAX_CONFIG_BYTES);
}

/** The bit positions set in a 64-bit mask given as two words, lowest first. */
export function maskBits(lo: number, hi: number): number[] {
  const bits: number[] = [];
  for (let b = 0; b < 64; b++) if (((b < 32 ? lo : hi) >>> (b & 31)) & 1) bits.push(b);
  return bits;
}

/** Which negotiated config image goes with these driver features: bit i set when the mask's i-th bit is. */
export function negotiatedImageIndex(bits: readonly number[], lo: number, hi: number): number {
  let index = 0;
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    if (((b < 32 ? lo : hi) >>> (b & 31)) & 1) index |= 1 << i;
  }
  return index;
}

/** Bump a queue's epoch by two (staying even): whatever the device built from it is stale. */
function invalidateQueue(view: Int32Array): void {
  Atomics.add(view, Q.Epoch, 2);
}

/**
 * Clear every driver-visible register (§4.2.2.1, §4.1.4.3: InterruptStatus and
 * the queue enables among them) and restore the config space to its
 * after-reset contents, Status last: whoever sees Status read 0 sees all the
 * rest reset.
 */
export function resetRegisters(state: TransportState, queues: readonly Int32Array[]): void {
  for (const w of [
    W.DriverFeaturesLo,
    W.DriverFeaturesHi,
    W.DeviceFeaturesSel,
    W.DriverFeaturesSel,
    W.QueueSel,
    W.NotifyMask,
    W.QueueChangedMask,
  ]) {
    Atomics.store(state, w, 0);
  }
  for (let w = 0; w < MAX_CONFIG_BYTES / 32; w++) Atomics.store(state, W.ConfigDirty + w, 0);
  for (const view of queues) {
    invalidateQueue(view);
    for (let i: number = Q.Num; i < QUEUE_WORDS; i++) if (i !== Q.Epoch) Atomics.store(view, i, 0);
    // The queue size's reset value is its maximum, as drivers that skip writing it expect.
    Atomics.store(view, Q.Num, Atomics.load(view, Q.NumMax));
  }
  configBytes(state, CONFIG_BYTE).set(configBytes(state, CONFIG_AFTER_RESET_BYTE));
  Atomics.store(state, W.InterruptStatus, 0);
  Atomics.store(state, W.Status, 0);
}

/** A 64-bit feature mask from two 32-bit words. */
export function features64(lo: number, hi: number): bigint {
  return BigInt(lo >>> 0) | (BigInt(hi >>> 0) << 32n);
}
