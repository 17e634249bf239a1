// The virtio-mmio v2 register file (virtio 1.2 §4.2.2), split in two halves
// that share one block of memory (`MmioState`, an Int32Array over a
// SharedArrayBuffer or an ArrayBuffer):
//
// - `MmioRegisters` is what the emulator calls, synchronously, on its own
//   thread: `read(offset, width)` / `write(offset, value, width)`. It never
//   waits for the device. Writes the device must act on (QueueNotify, Status,
//   QueueReady, config) set an event bit and ring the doorbell word.
// - `MmioDevice` is the device side: it consumes events, builds queues from
//   the geometry snapshotted at QueueReady, drives a `VirtioDevice`, and
//   raises interrupts.
//
// Both may run on one thread (same-thread host: the doorbell is a callback)
// or on two (worker host: the doorbell is Atomics.notify on the state).
//
// Any value in any register is harmless by construction: a register writes
// only its own word, named by a constant; the queue registers reach their
// queue through a table of per-queue views, so a selector that names no queue
// finds no view and reads 0 (§4.2.2). Nothing a write carries is ever used as
// an index into the state.
//
// Interrupts: InterruptStatus is also the IRQ level. Non-zero means the line
// is asserted; the emulator polls it or Atomics.waits for it to leave 0; an
// InterruptACK clears bits atomically, so a bit the device sets concurrently
// is never lost.
//
// Reset (Status ← 0) is one state that Status shows: Status reads 0 exactly
// when the device has dropped its work and accepts a new initialisation.
// - Idle device (no batch running, nothing in flight): the emulator thread
//   resets the registers at once, so a driver that does not wait (Linux's
//   virtio_mmio) sees 0 immediately. The device drops its state on the Reset
//   event before it handles anything the driver writes afterwards.
// - Busy device: the Status word keeps its old, non-zero bits plus
//   STATUS_RESET_PENDING; Status writes are ignored until the device has
//   dropped its in-flight work, reset the registers and stored 0 into the
//   Status word, which ends the pending state and shows 0 in one store.
//   No guest memory is written after Status reads 0.

import { DeviceStatus, VirtioFeature, hasFeature, type VirtioDevice } from './device.ts';
import { GuestMemory } from './memory.ts';
import { SplitQueue, checkGeometry, type QueueGeometry } from './queue.ts';

/** MagicValue: "virt" in little-endian (§4.2.2). */
export const MMIO_MAGIC = 0x74726976;
/** Version 2 is the non-legacy interface (§4.2.2). */
export const MMIO_VERSION = 2;
/** This project's VendorID ("VBWB"). */
export const MMIO_VENDOR_ID = 0x42574256;
/** Size of the MMIO window an emulator maps (registers + config space). */
export const MMIO_WINDOW_SIZE = 0x200;
/** Most virtqueues a device may have in this register file. */
export const MMIO_MAX_QUEUES = 8;

/** Register offsets (§4.2.2, table "MMIO Device Register Layout"). */
export const MmioReg = {
  MagicValue: 0x000,
  Version: 0x004,
  DeviceId: 0x008,
  VendorId: 0x00c,
  DeviceFeatures: 0x010,
  DeviceFeaturesSel: 0x014,
  DriverFeatures: 0x020,
  DriverFeaturesSel: 0x024,
  QueueSel: 0x030,
  QueueNumMax: 0x034,
  QueueNum: 0x038,
  QueueReady: 0x044,
  QueueNotify: 0x050,
  InterruptStatus: 0x060,
  InterruptAck: 0x064,
  Status: 0x070,
  QueueDescLow: 0x080,
  QueueDescHigh: 0x084,
  QueueDriverLow: 0x090,
  QueueDriverHigh: 0x094,
  QueueDeviceLow: 0x0a0,
  QueueDeviceHigh: 0x0a4,
  ShmSel: 0x0ac,
  ShmLenLow: 0x0b0,
  ShmLenHigh: 0x0b4,
  ShmBaseLow: 0x0b8,
  ShmBaseHigh: 0x0bc,
  QueueReset: 0x0c0,
  ConfigGeneration: 0x0fc,
  Config: 0x100,
} as const;

/** InterruptStatus bits (§4.2.2). */
export const MmioInterrupt = {
  UsedBuffer: 1,
  ConfigChange: 2,
} as const;

/**
 * Set in the Status word, above the eight status bits, while a reset waits
 * for the device: Status reads the old bits (non-zero) until the device
 * stores 0 over the whole word.
 */
const STATUS_RESET_PENDING = 1 << 16;
/** The status bits a driver may write (§2.1); DEVICE_NEEDS_RESET is the device's alone. */
const DRIVER_STATUS_BITS = 0xff & ~DeviceStatus.DeviceNeedsReset;

/** Event bits the register side raises for the device side. */
export const MmioEvent = {
  /** One or more QueueNotify writes; which queues is in the notify mask word. */
  Notify: 1,
  /** Status changed in a way the device acts on (FEATURES_OK, DRIVER_OK). */
  Status: 2,
  /** The emulator reset the registers (the device was idle): drop device state. */
  Reset: 4,
  /** A reset is waiting for the device to drop its in-flight work and reset the registers. */
  ResetRequest: 8,
  /** The driver wrote config space; the dirty bytes are in the config-dirty words. */
  Config: 16,
  /** A QueueReady changed after DRIVER_OK; which queues is in the queue-changed mask word. */
  Queue: 32,
} as const;

/** Device-side activity, for the reset handshake. */
const Activity = {
  /** No batch running and nothing in flight: the emulator may reset at once. */
  Idle: 0,
  /** The device is processing or has requests in flight. */
  Busy: 1,
  /** The emulator thread is resetting the registers right now. */
  Resetting: 2,
} as const;

// Word indices into the state (Int32). Queue q's registers are a view of
// QUEUE_WORDS words at QUEUE_BASE + q * QUEUE_WORDS. The config space is bytes
// from CONFIG_BYTE, the config as it reads after a reset from CONFIG_DEFAULT_BYTE,
// and as it reads after FEATURES_OK from CONFIG_NEGOTIATED_BYTE (one image per
// combination of the device's configFeatureBits).
const W = {
  // Written by the device side only (MmioDevice's constructor): no register writes them.
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
  ShmSel: 10,
  /** The eight status bits, plus STATUS_RESET_PENDING. */
  Status: 11,
  InterruptStatus: 12,
  ConfigGeneration: 13,
  /** Incremented on every event; the device worker Atomics.waits on it. */
  Doorbell: 14,
  /** MmioEvent bits not yet consumed. */
  Events: 15,
  /** Bit q: queue q was notified. */
  NotifyMask: 16,
  /** Bit q: queue q's QueueReady changed while DRIVER_OK was set. */
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
const Q = {
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
   * it; bumped on every QueueReady change and every reset, so the device can
   * tell the queue it built is no longer the one the driver has.
   */
  Epoch: 9,
  // Snapshot taken when the driver writes QueueReady = 1: later writes to the
  // registers above cannot move a live queue.
  SnapNum: 10,
  SnapDescLo: 11,
  SnapDescHi: 12,
  SnapDriverLo: 13,
  SnapDriverHi: 14,
  SnapDeviceLo: 15,
  SnapDeviceHi: 16,
} as const;
const CONFIG_BYTE = (QUEUE_BASE + MMIO_MAX_QUEUES * QUEUE_WORDS) * 4;
const CONFIG_MAX = MMIO_WINDOW_SIZE - MmioReg.Config;
const CONFIG_DEFAULT_BYTE = CONFIG_BYTE + CONFIG_MAX;
/** Most feature bits a device may name in configFeatureBits. */
const MAX_CONFIG_FEATURE_BITS = 2;
const CONFIG_NEGOTIATED_BYTE = CONFIG_DEFAULT_BYTE + CONFIG_MAX;
/** Bytes of shared memory one register file needs. */
export const MMIO_STATE_BYTES = CONFIG_NEGOTIATED_BYTE + (CONFIG_MAX << MAX_CONFIG_FEATURE_BITS);
/**
 * Indices of the state words other threads wait on: the device worker
 * Atomics.waits on `Doorbell`; an emulator polls or Atomics.waits on
 * `InterruptStatus` (the IRQ level).
 */
export const MmioWord = { Doorbell: W.Doorbell, InterruptStatus: W.InterruptStatus } as const;

/** The shared block: create it with `createMmioState`, send it to the other thread as is. */
export type MmioState = Int32Array;

/** Allocate register-file state; shared when `shared` (default: when SharedArrayBuffer exists). */
export function createMmioState(shared = typeof SharedArrayBuffer !== 'undefined'): MmioState {
  const buffer = shared ? new SharedArrayBuffer(MMIO_STATE_BYTES) : new ArrayBuffer(MMIO_STATE_BYTES);
  return new Int32Array(buffer);
}

/**
 * Whether `buffer` is shared. Without cross-origin isolation a page has no
 * `SharedArrayBuffer` global at all, so a bare instanceof would throw there.
 */
function isShared(buffer: ArrayBufferLike): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && buffer instanceof SharedArrayBuffer;
}

/** Wake the device side: record the event and notify a waiting worker. */
function ringDoorbell(state: MmioState, event: number): void {
  Atomics.or(state, W.Events, event);
  Atomics.add(state, W.Doorbell, 1);
  // Waking a worker blocked in Atomics.wait on the doorbell. Harmless (returns
  // 0) on a non-shared buffer, where nobody can be waiting.
  if (isShared(state.buffer)) Atomics.notify(state, W.Doorbell);
}

/** One view per queue the register file can hold; the only way to reach a queue's words. */
function queueViews(state: MmioState): readonly Int32Array[] {
  const views: Int32Array[] = [];
  for (let q = 0; q < MMIO_MAX_QUEUES; q++) {
    views.push(new Int32Array(state.buffer, state.byteOffset + (QUEUE_BASE + q * QUEUE_WORDS) * 4, QUEUE_WORDS));
  }
  return views;
}

function configBytes(state: MmioState, at: number): Uint8Array {
  return new Uint8Array(state.buffer, state.byteOffset + at, CONFIG_MAX);
}

/** The bit positions set in a 64-bit mask given as two words, lowest first. */
function maskBits(lo: number, hi: number): number[] {
  const bits: number[] = [];
  for (let b = 0; b < 64; b++) if (((b < 32 ? lo : hi) >>> (b & 31)) & 1) bits.push(b);
  return bits;
}

/** Which negotiated config image goes with these driver features: bit i set when the mask's i-th bit is. */
function negotiatedImageIndex(bits: readonly number[], lo: number, hi: number): number {
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
 * Clear every driver-visible register (§4.2.2.1: InterruptStatus and
 * QueueReady among them) and restore the config space to its after-reset
 * contents, Status last: whoever sees Status read 0 sees all the rest reset.
 */
function resetRegisters(state: MmioState, queues: readonly Int32Array[]): void {
  for (const w of [
    W.DriverFeaturesLo,
    W.DriverFeaturesHi,
    W.DeviceFeaturesSel,
    W.DriverFeaturesSel,
    W.QueueSel,
    W.ShmSel,
    W.NotifyMask,
    W.QueueChangedMask,
  ]) {
    Atomics.store(state, w, 0);
  }
  for (let w = 0; w < CONFIG_MAX / 32; w++) Atomics.store(state, W.ConfigDirty + w, 0);
  for (const view of queues) {
    invalidateQueue(view);
    for (let i: number = Q.Num; i < QUEUE_WORDS; i++) if (i !== Q.Epoch) Atomics.store(view, i, 0);
    // QueueNum's reset value is QueueNumMax, as drivers that skip writing it expect.
    Atomics.store(view, Q.Num, Atomics.load(view, Q.NumMax));
  }
  configBytes(state, CONFIG_BYTE).set(configBytes(state, CONFIG_DEFAULT_BYTE));
  Atomics.store(state, W.InterruptStatus, 0);
  Atomics.store(state, W.Status, 0);
}

type Reader = (regs: MmioRegisters) => number;
type Writer = (regs: MmioRegisters, value: number) => void;

/** A register: what it is called and what reading or writing it does. */
interface Register {
  readonly name: string;
  readonly read?: Reader;
  readonly write?: Writer;
}

/** A state word, read as is. */
function word(w: number): Reader {
  return (r) => Atomics.load(r.state, w);
}

/** A queue register of the selected queue; reads 0 when QueueSel names no queue. */
function readQueue(field: number): Reader {
  return (r) => {
    const q = r.selectedQueue();
    return q ? Atomics.load(q, field) : 0;
  };
}

/** Queue address/size registers: writable only while the queue is not ready (§4.2.3.2). */
function writeQueue(field: number): Writer {
  return (r, value) => {
    const q = r.selectedQueue();
    if (q && Atomics.load(q, Q.Ready) === 0) Atomics.store(q, field, value);
  };
}

/** A 32-bit window onto a 64-bit feature pair, chosen by a select word (§4.2.2). */
function featureWindow(selectWord: number, lo: number, hi: number): Reader {
  return (r) => {
    const sel = Atomics.load(r.state, selectWord);
    return sel === 0 ? Atomics.load(r.state, lo) : sel === 1 ? Atomics.load(r.state, hi) : 0;
  };
}

const REGISTERS: ReadonlyMap<number, Register> = new Map<number, Register>([
  [MmioReg.MagicValue, { name: 'MagicValue', read: () => MMIO_MAGIC }],
  [MmioReg.Version, { name: 'Version', read: () => MMIO_VERSION }],
  [MmioReg.DeviceId, { name: 'DeviceID', read: word(W.DeviceId) }],
  [MmioReg.VendorId, { name: 'VendorID', read: () => MMIO_VENDOR_ID }],
  [
    MmioReg.DeviceFeatures,
    { name: 'DeviceFeatures', read: featureWindow(W.DeviceFeaturesSel, W.DeviceFeaturesLo, W.DeviceFeaturesHi) },
  ],
  [MmioReg.DeviceFeaturesSel, { name: 'DeviceFeaturesSel', write: (r, v) => Atomics.store(r.state, W.DeviceFeaturesSel, v) }],
  [MmioReg.DriverFeatures, { name: 'DriverFeatures', write: (r, v) => r.writeDriverFeatures(v) }],
  [MmioReg.DriverFeaturesSel, { name: 'DriverFeaturesSel', write: (r, v) => Atomics.store(r.state, W.DriverFeaturesSel, v) }],
  [MmioReg.QueueSel, { name: 'QueueSel', write: (r, v) => Atomics.store(r.state, W.QueueSel, v) }],
  [MmioReg.QueueNumMax, { name: 'QueueNumMax', read: readQueue(Q.NumMax) }],
  [MmioReg.QueueNum, { name: 'QueueNum', write: writeQueue(Q.Num) }],
  [MmioReg.QueueReady, { name: 'QueueReady', read: readQueue(Q.Ready), write: (r, v) => r.writeQueueReady(v) }],
  [MmioReg.QueueNotify, { name: 'QueueNotify', write: (r, v) => r.notify(v) }],
  [MmioReg.InterruptStatus, { name: 'InterruptStatus', read: word(W.InterruptStatus) }],
  [MmioReg.InterruptAck, { name: 'InterruptACK', write: (r, v) => void Atomics.and(r.state, W.InterruptStatus, ~v) }],
  [MmioReg.Status, { name: 'Status', read: (r) => Atomics.load(r.state, W.Status) & 0xff, write: (r, v) => r.writeStatus(v) }],
  [MmioReg.QueueDescLow, { name: 'QueueDescLow', write: writeQueue(Q.DescLo) }],
  [MmioReg.QueueDescHigh, { name: 'QueueDescHigh', write: writeQueue(Q.DescHi) }],
  [MmioReg.QueueDriverLow, { name: 'QueueDriverLow', write: writeQueue(Q.DriverLo) }],
  [MmioReg.QueueDriverHigh, { name: 'QueueDriverHigh', write: writeQueue(Q.DriverHi) }],
  [MmioReg.QueueDeviceLow, { name: 'QueueDeviceLow', write: writeQueue(Q.DeviceLo) }],
  [MmioReg.QueueDeviceHigh, { name: 'QueueDeviceHigh', write: writeQueue(Q.DeviceHi) }],
  [MmioReg.ShmSel, { name: 'SHMSel', write: (r, v) => Atomics.store(r.state, W.ShmSel, v) }],
  // No shared memory regions: a length of all ones says so (§4.2.2).
  [MmioReg.ShmLenLow, { name: 'SHMLenLow', read: () => -1 }],
  [MmioReg.ShmLenHigh, { name: 'SHMLenHigh', read: () => -1 }],
  [MmioReg.ShmBaseLow, { name: 'SHMBaseLow', read: () => -1 }],
  [MmioReg.ShmBaseHigh, { name: 'SHMBaseHigh', read: () => -1 }],
  // VIRTIO_F_RING_RESET is not offered: QueueReset reads 0 and ignores writes.
  [MmioReg.QueueReset, { name: 'QueueReset', read: () => 0, write: () => {} }],
  [MmioReg.ConfigGeneration, { name: 'ConfigGeneration', read: word(W.ConfigGeneration) }],
]);

/** Whether `offset` and `width` name a whole access the register file can decode. */
function isAccess(offset: number, width: number): boolean {
  return Number.isInteger(offset) && offset >= 0 && offset < MMIO_WINDOW_SIZE && (width === 1 || width === 2 || width === 4);
}

/**
 * The emulator's side of the register file. Every call is synchronous,
 * returns without waiting for the device, and never throws, whatever the
 * offset, width or value.
 */
export class MmioRegisters {
  readonly state: MmioState;
  readonly #queues: readonly Int32Array[];
  readonly #configView: DataView;
  /** Called after an event was raised; the same-thread host runs the device from here. */
  onDoorbell: (() => void) | null = null;

  constructor(state: MmioState) {
    this.state = state;
    this.#queues = queueViews(state);
    const config = configBytes(state, CONFIG_BYTE);
    this.#configView = new DataView(config.buffer, config.byteOffset, CONFIG_MAX);
  }

  /** Read `width` bytes (1, 2 or 4) at `offset` in the MMIO window. Unsigned result; 0 for anything undecodable. */
  read(offset: number, width: number): number {
    if (!isAccess(offset, width)) return 0;
    if (offset >= MmioReg.Config) return this.#readConfig(offset - MmioReg.Config, width);
    // §4.2.2.2: registers are 32 bits wide and 32-bit aligned; anything else reads 0.
    if (width !== 4 || offset % 4 !== 0) return 0;
    const reg = REGISTERS.get(offset);
    return reg?.read ? reg.read(this) >>> 0 : 0;
  }

  /** Write `width` bytes (1, 2 or 4) at `offset`. Writes to read-only, unknown or undecodable registers are ignored. */
  write(offset: number, value: number, width: number): void {
    if (!isAccess(offset, width)) return;
    if (offset >= MmioReg.Config) {
      this.#writeConfig(offset - MmioReg.Config, value, width);
      return;
    }
    if (width !== 4 || offset % 4 !== 0) return;
    REGISTERS.get(offset)?.write?.(this, value | 0);
  }

  /** The register's name at `offset` (for traces), or undefined. */
  static registerName(offset: number): string | undefined {
    return offset >= MmioReg.Config ? 'Config' : REGISTERS.get(offset)?.name;
  }

  /** The IRQ level: InterruptStatus, non-zero while asserted. */
  get interruptLevel(): number {
    return Atomics.load(this.state, W.InterruptStatus);
  }

  /** The selected queue's words, or null when QueueSel (unsigned) names no queue of this device. */
  selectedQueue(): Int32Array | null {
    const sel = Atomics.load(this.state, W.QueueSel) >>> 0;
    if (sel >= Atomics.load(this.state, W.NumQueues)) return null;
    return this.#queues[sel] ?? null;
  }

  writeDriverFeatures(value: number): void {
    const s = this.state;
    // §3.1.1: features are fixed once FEATURES_OK is set.
    if (Atomics.load(s, W.Status) & (DeviceStatus.FeaturesOk | STATUS_RESET_PENDING)) return;
    const sel = Atomics.load(s, W.DriverFeaturesSel);
    if (sel === 0) Atomics.store(s, W.DriverFeaturesLo, value);
    else if (sel === 1) Atomics.store(s, W.DriverFeaturesHi, value);
  }

  notify(queue: number): void {
    const s = this.state;
    // §4.2.3.3: the value written is the queue index (no NOTIFICATION_DATA).
    const q = queue >>> 0;
    if (q >= Atomics.load(s, W.NumQueues) || q >= MMIO_MAX_QUEUES) return;
    Atomics.add(s, W.NotifyCount, 1);
    Atomics.or(s, W.NotifyMask, 1 << q);
    this.#ring(MmioEvent.Notify);
  }

  /**
   * QueueReady (§4.2.2): 1 snapshots the geometry and enables the queue, 0
   * disables it; either reads back at once. After DRIVER_OK the device is
   * told, and starts serving the new rings or stops touching the old ones.
   */
  writeQueueReady(value: number): void {
    const q = this.selectedQueue();
    if (!q || (value !== 0 && value !== 1)) return;
    const ready = Atomics.load(q, Q.Ready);
    if (value === ready) return;
    // Odd epoch while the snapshot changes: the device retries its read.
    Atomics.add(q, Q.Epoch, 1);
    if (value === 1) {
      Atomics.store(q, Q.SnapNum, Atomics.load(q, Q.Num));
      for (const [from, to] of SNAPSHOT_FIELDS) Atomics.store(q, to, Atomics.load(q, from));
    }
    Atomics.store(q, Q.Ready, value);
    Atomics.add(q, Q.Epoch, 1);
    if (Atomics.load(this.state, W.Status) & DeviceStatus.DriverOk) {
      Atomics.or(this.state, W.QueueChangedMask, 1 << this.#queues.indexOf(q));
      this.#ring(MmioEvent.Queue);
    }
  }

  /**
   * Status (§2.1, §4.2.2): 0 resets; any other value adds its status bits
   * (bits above 7 are reserved and ignored, the driver never clears a bit,
   * §2.1.1, and never sets DEVICE_NEEDS_RESET). FEATURES_OK stays clear when
   * the device cannot accept the driver's features (§3.1.1).
   */
  writeStatus(value: number): void {
    const s = this.state;
    if (value === 0) {
      this.#reset();
      return;
    }
    const bits = value & DRIVER_STATUS_BITS;
    if (bits === 0) return;
    for (;;) {
      const old = Atomics.load(s, W.Status);
      // A reset is pending: the driver must wait for Status to read 0 before
      // writing it again (§2.4.2). Ignore until then.
      if (old & STATUS_RESET_PENDING) return;
      let next = old | bits;
      if (next & DeviceStatus.FeaturesOk && !(old & DeviceStatus.FeaturesOk) && !this.#featuresAcceptable()) {
        // §2.2.2 / §3.1.1: a subset the device cannot accept leaves FEATURES_OK
        // clear; the driver reads it back and gives up.
        next &= ~DeviceStatus.FeaturesOk;
      }
      if (next === old) return;
      // A compare-exchange, not a store: the device may set DEVICE_NEEDS_RESET
      // concurrently, and that bit must not be lost.
      if (Atomics.compareExchange(s, W.Status, old, next) !== old) continue;
      const edges = next & ~old;
      if (edges & DeviceStatus.FeaturesOk) this.#showNegotiatedConfig();
      if (edges & (DeviceStatus.FeaturesOk | DeviceStatus.DriverOk)) this.#ring(MmioEvent.Status);
      return;
    }
  }

  /** FEATURES_OK was accepted: show the config the device means for these features, at once. */
  #showNegotiatedConfig(): void {
    const s = this.state;
    const bits = maskBits(Atomics.load(s, W.ConfigFeatureBitsLo), Atomics.load(s, W.ConfigFeatureBitsHi));
    if (bits.length === 0) return;
    const index = negotiatedImageIndex(bits, Atomics.load(s, W.DriverFeaturesLo), Atomics.load(s, W.DriverFeaturesHi));
    configBytes(s, CONFIG_BYTE).set(configBytes(s, CONFIG_NEGOTIATED_BYTE + index * CONFIG_MAX));
  }

  #featuresAcceptable(): boolean {
    const s = this.state;
    const lo = Atomics.load(s, W.DriverFeaturesLo);
    const hi = Atomics.load(s, W.DriverFeaturesHi);
    const devLo = Atomics.load(s, W.DeviceFeaturesLo);
    const devHi = Atomics.load(s, W.DeviceFeaturesHi);
    if ((lo & ~devLo) !== 0 || (hi & ~devHi) !== 0) return false;
    // This is a modern-only device: VIRTIO_F_VERSION_1 must be accepted (§6.1).
    return (hi & (1 << Number(VirtioFeature.Version1 - 32n))) !== 0;
  }

  #reset(): void {
    const s = this.state;
    for (;;) {
      const status = Atomics.load(s, W.Status);
      if (status & STATUS_RESET_PENDING) return;
      // Already reset as the driver sees it: nothing runs (the device is
      // inactive, or drops its state on the Reset event before anything
      // else), so only the registers written since need clearing.
      if (status === 0 || Atomics.compareExchange(s, W.Activity, Activity.Idle, Activity.Resetting) === Activity.Idle) {
        const held = status !== 0;
        // The device is idle (or inactive): nothing touches guest memory
        // while we reset, and it drops its state on the event.
        resetRegisters(s, this.#queues);
        if (held) Atomics.store(s, W.Activity, Activity.Idle);
        this.#ring(MmioEvent.Reset);
        return;
      }
      // Busy: the device resets the registers once it has dropped its work;
      // Status reads its old, non-zero bits until then.
      if (Atomics.compareExchange(s, W.Status, status, status | STATUS_RESET_PENDING) !== status) continue;
      this.#ring(MmioEvent.ResetRequest);
      return;
    }
  }

  #ring(event: number): void {
    ringDoorbell(this.state, event);
    this.onDoorbell?.();
  }

  #configAccess(offset: number, width: number): boolean {
    const size = Atomics.load(this.state, W.ConfigSize);
    return offset + width <= size && offset % width === 0;
  }

  #readConfig(offset: number, width: number): number {
    if (!this.#configAccess(offset, width)) return 0;
    const v = this.#configView;
    return width === 1 ? v.getUint8(offset) : width === 2 ? v.getUint16(offset, true) : v.getUint32(offset, true);
  }

  #writeConfig(offset: number, value: number, width: number): void {
    if (!this.#configAccess(offset, width)) return;
    // §3.1.1: device-specific setup comes after FEATURES_OK; before it the
    // device does not yet know what the fields mean (block: CONFIG_WCE).
    const status = Atomics.load(this.state, W.Status);
    if (!(status & DeviceStatus.FeaturesOk) || status & STATUS_RESET_PENDING) return;
    // The device decides which bytes are writable: it sees the dirty bytes on
    // its next poll and publishes its own view back, undoing read-only ones.
    const v = this.#configView;
    if (width === 1) v.setUint8(offset, value);
    else if (width === 2) v.setUint16(offset, value, true);
    else v.setUint32(offset, value, true);
    for (let i = offset; i < offset + width; i++) Atomics.or(this.state, W.ConfigDirty + (i >>> 5), 1 << (i & 31));
    this.#ring(MmioEvent.Config);
  }
}

const SNAPSHOT_FIELDS: ReadonlyArray<readonly [number, number]> = [
  [Q.DescLo, Q.SnapDescLo],
  [Q.DescHi, Q.SnapDescHi],
  [Q.DriverLo, Q.SnapDriverLo],
  [Q.DriverHi, Q.SnapDriverHi],
  [Q.DeviceLo, Q.SnapDeviceLo],
  [Q.DeviceHi, Q.SnapDeviceHi],
];

function u64(lo: number, hi: number): number {
  return (lo >>> 0) + (hi >>> 0) * 0x1_0000_0000;
}

/** Counters the device side exposes. */
export interface MmioStats {
  notifications: number;
  interrupts: number;
}

/** How long the device retries reading a queue snapshot the emulator is rewriting before it tries again later. */
const SNAPSHOT_TRIES = 1000;

/** What reading a queue's registers found. */
type QueueRead =
  | { kind: 'stopped'; epoch: number }
  | { kind: 'ready'; epoch: number; geometry: QueueGeometry }
  | { kind: 'changing' };

/**
 * The device's side of the register file. Call `poll()` whenever the doorbell
 * rang (the worker host after Atomics.wait returns; the same-thread host from
 * `onDoorbell`); it handles every pending event and returns.
 */
export class MmioDevice {
  readonly state: MmioState;
  readonly device: VirtioDevice;
  readonly #queueViews: readonly Int32Array[];
  readonly #config: Uint8Array;
  readonly #configAfterReset: Uint8Array;
  readonly #memory: GuestMemory;
  /**
   * The queues handed to the device at activation, by index. Entries change
   * while active when the driver stops or restarts a queue (QueueReady); the
   * device reads them afresh on every pass.
   */
  readonly #queues: (SplitQueue | null)[] = [];
  /** The epoch each entry of #queues was built at. */
  readonly #builtEpochs: number[] = [];
  /** Whether the driver set DRIVER_OK and the device is serving. */
  #active = false;
  /** FEATURES_OK was seen and the device told of the features. */
  #negotiated = false;
  #driverFeatures = 0n;
  /** Set while a reset waits for in-flight requests to settle. */
  #resetting = false;
  /** True inside poll(), which holds Activity = Busy. */
  #polling = false;
  /** Called when InterruptStatus goes from 0 to non-zero (for emulators that prefer a callback). */
  onInterrupt: ((status: number) => void) | null = null;
  /** Called when the device set DEVICE_NEEDS_RESET (with the reason). */
  onNeedsReset: ((reason: string) => void) | null = null;
  /** Called when an asynchronous reset has finished. */
  onResetDone: (() => void) | null = null;
  /**
   * Called when the device asks to be polled again (a throttled queue's timer,
   * an async completion); defaults to ringing the doorbell.
   */
  onWake: (() => void) | null = null;

  constructor(state: MmioState, device: VirtioDevice, memory: GuestMemory) {
    this.state = state;
    this.device = device;
    this.#memory = memory;
    this.#queueViews = queueViews(state);
    this.#config = configBytes(state, CONFIG_BYTE);
    this.#configAfterReset = configBytes(state, CONFIG_DEFAULT_BYTE);
    if (device.queueCount > MMIO_MAX_QUEUES) throw new RangeError(`at most ${MMIO_MAX_QUEUES} queues`);
    if (device.config.length > CONFIG_MAX) throw new RangeError(`config space larger than ${CONFIG_MAX} bytes`);
    const featureBits = device.configFeatureBits ?? 0n;
    Atomics.store(state, W.ConfigFeatureBitsLo, Number(featureBits & 0xffff_ffffn) | 0);
    Atomics.store(state, W.ConfigFeatureBitsHi, Number(featureBits >> 32n) | 0);
    if (maskBits(Atomics.load(state, W.ConfigFeatureBitsLo), Atomics.load(state, W.ConfigFeatureBitsHi)).length > MAX_CONFIG_FEATURE_BITS) {
      throw new RangeError(`configFeatureBits names more than ${MAX_CONFIG_FEATURE_BITS} bits`);
    }
    Atomics.store(state, W.DeviceId, device.deviceId);
    Atomics.store(state, W.NumQueues, device.queueCount);
    Atomics.store(state, W.DeviceFeaturesLo, Number(device.deviceFeatures & 0xffff_ffffn) | 0);
    Atomics.store(state, W.DeviceFeaturesHi, Number(device.deviceFeatures >> 32n) | 0);
    for (let q = 0; q < device.queueCount; q++) {
      Atomics.store(this.#queueViews[q]!, Q.NumMax, device.queueMaxSize);
      this.#queues.push(null);
      this.#builtEpochs.push(-1);
    }
    this.#publishConfigAfterReset();
    resetRegisters(state, this.#queueViews);
    device.onConfigChange = () => this.configChanged();
  }

  /** Whether the driver set DRIVER_OK and the device is serving. */
  get active(): boolean {
    return this.#active;
  }

  get stats(): MmioStats {
    return {
      notifications: Atomics.load(this.state, W.NotifyCount),
      interrupts: Atomics.load(this.state, W.InterruptCount),
    };
  }

  /** Handle every pending event. Never throws. */
  poll(): void {
    const s = this.state;
    if (this.#polling) return;
    // Enter Busy, unless the emulator thread holds Resetting: that is a
    // handful of stores, so wait it out.
    while (Atomics.compareExchange(s, W.Activity, Activity.Idle, Activity.Busy) === Activity.Resetting) {
      /* spin */
    }
    this.#polling = true;
    try {
      for (;;) {
        const events = Atomics.exchange(s, W.Events, 0);
        if (events === 0) break;
        // Each handler reads the registers as they are now, so coalesced
        // events are handled in the order the driver's setup needs them.
        if (events & MmioEvent.Reset) this.#dropState();
        if (events & MmioEvent.ResetRequest) this.#beginReset();
        if (this.#resetting) continue;
        if (events & MmioEvent.Status) this.#negotiate();
        // After negotiation (what a config write means depends on features),
        // before activation (the device starts with what the driver set up).
        if (events & (MmioEvent.Status | MmioEvent.Config)) this.#syncConfigFromDriver();
        if (events & MmioEvent.Status) this.#maybeActivate();
        if (events & MmioEvent.Queue) this.#queuesChanged();
        if (events & MmioEvent.Notify) {
          const mask = Atomics.exchange(s, W.NotifyMask, 0);
          if (this.#active) {
            for (let q = 0; q < this.device.queueCount; q++) if (mask & (1 << q)) this.device.processQueue(q);
          }
        }
      }
    } catch (err) {
      // The device promises never to throw; if it does, stop serving rather
      // than take the host down.
      this.#needsReset(`device error: ${String(err)}`);
    } finally {
      this.#polling = false;
      this.#settle();
    }
  }

  /** Go Idle when nothing is in flight, so the emulator may reset synchronously. */
  #settle(): void {
    if (this.#polling || this.#resetting || this.device.inFlight > 0) return;
    Atomics.store(this.state, W.Activity, Activity.Idle);
    // Anything raised while we were Busy rang the doorbell: the host polls again.
  }

  /** FEATURES_OK was accepted: tell the device what the driver chose (§3.1.1 step 5). */
  #negotiate(): void {
    if (this.#negotiated) return;
    const s = this.state;
    if (!(Atomics.load(s, W.Status) & DeviceStatus.FeaturesOk)) return;
    this.#driverFeatures =
      BigInt(Atomics.load(s, W.DriverFeaturesLo) >>> 0) | (BigInt(Atomics.load(s, W.DriverFeaturesHi) >>> 0) << 32n);
    this.#negotiated = true;
    this.device.featuresNegotiated?.(this.#driverFeatures);
  }

  #maybeActivate(): void {
    const s = this.state;
    if (this.#active) return;
    const status = Atomics.load(s, W.Status);
    if (!(status & DeviceStatus.DriverOk) || status & (DeviceStatus.DeviceNeedsReset | STATUS_RESET_PENDING)) return;
    if (!(status & DeviceStatus.FeaturesOk) || !this.#negotiated) {
      // §3.1.1: DRIVER_OK comes after an accepted FEATURES_OK. Say so rather
      // than sit there silently.
      this.#needsReset('DRIVER_OK without FEATURES_OK');
      return;
    }
    this.#memory.refresh();
    for (let q = 0; q < this.device.queueCount; q++) {
      const built = this.#buildQueue(q);
      if (built === 'bad') return;
      if (built === 'changing') this.#retryQueueLater(q);
    }
    this.#active = true;
    this.device.activate({
      memory: this.#memory,
      queues: this.#queues,
      driverFeatures: this.#driverFeatures,
      interrupt: () => this.#interrupt(MmioInterrupt.UsedBuffer),
      needsReset: (reason) => this.#needsReset(reason),
      wake: (q) => this.#wake(q),
      settled: () => this.#settle(),
    });
    // Chains made available before DRIVER_OK are served now.
    for (let q = 0; q < this.#queues.length; q++) if (this.#queues[q]) this.device.processQueue(q);
  }

  /** QueueReady changed after DRIVER_OK: stop the old rings, start the new ones. */
  #queuesChanged(): void {
    const mask = Atomics.exchange(this.state, W.QueueChangedMask, 0);
    if (!this.#active) return;
    for (let q = 0; q < this.device.queueCount; q++) {
      if (!(mask & (1 << q))) continue;
      const built = this.#buildQueue(q);
      if (built === 'bad') return;
      if (built === 'changing') this.#retryQueueLater(q);
      else if (built === 'started') this.device.processQueue(q);
    }
  }

  /**
   * Rebuild #queues[q] from the registers when they moved on from what it was
   * built from. 'bad' when the geometry is unusable (DEVICE_NEEDS_RESET is set).
   */
  #buildQueue(q: number): 'started' | 'stopped' | 'unchanged' | 'changing' | 'bad' {
    const read = this.#readQueue(q);
    if (read.kind === 'changing') return 'changing';
    if (read.epoch === this.#builtEpochs[q]) return 'unchanged';
    this.#queues[q] = null;
    this.#builtEpochs[q] = read.epoch;
    if (read.kind === 'stopped') return 'stopped';
    const { geometry } = read;
    // §4.2.2: QueueNum is at most QueueNumMax, a power of two; the rings lie in RAM.
    const bad =
      geometry.size > this.device.queueMaxSize ? 'queue size above QueueNumMax' : checkGeometry(this.#memory, geometry);
    if (bad) {
      this.#needsReset(`queue ${q}: ${bad}`);
      return 'bad';
    }
    const view = this.#queueViews[q]!;
    const epoch = read.epoch;
    this.#queues[q] = new SplitQueue(this.#memory, geometry, {
      eventIdx: hasFeature(this.#driverFeatures, VirtioFeature.RingEventIdx),
      indirect: hasFeature(this.#driverFeatures, VirtioFeature.RingIndirectDesc),
      // §4.2.2.1: nothing touches the rings once the driver stopped the queue
      // or reset the device (both move the epoch on).
      live: () => Atomics.load(view, Q.Epoch) === epoch,
    });
    return 'started';
  }

  /** Read queue q's ready bit and snapshot as one consistent set (the epoch is a sequence lock). */
  #readQueue(q: number): QueueRead {
    const v = this.#queueViews[q]!;
    for (let i = 0; i < SNAPSHOT_TRIES; i++) {
      const epoch = Atomics.load(v, Q.Epoch);
      if (epoch & 1) continue;
      const ready = Atomics.load(v, Q.Ready);
      const geometry: QueueGeometry = {
        size: Atomics.load(v, Q.SnapNum) >>> 0,
        descTable: u64(Atomics.load(v, Q.SnapDescLo), Atomics.load(v, Q.SnapDescHi)),
        availRing: u64(Atomics.load(v, Q.SnapDriverLo), Atomics.load(v, Q.SnapDriverHi)),
        usedRing: u64(Atomics.load(v, Q.SnapDeviceLo), Atomics.load(v, Q.SnapDeviceHi)),
      };
      if (Atomics.load(v, Q.Epoch) !== epoch) continue;
      return ready === 1 ? { kind: 'ready', epoch, geometry } : { kind: 'stopped', epoch };
    }
    return { kind: 'changing' };
  }

  /** The emulator is rewriting queue q right now: look again on a later pass. */
  #retryQueueLater(q: number): void {
    Atomics.or(this.state, W.QueueChangedMask, 1 << q);
    ringDoorbell(this.state, MmioEvent.Queue);
    this.onWake?.();
  }

  /** The device wants queue `q` processed again: go through the doorbell like a notification. */
  #wake(q: number): void {
    Atomics.or(this.state, W.NotifyMask, 1 << q);
    ringDoorbell(this.state, MmioEvent.Notify);
    this.onWake?.();
  }

  #interrupt(bit: number): void {
    const s = this.state;
    Atomics.add(s, W.InterruptCount, 1);
    // The device's writes to guest memory (data, status, used ring) happen
    // before this sequentially consistent RMW; an emulator that sees the bit
    // sees them.
    const before = Atomics.or(s, W.InterruptStatus, bit);
    if (isShared(s.buffer)) Atomics.notify(s, W.InterruptStatus);
    if (before === 0) this.onInterrupt?.(bit);
  }

  #needsReset(reason: string): void {
    const s = this.state;
    // §2.1.2: set DEVICE_NEEDS_RESET and, when DRIVER_OK is set, send a config
    // change notification. Not while reset (Status 0) or resetting: there is
    // no driver to tell.
    let old: number;
    do {
      old = Atomics.load(s, W.Status);
      if ((old & 0xff) === 0 || old & (STATUS_RESET_PENDING | DeviceStatus.DeviceNeedsReset)) return;
    } while (Atomics.compareExchange(s, W.Status, old, old | DeviceStatus.DeviceNeedsReset) !== old);
    this.onNeedsReset?.(reason);
    if (old & DeviceStatus.DriverOk) this.#interrupt(MmioInterrupt.ConfigChange);
  }

  /** The device's config changed (resize): publish it, bump ConfigGeneration, interrupt (§4.2.2). */
  configChanged(): void {
    this.#publishConfigAfterReset();
    this.#publishConfig();
    Atomics.add(this.state, W.ConfigGeneration, 1);
    if (Atomics.load(this.state, W.Status) & DeviceStatus.DriverOk) this.#interrupt(MmioInterrupt.ConfigChange);
  }

  /** Hand the bytes the driver wrote to the device, then publish its view (undoing read-only bytes). */
  #syncConfigFromDriver(): void {
    const cfg = this.device.config;
    for (let w = 0; w < CONFIG_MAX / 32; w++) {
      let dirty = Atomics.exchange(this.state, W.ConfigDirty + w, 0);
      while (dirty !== 0) {
        const bit = 31 - Math.clz32(dirty);
        dirty &= ~(1 << bit);
        const offset = w * 32 + bit;
        if (offset >= cfg.length) continue;
        cfg[offset] = this.#config[offset]!;
        this.device.configWritten(offset, 1);
      }
    }
    this.#publishConfig();
  }

  /**
   * Show the device's config to the driver. Bytes the driver wrote since the
   * last sync keep the driver's value: the next sync hands them over.
   */
  #publishConfig(): void {
    const cfg = this.device.config;
    for (let i = 0; i < cfg.length; i++) {
      if (this.#config[i] === cfg[i]) continue;
      if (Atomics.load(this.state, W.ConfigDirty + (i >>> 5)) & (1 << (i & 31))) continue;
      this.#config[i] = cfg[i]!;
    }
  }

  /**
   * Keep the config as it reads after a reset and after FEATURES_OK, for the
   * emulator thread to show without waiting for the device.
   */
  #publishConfigAfterReset(): void {
    const s = this.state;
    const after = this.device.configAfterReset?.() ?? this.device.config;
    this.#configAfterReset.fill(0);
    this.#configAfterReset.set(after);
    Atomics.store(s, W.ConfigSize, after.length);
    const bits = maskBits(Atomics.load(s, W.ConfigFeatureBitsLo), Atomics.load(s, W.ConfigFeatureBitsHi));
    for (let index = 0; bits.length > 0 && index < 1 << bits.length; index++) {
      let features = 0n;
      for (let i = 0; i < bits.length; i++) if (index & (1 << i)) features |= 1n << BigInt(bits[i]!);
      const image = configBytes(s, CONFIG_NEGOTIATED_BYTE + index * CONFIG_MAX);
      image.fill(0);
      image.set(this.device.configAfterNegotiation?.(features) ?? after);
    }
  }

  /** Forget the driver: nothing of the old setup is served again. */
  #forgetDriver(): void {
    this.#active = false;
    this.#negotiated = false;
    this.#driverFeatures = 0n;
    this.#queues.fill(null);
    this.#builtEpochs.fill(-1);
  }

  /** The emulator already reset the registers (we were idle): forget the driver. */
  #dropState(): void {
    this.#forgetDriver();
    // Nothing is in flight (the emulator found us idle), so this settles at once.
    void this.device.reset();
    this.#publishConfig();
  }

  /** Reset while busy: drop in-flight work, then reset the registers and let Status read 0. */
  #beginReset(): void {
    if (this.#resetting) return;
    this.#forgetDriver();
    this.#resetting = true;
    const finish = (): void => {
      this.#resetting = false;
      // Whatever the driver wrote while the reset was pending goes with it,
      // before Status reads 0 and the driver may write again.
      Atomics.store(this.state, W.Events, 0);
      this.#publishConfig();
      resetRegisters(this.state, this.#queueViews);
      this.#settle();
      this.onResetDone?.();
    };
    this.device.reset().then(finish, finish);
  }
}
