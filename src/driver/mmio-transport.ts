// The virtio-mmio version 2 side of `DriverTransport` (§4.2.2), over the
// emulator's register accessor: each operation is the register accesses
// Linux's virtio_mmio makes for it, one per method, so the driver's
// sequence on the bus is the one a Linux guest produces. 64-bit values
// (features, ring addresses) go through the 32-bit selector or low/high
// register pairs, low half first; config reads of 8 bytes are two 32-bit
// reads inside one ConfigGeneration check.
//
// The transport holds no state of its own besides the accessor: the
// device's registers are the only truth, and a register file shared with
// another thread (the worker host) may change between any two calls.

import { MMIO_MAGIC, MMIO_VERSION, MmioReg, type MmioAccessor } from '../virtio/mmio/mmio.ts';

export type { MmioAccessor } from '../virtio/mmio/mmio.ts';
import { highU32, joinU64, lowU32 } from '../virtio/u64.ts';
import { DriverError } from './errors.ts';
import { readConsistently, waitForResetDone, type DriverTransport, type RingAddresses } from './transport.ts';



export class MmioTransport implements DriverTransport {
  readonly mmio: MmioAccessor;

  constructor(mmio: MmioAccessor) {
    this.mmio = mmio;
  }

  probe(): number {
    const m = this.mmio;
    if (m.read(MmioReg.MagicValue, 4) !== MMIO_MAGIC) throw new DriverError('no virtio-mmio device (bad magic)');
    if (m.read(MmioReg.Version, 4) !== MMIO_VERSION) throw new DriverError('not a virtio-mmio version 2 device');
    return m.read(MmioReg.DeviceId, 4);
  }

  async reset(): Promise<void> {
    this.mmio.write(MmioReg.Status, 0, 4);
    await waitForResetDone(() => this.mmio.read(MmioReg.Status, 4));
  }

  getStatus(): number {
    return this.mmio.read(MmioReg.Status, 4);
  }

  setStatus(status: number): void {
    this.mmio.write(MmioReg.Status, status, 4);
  }

  readDeviceFeatures(): bigint {
    const m = this.mmio;
    m.write(MmioReg.DeviceFeaturesSel, 0, 4);
    const lo = BigInt(m.read(MmioReg.DeviceFeatures, 4) >>> 0);
    m.write(MmioReg.DeviceFeaturesSel, 1, 4);
    const hi = BigInt(m.read(MmioReg.DeviceFeatures, 4) >>> 0);
    return lo | (hi << 32n);
  }

  writeDriverFeatures(features: bigint): void {
    const m = this.mmio;
    m.write(MmioReg.DriverFeaturesSel, 0, 4);
    m.write(MmioReg.DriverFeatures, Number(features & 0xffff_ffffn), 4);
    m.write(MmioReg.DriverFeaturesSel, 1, 4);
    m.write(MmioReg.DriverFeatures, Number(features >> 32n), 4);
  }

  selectQueue(index: number): void {
    this.mmio.write(MmioReg.QueueSel, index, 4);
  }

  queueEnabled(): boolean {
    return this.mmio.read(MmioReg.QueueReady, 4) !== 0;
  }

  queueMaxSize(): number {
    return this.mmio.read(MmioReg.QueueNumMax, 4);
  }

  setQueueSize(size: number): void {
    this.mmio.write(MmioReg.QueueNum, size, 4);
  }

  setQueueAddresses(rings: RingAddresses): void {
    this.#writeAddress(MmioReg.QueueDescLow, rings.desc);
    this.#writeAddress(MmioReg.QueueDriverLow, rings.avail);
    this.#writeAddress(MmioReg.QueueDeviceLow, rings.used);
  }

  enableQueue(): void {
    this.mmio.write(MmioReg.QueueReady, 1, 4);
  }

  notify(index: number): void {
    this.mmio.write(MmioReg.QueueNotify, index, 4);
  }

  /** As Linux's vm_interrupt: read InterruptStatus, write the bits seen to InterruptACK. */
  takeInterrupt(): number {
    const bits = this.mmio.read(MmioReg.InterruptStatus, 4);
    if (bits) this.mmio.write(MmioReg.InterruptAck, bits, 4);
    return bits;
  }

  readConfig(offset: number, width: 1 | 2 | 4 | 8): number {
    const m = this.mmio;
    const at = MmioReg.Config + offset;
    return readConsistently(
      () => m.read(MmioReg.ConfigGeneration, 4),
      () => (width === 8 ? joinU64(m.read(at, 4), m.read(at + 4, 4)) : m.read(at, width)),
    );
  }

  writeConfig(offset: number, value: number, width: 1 | 2 | 4): void {
    this.mmio.write(MmioReg.Config + offset, value, width);
  }

  /** A 64-bit guest-physical address into a Low/High register pair. */
  #writeAddress(low: number, addr: number): void {
    this.mmio.write(low, lowU32(addr), 4);
    this.mmio.write(low + 4, highU32(addr), 4);
  }
}
