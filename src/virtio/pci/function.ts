// A modern virtio-pci function (virtio 1.2 §4.1) for an emulator to put on
// its PCI bus: configuration space (config-space.ts), BAR0's four regions
// decoded onto the transport core (common config through common-cfg.ts's
// table, notify, ISR, device config), and an INTx line. Like
// `MmioRegisters`, it is what the emulator calls, synchronously, on its own
// thread; it never waits for the device and never throws, whatever the
// offset, size or value. The device side is the core's `TransportDevice`
// over the same state, on this thread (same-thread host) or in a worker.
//
// Interrupts (§4.1.4.5): the line's level is "ISR non-zero" (and the
// command register's InterruptDisable clear). The device raises it by
// setting bits in the core's interrupt word; a read of the ISR byte returns
// them and clears the word in one exchange, which lowers the line. The
// function reports every change of level it sees to `onInterruptLevel`:
// itself after an ISR read, a reset or a command write, and from
// `updateInterruptLevel()`, which the host calls when the device raised an
// interrupt (an emulator that polls may call it at its check points).
//
// Accesses to BAR0 (§4.1.3.1): common config fields at their natural width
// (64-bit queue addresses as 32-bit halves); device config at 1, 2 or 4
// bytes, naturally aligned, inside the config; ISR as one byte; a notify
// write of any width at queue q's address (q × multiplier) notifies q — the
// address, not the value, names the queue, as QEMU decodes it, and a
// spurious notification is harmless. Anything else reads 0 and writes
// nothing.

import type { TransportState } from '../transport/layout.ts';
import { TransportRegisters } from '../transport/registers.ts';
import { commonField } from './common-cfg.ts';
import { PciConfigSpace } from './config-space.ts';
import {
  BarRegion,
  COMMON_CFG_BYTES,
  DEFAULT_BAR_SIZE,
  DEVICE_CFG_BYTES,
  MIN_BAR_SIZE,
  NOTIFY_OFF_MULTIPLIER,
  PciCommand,
} from './layout.ts';
import { MAX_QUEUES } from '../transport/layout.ts';

export interface VirtioPciOptions {
  /** BAR0's size in bytes: a power of two ≥ 16 KiB (default 16 KiB; v86 maps memory in 128 KiB units). */
  barSize?: number;
  /** Subsystem vendor ID (default 0x1AF4). */
  subsystemVendorId?: number;
  /** Subsystem device ID (default 0x1100; §4.1.2.1 wants ≥ 0x40). */
  subsystemId?: number;
  /** 24-bit class code (default 0x018000, mass storage / other). */
  classCode?: number;
}

/** What a guest-side PCI driver (or an emulator's bus) calls: configuration space and BAR0. */
export interface PciFunctionAccessor {
  readConfig(offset: number, size: number): number;
  writeConfig(offset: number, size: number, value: number): void;
  readBar(offset: number, size: number): number;
  writeBar(offset: number, size: number, value: number): void;
}

export class VirtioPciError extends Error {
  override readonly name = 'VirtioPciError';
}

function checkBarSize(size: number): number {
  // PCI 3.0 §6.2.5.1: a BAR's size is a power of two; ours must hold the four regions.
  if (!Number.isInteger(size) || size < MIN_BAR_SIZE || size > 0x8000_0000 || (size & (size - 1)) !== 0) {
    throw new VirtioPciError(`barSize must be a power of two from ${MIN_BAR_SIZE} to 2 GiB, got ${size}`);
  }
  return size;
}

export class VirtioPciFunction implements PciFunctionAccessor {
  readonly core: TransportRegisters;
  /** BAR0's size in bytes. */
  readonly barSize: number;
  readonly #config: PciConfigSpace;
  /** The level last reported to onInterruptLevel. */
  #reportedLevel = false;
  /** Called whenever the INTx line's level changes: raise the line on true, lower it on false. */
  onInterruptLevel: ((asserted: boolean) => void) | null = null;

  /** Over the state a `TransportDevice` was built on (it fixes the device ID the PCI device ID derives from). */
  constructor(state: TransportState, options: VirtioPciOptions = {}) {
    this.core = new TransportRegisters(state);
    this.barSize = checkBarSize(options.barSize ?? DEFAULT_BAR_SIZE);
    if (this.core.deviceId === 0) throw new VirtioPciError('the transport state has no device yet: build its TransportDevice first');
    this.#config = new PciConfigSpace(
      {
        virtioDeviceId: this.core.deviceId,
        barSize: this.barSize,
        subsystemVendorId: options.subsystemVendorId,
        subsystemId: options.subsystemId,
        classCode: options.classCode,
      },
      {
        interruptPending: () => this.core.interruptStatus !== 0,
        readBar: (offset, size) => this.readBar(offset, size),
        writeBar: (offset, size, value) => this.writeBar(offset, size, value),
        commandWritten: () => this.updateInterruptLevel(),
      },
    );
  }

  get state(): TransportState {
    return this.core.state;
  }

  /** Called after an event was raised; the same-thread host runs (or schedules) the device from here. */
  get onDoorbell(): (() => void) | null {
    return this.core.onDoorbell;
  }

  set onDoorbell(callback: (() => void) | null) {
    this.core.onDoorbell = callback;
  }

  // Configuration space -------------------------------------------------------

  /** The 256 bytes of configuration space the function starts with (a copy). */
  configSpaceImage(): Uint8Array {
    return this.#config.image();
  }

  /** Read `size` bytes (1, 2, 4; naturally aligned) of configuration space. Unsigned; 0 for anything undecodable. */
  readConfig(offset: number, size: number): number {
    return this.#config.read(offset, size);
  }

  /** Write configuration space; only writable bits change (command, BAR0, interrupt line, the PCI_CFG window). */
  writeConfig(offset: number, size: number, value: number): void {
    this.#config.write(offset, size, value);
  }

  /** BAR0's base address as the guest programmed it in configuration space (0 until then). */
  get barAddress(): number {
    return this.#config.barAddress;
  }

  /** The command register (an emulator may honour MemorySpace before decoding BAR0). */
  get command(): number {
    return this.#config.command;
  }

  // BAR0 ------------------------------------------------------------------------

  /** Read `size` bytes at `offset` inside BAR0. Unsigned; 0 for anything undecodable. */
  readBar(offset: number, size: number): number {
    if (!this.#inBar(offset, size)) return 0;
    const core = this.core;
    if (offset < BarRegion.CommonCfg + COMMON_CFG_BYTES) {
      const field = commonField(offset, size);
      return field ? field.read(core) >>> 0 : 0;
    }
    if (offset === BarRegion.IsrCfg && size === 1) {
      // §4.1.4.5.1: reading the ISR resets it to 0 and lowers the line.
      const isr = core.takeInterruptStatus();
      this.updateInterruptLevel();
      return isr & 0xff;
    }
    if (offset >= BarRegion.DeviceCfg && offset < BarRegion.DeviceCfg + DEVICE_CFG_BYTES) {
      return core.readConfig(offset - BarRegion.DeviceCfg, size) >>> 0;
    }
    return 0;
  }

  /** Write `size` bytes at `offset` inside BAR0. Read-only, unknown or undecodable accesses are ignored. */
  writeBar(offset: number, size: number, value: number): void {
    if (!this.#inBar(offset, size)) return;
    const core = this.core;
    if (offset < BarRegion.CommonCfg + COMMON_CFG_BYTES) {
      const field = commonField(offset, size);
      if (!field?.write) return;
      field.write(core, size === 4 ? value | 0 : value & ((1 << (8 * size)) - 1));
      // A reset clears the interrupt word: the line drops with it.
      this.updateInterruptLevel();
      return;
    }
    if (offset >= BarRegion.DeviceCfg && offset < BarRegion.DeviceCfg + DEVICE_CFG_BYTES) {
      core.writeConfig(offset - BarRegion.DeviceCfg, value, size);
      return;
    }
    const notifyAt = offset - BarRegion.NotifyCfg;
    if (notifyAt >= 0 && notifyAt < MAX_QUEUES * NOTIFY_OFF_MULTIPLIER && notifyAt % NOTIFY_OFF_MULTIPLIER === 0) {
      // §4.1.4.4: queue_notify_off is the queue index, so the address names the queue.
      core.notify(notifyAt / NOTIFY_OFF_MULTIPLIER);
    }
  }

  #inBar(offset: number, size: number): boolean {
    return Number.isInteger(offset) && offset >= 0 && (size === 1 || size === 2 || size === 4) && offset + size <= this.barSize;
  }

  // Interrupts ------------------------------------------------------------------

  /** The INTx line: asserted while the ISR is non-zero and the command register does not disable INTx. */
  get interruptLevel(): boolean {
    return this.core.interruptStatus !== 0 && (this.#config.command & PciCommand.InterruptDisable) === 0;
  }

  /** Look at the level now and tell `onInterruptLevel` if it changed since the last report. */
  updateInterruptLevel(): void {
    const level = this.interruptLevel;
    if (level === this.#reportedLevel) return;
    this.#reportedLevel = level;
    this.onInterruptLevel?.(level);
  }
}
