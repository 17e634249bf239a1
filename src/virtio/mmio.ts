// The virtio-mmio v2 register file (virtio 1.2 §4.2.2), split in two halves
// that share one block of memory (`MmioState`, an Int32Array over a
// SharedArrayBuffer or an ArrayBuffer):
//
// - `MmioRegisters` is what the emulator calls, synchronously, on its own
//   thread: `read(offset, width)` / `write(offset, value, width)`. It never
//   waits for the device. Writes the device must act on (QueueNotify, Status,
//   reset) set an event bit and ring the doorbell word.
// - `MmioDevice` is the device side: it consumes events, snapshots queue
//   geometry at DRIVER_OK, drives a `VirtioDevice`, and raises interrupts.
//
// Both may run on one thread (same-thread host: the doorbell is a callback)
// or on two (worker host: the doorbell is Atomics.notify on the state).
//
// Interrupts: InterruptStatus is also the IRQ level. Non-zero means the line
// is asserted; the emulator polls it or Atomics.waits for it to leave 0; an
// InterruptACK clears bits atomically, so a bit the device sets concurrently
// is never lost.
//
// Reset (Status ← 0): when the device is idle (no batch running, nothing in
// flight) the emulator thread resets the registers at once, so a driver that
// does not wait (Linux's virtio_mmio) sees 0 immediately. When the device is
// busy, Status keeps reading its old, non-zero value until the device has
// dropped its in-flight work; no guest memory is written after Status reads 0.

import { DeviceStatus, VirtioFeature, type VirtioDevice } from './device.ts';
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

/** Event bits the register side raises for the device side. */
export const MmioEvent = {
  /** One or more QueueNotify writes; which queues is in the notify mask word. */
  Notify: 1,
  /** Status changed in a way the device acts on (DRIVER_OK). */
  Status: 2,
  /** The emulator reset the registers (the device was idle): drop device state. */
  Reset: 4,
  /** A reset is waiting for the device to drop its in-flight work and reset the registers. */
  ResetRequest: 8,
  /** The driver wrote config space; the dirty bytes are in the config-dirty words. */
  Config: 16,
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

// Word indices into the state (Int32). Queue q's registers start at
// QUEUE_BASE + q * QUEUE_WORDS. The config space is bytes from CONFIG_BYTE.
const W = {
  DeviceFeaturesLo: 0,
  DeviceFeaturesHi: 1,
  DriverFeaturesLo: 2,
  DriverFeaturesHi: 3,
  DeviceFeaturesSel: 4,
  DriverFeaturesSel: 5,
  QueueSel: 6,
  Status: 7,
  InterruptStatus: 8,
  ConfigGeneration: 9,
  /** Incremented on every event; the device worker Atomics.waits on it. */
  Doorbell: 10,
  /** MmioEvent bits not yet consumed. */
  Events: 11,
  /** Bit q: queue q was notified. */
  NotifyMask: 12,
  /** Activity value. */
  Activity: 13,
  NumQueues: 14,
  DeviceId: 15,
  ConfigSize: 16,
  ShmSel: 17,
  /** Number of notifications seen (statistics). */
  NotifyCount: 18,
  /** Number of interrupts raised (statistics). */
  InterruptCount: 19,
  /** 1 while a reset waits for the device (Status keeps its old value; writes to it are ignored). */
  ResetPending: 20,
  /** Bitmap of config bytes the driver wrote (8 words: 256 bytes). */
  ConfigDirty: 24,
} as const;
const QUEUE_BASE = 32;
const QUEUE_WORDS = 16;
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
  // Snapshot taken when the driver writes QueueReady = 1: later writes to the
  // registers above cannot move a live queue.
  SnapNum: 9,
  SnapDescLo: 10,
  SnapDescHi: 11,
  SnapDriverLo: 12,
  SnapDriverHi: 13,
  SnapDeviceLo: 14,
  SnapDeviceHi: 15,
} as const;
const CONFIG_BYTE = (QUEUE_BASE + MMIO_MAX_QUEUES * QUEUE_WORDS) * 4;
const CONFIG_MAX = MMIO_WINDOW_SIZE - MmioReg.Config;
/** Bytes of shared memory one register file needs. */
export const MMIO_STATE_BYTES = CONFIG_BYTE + CONFIG_MAX;
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

/** Wake the device side: count the event and notify a waiting worker. */
function ring(state: MmioState, event: number): void {
  Atomics.or(state, W.Events, event);
  Atomics.add(state, W.Doorbell, 1);
  // Waking a worker blocked in Atomics.wait on the doorbell. Harmless (returns
  // 0) on a non-shared buffer, where nobody can be waiting.
  if (isShared(state.buffer)) Atomics.notify(state, W.Doorbell);
}

function configBytes(state: MmioState): Uint8Array {
  return new Uint8Array(state.buffer, state.byteOffset + CONFIG_BYTE, CONFIG_MAX);
}

/** Clear every driver-visible register (§4.2.2.1: InterruptStatus and QueueReady among them). */
function resetRegisters(state: MmioState): void {
  for (const w of [
    W.DriverFeaturesLo,
    W.DriverFeaturesHi,
    W.DeviceFeaturesSel,
    W.DriverFeaturesSel,
    W.QueueSel,
    W.ShmSel,
    W.NotifyMask,
  ]) {
    Atomics.store(state, w, 0);
  }
  for (let q = 0; q < MMIO_MAX_QUEUES; q++) {
    const base = QUEUE_BASE + q * QUEUE_WORDS;
    const numMax = Atomics.load(state, base + Q.NumMax);
    for (let i = 1; i < QUEUE_WORDS; i++) Atomics.store(state, base + i, 0);
    // QueueNum's reset value is QueueNumMax, as drivers that skip writing it expect.
    Atomics.store(state, base + Q.Num, numMax);
  }
  Atomics.store(state, W.InterruptStatus, 0);
  // Status last: a driver polling for 0 sees every other register reset.
  Atomics.store(state, W.Status, 0);
}

type Reader = (state: MmioState) => number;
type Writer = (regs: MmioRegisters, value: number) => void;

/** A register: what it is called and what reading or writing it does. */
interface Register {
  readonly name: string;
  readonly read?: Reader;
  readonly write?: Writer;
}

function queueWord(state: MmioState, field: number): number {
  const sel = Atomics.load(state, W.QueueSel);
  if (sel >= Atomics.load(state, W.NumQueues)) return -1;
  return QUEUE_BASE + sel * QUEUE_WORDS + field;
}

function readQueue(field: number): Reader {
  return (state) => {
    const w = queueWord(state, field);
    return w < 0 ? 0 : Atomics.load(state, w);
  };
}

/** Queue address/size registers: writable only while the queue is not ready (§4.2.3.2). */
function writeQueue(field: number): Writer {
  return (regs, value) => {
    const state = regs.state;
    const w = queueWord(state, field);
    if (w < 0) return;
    if (Atomics.load(state, w - field + Q.Ready) !== 0) return;
    Atomics.store(state, w, value);
  };
}

const REGISTERS: ReadonlyMap<number, Register> = new Map<number, Register>([
  [MmioReg.MagicValue, { name: 'MagicValue', read: () => MMIO_MAGIC }],
  [MmioReg.Version, { name: 'Version', read: () => MMIO_VERSION }],
  [MmioReg.DeviceId, { name: 'DeviceID', read: (s) => Atomics.load(s, W.DeviceId) }],
  [MmioReg.VendorId, { name: 'VendorID', read: () => MMIO_VENDOR_ID }],
  [
    MmioReg.DeviceFeatures,
    {
      name: 'DeviceFeatures',
      read: (s) => {
        const sel = Atomics.load(s, W.DeviceFeaturesSel);
        return sel === 0 ? Atomics.load(s, W.DeviceFeaturesLo) : sel === 1 ? Atomics.load(s, W.DeviceFeaturesHi) : 0;
      },
    },
  ],
  [MmioReg.DeviceFeaturesSel, { name: 'DeviceFeaturesSel', write: (r, v) => Atomics.store(r.state, W.DeviceFeaturesSel, v) }],
  [
    MmioReg.DriverFeatures,
    {
      name: 'DriverFeatures',
      write: (r, v) => {
        const s = r.state;
        // §3.1.1: features are fixed once FEATURES_OK is set.
        if (Atomics.load(s, W.Status) & DeviceStatus.FeaturesOk) return;
        const sel = Atomics.load(s, W.DriverFeaturesSel);
        if (sel === 0) Atomics.store(s, W.DriverFeaturesLo, v);
        else if (sel === 1) Atomics.store(s, W.DriverFeaturesHi, v);
      },
    },
  ],
  [MmioReg.DriverFeaturesSel, { name: 'DriverFeaturesSel', write: (r, v) => Atomics.store(r.state, W.DriverFeaturesSel, v) }],
  [MmioReg.QueueSel, { name: 'QueueSel', write: (r, v) => Atomics.store(r.state, W.QueueSel, v) }],
  [MmioReg.QueueNumMax, { name: 'QueueNumMax', read: readQueue(Q.NumMax) }],
  [MmioReg.QueueNum, { name: 'QueueNum', write: writeQueue(Q.Num) }],
  [MmioReg.QueueReady, { name: 'QueueReady', read: readQueue(Q.Ready), write: (r, v) => r.writeQueueReady(v) }],
  [MmioReg.QueueNotify, { name: 'QueueNotify', write: (r, v) => r.notify(v) }],
  [MmioReg.InterruptStatus, { name: 'InterruptStatus', read: (s) => Atomics.load(s, W.InterruptStatus) }],
  [MmioReg.InterruptAck, { name: 'InterruptACK', write: (r, v) => void Atomics.and(r.state, W.InterruptStatus, ~v) }],
  [MmioReg.Status, { name: 'Status', read: (s) => Atomics.load(s, W.Status), write: (r, v) => r.writeStatus(v) }],
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
  [MmioReg.ConfigGeneration, { name: 'ConfigGeneration', read: (s) => Atomics.load(s, W.ConfigGeneration) }],
]);

/**
 * The emulator's side of the register file. Every call is synchronous and
 * returns without waiting for the device.
 */
export class MmioRegisters {
  readonly state: MmioState;
  readonly #config: Uint8Array;
  readonly #configView: DataView;
  /** Called after an event was raised; the same-thread host runs the device from here. */
  onDoorbell: (() => void) | null = null;

  constructor(state: MmioState) {
    this.state = state;
    this.#config = configBytes(state);
    this.#configView = new DataView(this.#config.buffer, this.#config.byteOffset, CONFIG_MAX);
  }

  /** Read `width` bytes (1, 2 or 4) at `offset` in the MMIO window. Unsigned result. */
  read(offset: number, width: number): number {
    if (offset >= MmioReg.Config) return this.#readConfig(offset - MmioReg.Config, width);
    // §4.2.2.2: registers are 32 bits wide and 32-bit aligned; anything else reads 0.
    if (width !== 4 || offset % 4 !== 0) return 0;
    const reg = REGISTERS.get(offset);
    return reg?.read ? reg.read(this.state) >>> 0 : 0;
  }

  /** Write `width` bytes (1, 2 or 4) at `offset`. Writes to read-only or unknown registers are ignored. */
  write(offset: number, value: number, width: number): void {
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

  notify(queue: number): void {
    const s = this.state;
    // §4.2.3.3: the value written is the queue index (no NOTIFICATION_DATA).
    if (queue >>> 0 >= Atomics.load(s, W.NumQueues)) return;
    Atomics.add(s, W.NotifyCount, 1);
    Atomics.or(s, W.NotifyMask, 1 << queue);
    this.#ring(MmioEvent.Notify);
  }

  writeQueueReady(value: number): void {
    const s = this.state;
    const w = queueWord(s, Q.Ready);
    if (w < 0) return;
    const base = w - Q.Ready;
    if (value & 1) {
      if (Atomics.load(s, w) !== 0) return;
      // Snapshot the geometry: later register writes cannot move a live queue.
      Atomics.store(s, base + Q.SnapNum, Atomics.load(s, base + Q.Num));
      for (const [from, to] of SNAPSHOT_FIELDS) Atomics.store(s, base + to, Atomics.load(s, base + from));
      Atomics.store(s, w, 1);
    } else {
      Atomics.store(s, w, 0);
    }
  }

  writeStatus(value: number): void {
    const s = this.state;
    value &= 0xff;
    if (value === 0) {
      this.#reset();
      return;
    }
    const old = Atomics.load(s, W.Status);
    // A reset is pending (the device is dropping work): the driver must wait
    // for Status to read 0 before writing it again (§2.4.2). Ignore until then.
    if (Atomics.load(s, W.ResetPending)) return;
    let next = value | (old & DeviceStatus.DeviceNeedsReset);
    if (next & DeviceStatus.FeaturesOk && !(old & DeviceStatus.FeaturesOk) && !this.#featuresAcceptable()) {
      // §2.2.2 / §3.1.1: a subset the device cannot accept leaves FEATURES_OK
      // clear; the driver reads it back and gives up.
      next &= ~DeviceStatus.FeaturesOk;
    }
    Atomics.store(s, W.Status, next);
    if (next & DeviceStatus.DriverOk && !(old & DeviceStatus.DriverOk)) this.#ring(MmioEvent.Status);
  }

  #featuresAcceptable(): boolean {
    const s = this.state;
    const lo = Atomics.load(s, W.DriverFeaturesLo);
    const hi = Atomics.load(s, W.DriverFeaturesHi);
    const devLo = Atomics.load(s, W.DeviceFeaturesLo);
    const devHi = Atomics.load(s, W.DeviceFeaturesHi);
    if ((lo & ~devLo) !== 0 || (hi & ~devHi) !== 0) return false;
    // This is a modern-only device: VIRTIO_F_VERSION_1 must be accepted.
    return (hi & (1 << Number(VirtioFeature.Version1 - 32n))) !== 0;
  }

  #reset(): void {
    const s = this.state;
    if (Atomics.load(s, W.ResetPending)) return;
    if (Atomics.compareExchange(s, W.Activity, Activity.Idle, Activity.Resetting) === Activity.Idle) {
      // The device is idle: nothing touches guest memory while we hold
      // Resetting, so reset now; the device drops its state on the event.
      resetRegisters(s);
      Atomics.store(s, W.Activity, Activity.Idle);
      this.#ring(MmioEvent.Reset);
      return;
    }
    // Busy: the device resets the registers once it has dropped its work;
    // Status reads non-zero until then.
    Atomics.store(s, W.ResetPending, 1);
    this.#ring(MmioEvent.ResetRequest);
  }

  #ring(event: number): void {
    ring(this.state, event);
    this.onDoorbell?.();
  }

  #readConfig(offset: number, width: number): number {
    const size = Atomics.load(this.state, W.ConfigSize);
    if (offset + width > size || (width !== 1 && width !== 2 && width !== 4) || offset % width !== 0) return 0;
    const v = this.#configView;
    return width === 1 ? v.getUint8(offset) : width === 2 ? v.getUint16(offset, true) : v.getUint32(offset, true);
  }

  #writeConfig(offset: number, value: number, width: number): void {
    const size = Atomics.load(this.state, W.ConfigSize);
    if (offset + width > size || (width !== 1 && width !== 2 && width !== 4) || offset % width !== 0) return;
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

/**
 * The device's side of the register file. Call `poll()` whenever the doorbell
 * rang (the worker host after Atomics.wait returns; the same-thread host from
 * `onDoorbell`); it handles every pending event and returns.
 */
export class MmioDevice {
  readonly state: MmioState;
  readonly device: VirtioDevice;
  readonly #config: Uint8Array;
  #memory: GuestMemory;
  #active = false;
  /** Set while an asynchronous reset waits for in-flight requests to settle. */
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
    this.#config = configBytes(state);
    if (device.queueCount > MMIO_MAX_QUEUES) throw new RangeError(`at most ${MMIO_MAX_QUEUES} queues`);
    if (device.config.length > CONFIG_MAX) throw new RangeError(`config space larger than ${CONFIG_MAX} bytes`);
    Atomics.store(state, W.DeviceId, device.deviceId);
    Atomics.store(state, W.NumQueues, device.queueCount);
    Atomics.store(state, W.DeviceFeaturesLo, Number(device.deviceFeatures & 0xffff_ffffn) | 0);
    Atomics.store(state, W.DeviceFeaturesHi, Number(device.deviceFeatures >> 32n) | 0);
    for (let q = 0; q < device.queueCount; q++) {
      Atomics.store(state, QUEUE_BASE + q * QUEUE_WORDS + Q.NumMax, device.queueMaxSize);
    }
    this.#publishConfig();
    resetRegisters(state);
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

  /** The doorbell counter: the worker sleeps until it changes. */
  get doorbell(): number {
    return Atomics.load(this.state, W.Doorbell);
  }

  /** Replace the guest memory (the emulator remapped RAM). Takes effect at the next DRIVER_OK. */
  setMemory(memory: GuestMemory): void {
    this.#memory = memory;
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
        if (events & MmioEvent.Reset) this.#dropState();
        if (events & MmioEvent.ResetRequest) this.#beginReset();
        if (this.#resetting) continue;
        if (events & MmioEvent.Config) this.#syncConfigFromDriver();
        if (events & MmioEvent.Status) this.#maybeActivate();
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

  #maybeActivate(): void {
    const s = this.state;
    if (this.#active) return;
    const status = Atomics.load(s, W.Status);
    if (!(status & DeviceStatus.DriverOk) || !(status & DeviceStatus.FeaturesOk)) return;
    if (status & DeviceStatus.DeviceNeedsReset) return;
    const driverFeatures =
      BigInt(Atomics.load(s, W.DriverFeaturesLo) >>> 0) | (BigInt(Atomics.load(s, W.DriverFeaturesHi) >>> 0) << 32n);
    const features = {
      eventIdx: ((driverFeatures >> VirtioFeature.RingEventIdx) & 1n) === 1n,
      indirect: ((driverFeatures >> VirtioFeature.RingIndirectDesc) & 1n) === 1n,
    };
    const memory = this.#memory;
    memory.refresh();
    const queues: (SplitQueue | null)[] = [];
    for (let q = 0; q < this.device.queueCount; q++) {
      const base = QUEUE_BASE + q * QUEUE_WORDS;
      if (Atomics.load(s, base + Q.Ready) === 0) {
        queues.push(null);
        continue;
      }
      const geometry: QueueGeometry = {
        size: Atomics.load(s, base + Q.SnapNum),
        descTable: u64(Atomics.load(s, base + Q.SnapDescLo), Atomics.load(s, base + Q.SnapDescHi)),
        availRing: u64(Atomics.load(s, base + Q.SnapDriverLo), Atomics.load(s, base + Q.SnapDriverHi)),
        usedRing: u64(Atomics.load(s, base + Q.SnapDeviceLo), Atomics.load(s, base + Q.SnapDeviceHi)),
      };
      const bad =
        geometry.size > this.device.queueMaxSize ? 'queue size above QueueNumMax' : checkGeometry(memory, geometry);
      if (bad) {
        this.#needsReset(`queue ${q}: ${bad}`);
        return;
      }
      queues.push(new SplitQueue(memory, geometry, features));
    }
    this.#active = true;
    this.device.activate({
      memory,
      queues,
      driverFeatures,
      interrupt: () => this.#interrupt(MmioInterrupt.UsedBuffer),
      needsReset: (reason) => this.#needsReset(reason),
      wake: (q) => this.#wake(q),
      settled: () => this.#settle(),
    });
    // Chains made available before DRIVER_OK are served now.
    for (let q = 0; q < queues.length; q++) if (queues[q]) this.device.processQueue(q);
  }

  /** The device wants queue `q` processed again: go through the doorbell like a notification. */
  #wake(q: number): void {
    Atomics.or(this.state, W.NotifyMask, 1 << q);
    ring(this.state, MmioEvent.Notify);
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
    // §2.1.2: set DEVICE_NEEDS_RESET and, when DRIVER_OK is set, send a config change notification.
    const old = Atomics.or(s, W.Status, DeviceStatus.DeviceNeedsReset);
    if (!(old & DeviceStatus.DeviceNeedsReset)) {
      this.onNeedsReset?.(reason);
      if (old & DeviceStatus.DriverOk) this.#interrupt(MmioInterrupt.ConfigChange);
    }
  }

  /** The device's config changed (resize): publish it, bump ConfigGeneration, interrupt (§4.2.2). */
  configChanged(): void {
    this.#publishConfig();
    Atomics.add(this.state, W.ConfigGeneration, 1);
    if (Atomics.load(this.state, W.Status) & DeviceStatus.DriverOk) this.#interrupt(MmioInterrupt.ConfigChange);
  }

  /** Hand the bytes the driver wrote to the device, then publish its view (undoing read-only bytes). */
  #syncConfigFromDriver(): void {
    const cfg = this.device.config;
    for (let word = 0; word < CONFIG_MAX / 32; word++) {
      let dirty = Atomics.exchange(this.state, W.ConfigDirty + word, 0);
      while (dirty !== 0) {
        const bit = 31 - Math.clz32(dirty);
        dirty &= ~(1 << bit);
        const offset = word * 32 + bit;
        if (offset >= cfg.length) continue;
        cfg[offset] = this.#config[offset]!;
        this.device.configWritten(offset, 1);
      }
    }
    this.#config.set(cfg);
  }

  #publishConfig(): void {
    this.#config.fill(0);
    this.#config.set(this.device.config);
    Atomics.store(this.state, W.ConfigSize, this.device.config.length);
  }

  /** The emulator already reset the registers (we were idle): forget the driver. */
  #dropState(): void {
    this.#active = false;
    // Nothing is in flight (the emulator found us idle), so this settles at once.
    void this.device.reset();
  }

  /** Reset while busy: drop in-flight work, then reset the registers and let Status read 0. */
  #beginReset(): void {
    if (this.#resetting) return;
    this.#active = false;
    this.#resetting = true;
    const finish = (): void => {
      this.#resetting = false;
      this.#publishConfig();
      for (let w = 0; w < CONFIG_MAX / 32; w++) Atomics.store(this.state, W.ConfigDirty + w, 0);
      // Notifications that raced the reset go with it.
      Atomics.and(this.state, W.Events, ~MmioEvent.Notify);
      resetRegisters(this.state);
      Atomics.store(this.state, W.ResetPending, 0);
      this.#settle();
      this.onResetDone?.();
    };
    this.device.reset().then(finish, finish);
  }
}
