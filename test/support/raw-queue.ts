// A hand-driven queue for tests that need rings a real driver would never
// build: it negotiates like a driver, then lets the test write any
// descriptor, ring entry or index it likes.

import { MemoryBackend } from '../../src/backends/memory.ts';
import type { BlockBackend } from '../../src/backends/backend.ts';
import { createSameThreadDisk, type SameThreadDisk } from '../../src/host/same-thread.ts';
import type { BlockDeviceOptions } from '../../src/block/device.ts';
import { DeviceStatus } from '../../src/virtio/device.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';
import { MmioReg } from '../../src/virtio/mmio.ts';

export const RAW_RAM_BASE = 0x4000_0000;
export const RAW_RAM_BYTES = 4 << 20;

export interface RawQueueOptions extends BlockDeviceOptions {
  size?: number;
  /** Guest RAM size (default 4 MiB; at least 128 KiB). */
  ramBytes?: number;
  features?: bigint;
  backend?: BlockBackend;
  diskBytes?: number;
}

export class RawQueue {
  readonly ram: ArrayBuffer;
  readonly bytes: Uint8Array;
  readonly memory: GuestMemory;
  readonly backend: BlockBackend;
  readonly disk: SameThreadDisk;
  readonly size: number;
  // Room for queues up to 256 entries.
  readonly desc = RAW_RAM_BASE + 0x1000;
  readonly avail = RAW_RAM_BASE + 0x2000;
  readonly used = RAW_RAM_BASE + 0x3000;
  /** Free guest RAM for buffers and tables, up to the end of RAM. */
  readonly heap = RAW_RAM_BASE + 0x10000;
  availIdx = 0;
  lastUsed = 0;

  constructor(options: RawQueueOptions = {}) {
    const { size, features, backend, diskBytes, ramBytes, ...deviceOptions } = options;
    this.ram = new ArrayBuffer(ramBytes ?? RAW_RAM_BYTES);
    this.bytes = new Uint8Array(this.ram);
    this.memory = new GuestMemory([{ guestAddress: RAW_RAM_BASE, source: this.ram }]);
    this.size = size ?? 16;
    this.backend = backend ?? new MemoryBackend(diskBytes ?? 1 << 20);
    this.disk = createSameThreadDisk({ memory: this.memory, backend: this.backend, ...deviceOptions });
    const m = this.disk.mmio;
    m.write(MmioReg.Status, 0, 4);
    m.write(MmioReg.Status, DeviceStatus.Acknowledge | DeviceStatus.Driver, 4);
    const f = features ?? this.offered();
    m.write(MmioReg.DriverFeaturesSel, 0, 4);
    m.write(MmioReg.DriverFeatures, Number(f & 0xffff_ffffn), 4);
    m.write(MmioReg.DriverFeaturesSel, 1, 4);
    m.write(MmioReg.DriverFeatures, Number(f >> 32n), 4);
    m.write(MmioReg.Status, DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk, 4);
    m.write(MmioReg.QueueSel, 0, 4);
    m.write(MmioReg.QueueNum, this.size, 4);
    m.write(MmioReg.QueueDescLow, this.desc, 4);
    m.write(MmioReg.QueueDriverLow, this.avail, 4);
    m.write(MmioReg.QueueDeviceLow, this.used, 4);
    m.write(MmioReg.QueueReady, 1, 4);
  }

  offered(): bigint {
    const m = this.disk.mmio;
    m.write(MmioReg.DeviceFeaturesSel, 0, 4);
    const lo = BigInt(m.read(MmioReg.DeviceFeatures, 4) >>> 0);
    m.write(MmioReg.DeviceFeaturesSel, 1, 4);
    return lo | (BigInt(m.read(MmioReg.DeviceFeatures, 4) >>> 0) << 32n);
  }

  driverOk(): void {
    this.disk.mmio.write(MmioReg.Status, DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk | DeviceStatus.DriverOk, 4);
  }

  get status(): number {
    return this.disk.mmio.read(MmioReg.Status, 4);
  }

  /** Write descriptor `i` of the table at `table` (default: the queue's). */
  setDesc(i: number, addr: number, len: number, flags: number, next = 0, table = this.desc): void {
    const m = this.memory;
    m.writeU64(table + 16 * i, addr);
    m.writeU32(table + 16 * i + 8, len);
    m.writeU16(table + 16 * i + 12, flags);
    m.writeU16(table + 16 * i + 14, next);
  }

  /** Write a block request header at `addr`. */
  header(addr: number, type: number, sector: number, ioprio = 0): void {
    this.memory.writeU32(addr, type);
    this.memory.writeU32(addr + 4, ioprio);
    this.memory.writeU64(addr + 8, sector);
  }

  /** Put `head` in the avail ring and publish the index (no notify). */
  offer(head: number): void {
    this.memory.writeU16(this.avail + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.memory.writeU16(this.avail + 2, this.availIdx);
  }

  notify(): void {
    this.disk.mmio.write(MmioReg.QueueNotify, 0, 4);
  }

  usedIdx(): number {
    return this.memory.readU16(this.used + 2);
  }

  /** Used elements published since the last call. */
  takeUsed(): Array<{ id: number; len: number }> {
    const out = [];
    const idx = this.usedIdx();
    while (this.lastUsed !== idx) {
      const e = this.used + 4 + 8 * (this.lastUsed % this.size);
      out.push({ id: this.memory.readU32(e), len: this.memory.readU32(e + 4) });
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }
}
