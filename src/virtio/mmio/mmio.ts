// The virtio-mmio v2 register file (virtio 1.2 §4.2.2): a register table that
// decodes the emulator's accesses onto the transport core
// (transport/registers.ts), plus what is MMIO's own — MagicValue, Version,
// VendorID, the shared-memory registers, and the notify and interrupt
// registers' offsets. Everything else (status, features, queues, reset,
// config) means the same on every transport and lives in the core.
//
// `MmioRegisters` is what the emulator calls, synchronously, on its own
// thread: `read(offset, width)` / `write(offset, value, width)`. It never
// waits for the device and never throws, whatever the offset, width or value;
// the device side is the core's `TransportDevice` (exported here as
// `MmioDevice` too) over the same shared state.
//
// Interrupts: InterruptStatus is also the IRQ level. Non-zero means the line
// is asserted; the emulator polls it or Atomics.waits for it to leave 0; an
// InterruptACK clears bits atomically, so a bit the device sets concurrently
// is never lost.

import {
  InterruptBit,
  MAX_QUEUES,
  TRANSPORT_STATE_BYTES,
  TransportWord,
  createTransportState,
  type TransportState,
} from '../transport/layout.ts';
import { QueueAddress, TransportRegisters } from '../transport/registers.ts';
import { TransportDevice, type TransportStats } from '../transport/device.ts';

/** MagicValue: "virt" in little-endian (§4.2.2). */
export const MMIO_MAGIC = 0x74726976;
/** Version 2 is the non-legacy interface (§4.2.2). */
export const MMIO_VERSION = 2;
/** This project's VendorID ("VBWB"). */
export const MMIO_VENDOR_ID = 0x42574256;
/** Size of the MMIO window an emulator maps (registers + config space). */
export const MMIO_WINDOW_SIZE = 0x200;
/** Most virtqueues a device may have in this register file. */
export const MMIO_MAX_QUEUES = MAX_QUEUES;

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
export const MmioInterrupt = InterruptBit;

// The shared state is the transport core's; these are its MMIO-facing names.
/** The shared block: create it with `createMmioState`, send it to the other thread as is. */
export type MmioState = TransportState;
/** Bytes of shared memory one register file needs. */
export const MMIO_STATE_BYTES = TRANSPORT_STATE_BYTES;
/** Indices of the state words other threads wait on (`Doorbell`, `InterruptStatus`). */
export const MmioWord = TransportWord;
/** Allocate register-file state; shared when `shared` (default: when SharedArrayBuffer exists). */
export const createMmioState = createTransportState;
/** The device's side of the register file: the transport core's device. */
export { TransportDevice as MmioDevice, type TransportStats as MmioStats };

/**
 * What an emulator calls for every access to the window: `MmioRegisters`
 * on either thread, or anything that forwards to one.
 */
export interface MmioAccessor {
  read(offset: number, width: number): number;
  write(offset: number, value: number, width: number): void;
}

type Reader = (core: TransportRegisters) => number;
type Writer = (core: TransportRegisters, value: number) => void;

/** A register: what it is called and what reading or writing it does; no `write` means read-only. */
interface Register {
  readonly name: string;
  readonly read?: Reader;
  readonly write?: Writer;
}

const address = (field: QueueAddress): Writer => (c, v) => c.setQueueAddress(field, v);

const REGISTERS: ReadonlyMap<number, Register> = new Map<number, Register>([
  [MmioReg.MagicValue, { name: 'MagicValue', read: () => MMIO_MAGIC }],
  [MmioReg.Version, { name: 'Version', read: () => MMIO_VERSION }],
  [MmioReg.DeviceId, { name: 'DeviceID', read: (c) => c.deviceId }],
  [MmioReg.VendorId, { name: 'VendorID', read: () => MMIO_VENDOR_ID }],
  [MmioReg.DeviceFeatures, { name: 'DeviceFeatures', read: (c) => c.deviceFeaturesWindow }],
  [MmioReg.DeviceFeaturesSel, { name: 'DeviceFeaturesSel', write: (c, v) => c.setDeviceFeaturesSelect(v) }],
  // Write-only on MMIO (§4.2.2); PCI reads it back.
  [MmioReg.DriverFeatures, { name: 'DriverFeatures', write: (c, v) => c.writeDriverFeatures(v) }],
  [MmioReg.DriverFeaturesSel, { name: 'DriverFeaturesSel', write: (c, v) => c.setDriverFeaturesSelect(v) }],
  [MmioReg.QueueSel, { name: 'QueueSel', write: (c, v) => c.selectQueue(v) }],
  [MmioReg.QueueNumMax, { name: 'QueueNumMax', read: (c) => c.queueMaxSize }],
  [MmioReg.QueueNum, { name: 'QueueNum', write: (c, v) => c.setQueueSize(v) }],
  [MmioReg.QueueReady, { name: 'QueueReady', read: (c) => c.queueEnabled, write: (c, v) => c.setQueueEnabled(v) }],
  // §4.2.3.3: the value written is the queue index (no NOTIFICATION_DATA).
  [MmioReg.QueueNotify, { name: 'QueueNotify', write: (c, v) => c.notify(v) }],
  [MmioReg.InterruptStatus, { name: 'InterruptStatus', read: (c) => c.interruptStatus }],
  [MmioReg.InterruptAck, { name: 'InterruptACK', write: (c, v) => c.acknowledgeInterrupt(v) }],
  [MmioReg.Status, { name: 'Status', read: (c) => c.status, write: (c, v) => c.writeStatus(v) }],
  [MmioReg.QueueDescLow, { name: 'QueueDescLow', write: address(QueueAddress.DescLo) }],
  [MmioReg.QueueDescHigh, { name: 'QueueDescHigh', write: address(QueueAddress.DescHi) }],
  [MmioReg.QueueDriverLow, { name: 'QueueDriverLow', write: address(QueueAddress.DriverLo) }],
  [MmioReg.QueueDriverHigh, { name: 'QueueDriverHigh', write: address(QueueAddress.DriverHi) }],
  [MmioReg.QueueDeviceLow, { name: 'QueueDeviceLow', write: address(QueueAddress.DeviceLo) }],
  [MmioReg.QueueDeviceHigh, { name: 'QueueDeviceHigh', write: address(QueueAddress.DeviceHi) }],
  // No shared memory regions: SHMSel is accepted and every length reads as all ones (§4.2.2).
  [MmioReg.ShmSel, { name: 'SHMSel', write: () => {} }],
  [MmioReg.ShmLenLow, { name: 'SHMLenLow', read: () => -1 }],
  [MmioReg.ShmLenHigh, { name: 'SHMLenHigh', read: () => -1 }],
  [MmioReg.ShmBaseLow, { name: 'SHMBaseLow', read: () => -1 }],
  [MmioReg.ShmBaseHigh, { name: 'SHMBaseHigh', read: () => -1 }],
  // VIRTIO_F_RING_RESET is not offered: QueueReset reads 0 and ignores writes.
  [MmioReg.QueueReset, { name: 'QueueReset', read: () => 0, write: () => {} }],
  [MmioReg.ConfigGeneration, { name: 'ConfigGeneration', read: (c) => c.configGeneration }],
]);

/** Whether `offset` and `width` name an access inside the window. */
function inWindow(offset: number, width: number): boolean {
  return Number.isInteger(offset) && offset >= 0 && offset < MMIO_WINDOW_SIZE && (width === 1 || width === 2 || width === 4);
}

/**
 * The emulator's side of the register file. Every call is synchronous,
 * returns without waiting for the device, and never throws.
 */
export class MmioRegisters implements MmioAccessor {
  readonly core: TransportRegisters;

  constructor(state: MmioState) {
    this.core = new TransportRegisters(state);
  }

  get state(): MmioState {
    return this.core.state;
  }

  /** Called after an event was raised; the same-thread host runs the device from here. */
  get onDoorbell(): (() => void) | null {
    return this.core.onDoorbell;
  }

  set onDoorbell(callback: (() => void) | null) {
    this.core.onDoorbell = callback;
  }

  /** Read `width` bytes (1, 2 or 4) at `offset` in the MMIO window. Unsigned result; 0 for anything undecodable. */
  read(offset: number, width: number): number {
    if (!inWindow(offset, width)) return 0;
    if (offset >= MmioReg.Config) return this.core.readConfig(offset - MmioReg.Config, width);
    // §4.2.2.2: registers are 32 bits wide and 32-bit aligned; anything else reads 0.
    if (width !== 4 || offset % 4 !== 0) return 0;
    const reg = REGISTERS.get(offset);
    return reg?.read ? reg.read(this.core) >>> 0 : 0;
  }

  /** Write `width` bytes (1, 2 or 4) at `offset`. Writes to read-only, unknown or undecodable registers are ignored. */
  write(offset: number, value: number, width: number): void {
    if (!inWindow(offset, width)) return;
    if (offset >= MmioReg.Config) {
      this.core.writeConfig(offset - MmioReg.Config, value, width);
      return;
    }
    if (width !== 4 || offset % 4 !== 0) return;
    REGISTERS.get(offset)?.write?.(this.core, value | 0);
  }

  /** The register's name at `offset` (for traces), or undefined. */
  static registerName(offset: number): string | undefined {
    return offset >= MmioReg.Config ? 'Config' : REGISTERS.get(offset)?.name;
  }

  /** The IRQ level: InterruptStatus, non-zero while asserted. */
  get interruptLevel(): number {
    return this.core.interruptStatus;
  }
}
