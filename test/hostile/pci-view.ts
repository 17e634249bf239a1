// The raw guest over virtio-pci: RawGuest speaks virtio-mmio register names,
// and this view carries each of them to the PCI function's field that means
// the same thing, at the field's natural width, so every hand-written case
// (and the runner's reset-and-serve check) drives a PCI disk as it drives an
// MMIO one. Where PCI differs, the view does what a PCI driver does:
// - InterruptStatus reads the ISR byte, which clears it, and keeps the
//   causes latched until InterruptACK (Linux's vp_interrupt reads once and
//   handles all of them);
// - QueueNumMax reads queue_size (PCI has no separate maximum: it reads the
//   maximum until the driver writes a size);
// - QueueNotify writes the named queue's notify address (when the queue
//   exists; the address names the queue on PCI);
// - MagicValue/Version answer for a modern virtio-pci function (vendor 0x1AF4,
//   device 0x1040 + ID), so the runner's identity check covers PCI too.
// Offsets the view does not know, and any width but 4 below the config, go
// nowhere: PCI's own register cases (cases-pci.ts) use the function itself.

import { MMIO_MAGIC, MmioReg } from '../../src/virtio/mmio/mmio.ts';
import type { PciFunctionAccessor } from '../../src/virtio/pci/function.ts';
import {
  BarRegion,
  CommonCfg,
  NOTIFY_OFF_MULTIPLIER,
  PCI_VENDOR_ID_VIRTIO,
  PciHeader,
  VIRTIO_PCI_DEVICE_ID_BASE,
} from '../../src/virtio/pci/layout.ts';
import type { Mmio } from './target.ts';

/** MMIO register → the common-config field (offset, width) that means the same. */
const COMMON: ReadonlyMap<number, readonly [number, 1 | 2 | 4]> = new Map<number, readonly [number, 1 | 2 | 4]>([
  [MmioReg.DeviceFeatures, [CommonCfg.DeviceFeature, 4]],
  [MmioReg.DeviceFeaturesSel, [CommonCfg.DeviceFeatureSelect, 4]],
  [MmioReg.DriverFeatures, [CommonCfg.DriverFeature, 4]],
  [MmioReg.DriverFeaturesSel, [CommonCfg.DriverFeatureSelect, 4]],
  [MmioReg.QueueSel, [CommonCfg.QueueSelect, 2]],
  [MmioReg.QueueNumMax, [CommonCfg.QueueSize, 2]],
  [MmioReg.QueueNum, [CommonCfg.QueueSize, 2]],
  [MmioReg.QueueReady, [CommonCfg.QueueEnable, 2]],
  [MmioReg.Status, [CommonCfg.DeviceStatus, 1]],
  [MmioReg.QueueDescLow, [CommonCfg.QueueDescLo, 4]],
  [MmioReg.QueueDescHigh, [CommonCfg.QueueDescHi, 4]],
  [MmioReg.QueueDriverLow, [CommonCfg.QueueDriverLo, 4]],
  [MmioReg.QueueDriverHigh, [CommonCfg.QueueDriverHi, 4]],
  [MmioReg.QueueDeviceLow, [CommonCfg.QueueDeviceLo, 4]],
  [MmioReg.QueueDeviceHigh, [CommonCfg.QueueDeviceHi, 4]],
  [MmioReg.ConfigGeneration, [CommonCfg.ConfigGeneration, 1]],
]);

export class PciAsMmio implements Mmio {
  readonly pci: PciFunctionAccessor;
  /** ISR causes read but not yet acknowledged. */
  #latched = 0;

  constructor(pci: PciFunctionAccessor) {
    this.pci = pci;
  }

  read(offset: number, width: number): number {
    const p = this.pci;
    if (offset >= MmioReg.Config) return p.readBar(BarRegion.DeviceCfg + offset - MmioReg.Config, width);
    if (width !== 4) return 0;
    switch (offset) {
      case MmioReg.MagicValue: {
        const device = p.readConfig(PciHeader.DeviceId, 2) - VIRTIO_PCI_DEVICE_ID_BASE;
        return p.readConfig(PciHeader.VendorId, 2) === PCI_VENDOR_ID_VIRTIO && device > 0 && device < 0x40 ? MMIO_MAGIC : 0;
      }
      case MmioReg.Version:
        return 2;
      case MmioReg.DeviceId:
        return p.readConfig(PciHeader.DeviceId, 2) - VIRTIO_PCI_DEVICE_ID_BASE;
      case MmioReg.VendorId:
        return p.readConfig(PciHeader.SubsystemVendorId, 2);
      case MmioReg.InterruptStatus:
        this.#latched |= p.readBar(BarRegion.IsrCfg, 1);
        return this.#latched;
    }
    const field = COMMON.get(offset);
    return field ? p.readBar(BarRegion.CommonCfg + field[0], field[1]) : 0;
  }

  write(offset: number, value: number, width: number): void {
    const p = this.pci;
    if (offset >= MmioReg.Config) {
      p.writeBar(BarRegion.DeviceCfg + offset - MmioReg.Config, width, value);
      return;
    }
    if (width !== 4) return;
    if (offset === MmioReg.InterruptAck) {
      this.#latched &= ~value;
      return;
    }
    if (offset === MmioReg.QueueNotify) {
      const queue = value >>> 0;
      const queues = p.readBar(BarRegion.CommonCfg + CommonCfg.NumQueues, 2);
      if (queue < queues) p.writeBar(BarRegion.NotifyCfg + queue * NOTIFY_OFF_MULTIPLIER, 2, queue);
      return;
    }
    if (offset === MmioReg.Status && value === 0) this.#latched = 0;
    const field = COMMON.get(offset);
    if (!field) return;
    const [at, size] = field;
    let v = value >>> 0;
    // A 32-bit value that does not fit the PCI field: a selector still selects no queue (the largest
    // 16-bit one), anything else is dropped rather than truncated into a value it is not (Status 0x100
    // must not reset).
    if (size !== 4 && v >= 2 ** (8 * size)) {
      if (offset !== MmioReg.QueueSel) return;
      v = 0xffff;
    }
    p.writeBar(BarRegion.CommonCfg + at, size, v);
  }
}

/** Runs `fn`, recording anything it throws as a host error, and returns `fallback` then. */
export type Guard = <T>(what: string, fn: () => T, fallback: T) => T;

/** The function's four accessors, each through `guard` (an exception is the host's failure, not the case's). */
export function guardedPci(pci: PciFunctionAccessor, guard: Guard): PciFunctionAccessor {
  return {
    readConfig: (o, s) => guard(`pci.readConfig(${o}, ${s})`, () => pci.readConfig(o, s), 0),
    writeConfig: (o, s, v) => guard(`pci.writeConfig(${o}, ${s}, ${v})`, () => pci.writeConfig(o, s, v), undefined),
    readBar: (o, s) => guard(`pci.readBar(${o}, ${s})`, () => pci.readBar(o, s), 0),
    writeBar: (o, s, v) => guard(`pci.writeBar(${o}, ${s}, ${v})`, () => pci.writeBar(o, s, v), undefined),
  };
}
