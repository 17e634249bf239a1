// The virtio-pci (modern, virtio 1.2 §4.1) side of `DriverTransport`, over a
// PCI function's configuration space and BAR0, done the way Linux's
// virtio_pci_modern_dev does it: check the IDs (0x1AF4, 0x1040 + device
// ID), walk the capability list from the Status bit and the capability
// pointer (bounded, as the PCI core's 48-entry TTL bounds it), take the first
// vendor capability of each virtio type that lies in a memory BAR, check
// each region against the BAR's size found by sizing it (all ones written,
// the mask read back, the value restored), then enable memory decoding and
// bus mastering. After that, every operation is the common-config, ISR,
// notify or device-config access Linux makes for it.
//
// The accessor's BAR offsets are relative to BAR0, so no bus address is
// needed to reach the registers; an unassigned BAR0 gets `barAddress` as a
// firmware would give it. What the driver caches, as Linux does: the region
// offsets found at probe and each queue's notify offset, read at setup
// (queue_notify_off × notify_off_multiplier).

import {
  CapField,
  CommonCfg,
  PCI_CAP_ID_VENDOR,
  PCI_VENDOR_ID_VIRTIO,
  PciCommand,
  PciHeader,
  PciStatus,
  VIRTIO_PCI_DEVICE_ID_BASE,
  VirtioPciCap,
} from '../virtio/pci/layout.ts';
import type { PciFunctionAccessor } from '../virtio/pci/function.ts';
import { highU32, joinU64, lowU32 } from '../virtio/u64.ts';
import { DriverError } from './errors.ts';
import { readConsistently, waitForResetDone, type DriverTransport, type RingAddresses } from './transport.ts';

export type { PciFunctionAccessor } from '../virtio/pci/function.ts';

/** The PCI core's bound on a capability walk (Linux PCI_FIND_CAP_TTL). */
const CAP_WALK_TTL = 48;
/** Modern device IDs: 0x1040 + a virtio device ID below 0x40 (§4.1.2). */
const MODERN_DEVICE_ID_END = 0x107f;

/** Where one capability's region lies in BAR0. */
export interface PciRegion {
  offset: number;
  length: number;
}

/** The regions found at probe, and the notify multiplier. */
export interface PciLayout {
  common: PciRegion;
  notify: PciRegion;
  isr: PciRegion;
  device: PciRegion | null;
  notifyOffMultiplier: number;
  /** BAR0's size as sizing found it. */
  barSize: number;
}

export interface PciTransportOptions {
  /** The bus address to give BAR0 when it reads 0 (unassigned). Default 0xFE00_0000. */
  barAddress?: number;
}

export class PciTransport implements DriverTransport {
  readonly pci: PciFunctionAccessor;
  readonly #barAddress: number;
  #layout: PciLayout | null = null;
  #selected = 0;
  /** Each queue's notify offset in BAR0, as set up. */
  readonly #notifyAt = new Map<number, number>();

  constructor(pci: PciFunctionAccessor, options: PciTransportOptions = {}) {
    this.pci = pci;
    this.#barAddress = options.barAddress ?? 0xfe00_0000;
  }

  /** The layout probe found (throws before probe). */
  get layout(): PciLayout {
    if (!this.#layout) throw new DriverError('probe() first');
    return this.#layout;
  }

  probe(): number {
    const p = this.pci;
    if (p.readConfig(PciHeader.VendorId, 2) !== PCI_VENDOR_ID_VIRTIO) throw new DriverError('no virtio-pci device (vendor ID)');
    const deviceId = p.readConfig(PciHeader.DeviceId, 2);
    // Transitional IDs (0x1000–0x103f) need the legacy interface, which this driver does not speak.
    if (deviceId < VIRTIO_PCI_DEVICE_ID_BASE || deviceId > MODERN_DEVICE_ID_END) {
      throw new DriverError(`not a modern virtio-pci device (device ID 0x${deviceId.toString(16)})`);
    }
    const barSize = this.#sizeBar0();
    const find = (type: number, minLength: number): PciRegion | null => this.#findCap(type, minLength, barSize);
    const common = find(VirtioPciCap.CommonCfg, CommonCfg.QueueDeviceHi + 4);
    const notify = find(VirtioPciCap.NotifyCfg, 2);
    const isr = find(VirtioPciCap.IsrCfg, 1);
    if (!common || !notify || !isr) throw new DriverError('missing virtio-pci capabilities (common, notify or ISR)');
    const device = find(VirtioPciCap.DeviceCfg, 0);
    const notifyCap = this.#capAt(VirtioPciCap.NotifyCfg)!;
    const notifyOffMultiplier = p.readConfig(notifyCap + CapField.NotifyOffMultiplier, 4);
    this.#layout = { common, notify, isr, device, notifyOffMultiplier, barSize };
    // pci_enable_device + pci_set_master.
    const command = p.readConfig(PciHeader.Command, 2);
    p.writeConfig(PciHeader.Command, 2, command | PciCommand.MemorySpace | PciCommand.BusMaster);
    return deviceId - VIRTIO_PCI_DEVICE_ID_BASE;
  }

  /** BAR0 must be a 32-bit memory BAR; returns its size, and assigns it an address if it has none. */
  #sizeBar0(): number {
    const p = this.pci;
    const original = p.readConfig(PciHeader.Bar0, 4);
    if (original & 1) throw new DriverError('BAR0 is an I/O BAR');
    if (((original >>> 1) & 3) !== 0) throw new DriverError('BAR0 is not a 32-bit memory BAR');
    p.writeConfig(PciHeader.Bar0, 4, 0xffff_ffff);
    const mask = (p.readConfig(PciHeader.Bar0, 4) & ~0xf) >>> 0;
    p.writeConfig(PciHeader.Bar0, 4, original);
    if (mask === 0) throw new DriverError('BAR0 is not implemented');
    const size = (~mask + 1) >>> 0;
    if ((original & ~0xf) === 0) p.writeConfig(PciHeader.Bar0, 4, this.#barAddress & ~(size - 1));
    return size;
  }

  /** Config-space offsets of every vendor capability, walked from the pointer (bounded). */
  *#vendorCaps(): Generator<number> {
    const p = this.pci;
    if (!(p.readConfig(PciHeader.Status, 2) & PciStatus.CapabilitiesList)) return;
    let at = p.readConfig(PciHeader.CapabilitiesPointer, 1);
    for (let ttl = CAP_WALK_TTL; ttl > 0 && at >= 0x40; ttl--) {
      at &= ~3;
      if (p.readConfig(at, 1) === PCI_CAP_ID_VENDOR) yield at;
      at = p.readConfig(at + CapField.Next, 1);
    }
  }

  /** The first capability of `type` in BAR0 (Linux takes the first it can use). */
  #capAt(type: number): number | null {
    for (const at of this.#vendorCaps()) {
      if (this.pci.readConfig(at + CapField.CfgType, 1) === type && this.pci.readConfig(at + CapField.Bar, 1) === 0) return at;
    }
    return null;
  }

  /** The region of the first usable capability of `type`, checked against the BAR (vp_modern_map_capability). */
  #findCap(type: number, minLength: number, barSize: number): PciRegion | null {
    const at = this.#capAt(type);
    if (at === null) return null;
    const offset = this.pci.readConfig(at + CapField.Offset, 4);
    const length = this.pci.readConfig(at + CapField.RegionLength, 4);
    if (length < minLength) throw new DriverError(`capability type ${type}: length ${length} below ${minLength}`);
    if (offset % 4 !== 0) throw new DriverError(`capability type ${type}: offset 0x${offset.toString(16)} misaligned`);
    if (offset + Math.max(minLength, 1) > barSize) throw new DriverError(`capability type ${type}: region outside BAR0`);
    return { offset, length: Math.min(length, barSize - offset) };
  }

  #common(offset: number, size: number): number {
    return this.pci.readBar(this.layout.common.offset + offset, size);
  }

  #setCommon(offset: number, size: number, value: number): void {
    this.pci.writeBar(this.layout.common.offset + offset, size, value);
  }

  async reset(): Promise<void> {
    this.#setCommon(CommonCfg.DeviceStatus, 1, 0);
    // vp_reset: the device may take time; wait until it reads 0 (§4.1.4.3.2).
    await waitForResetDone(() => this.getStatus());
    this.#notifyAt.clear();
  }

  getStatus(): number {
    return this.#common(CommonCfg.DeviceStatus, 1);
  }

  setStatus(status: number): void {
    this.#setCommon(CommonCfg.DeviceStatus, 1, status & 0xff);
  }

  readDeviceFeatures(): bigint {
    this.#setCommon(CommonCfg.DeviceFeatureSelect, 4, 0);
    const lo = BigInt(this.#common(CommonCfg.DeviceFeature, 4));
    this.#setCommon(CommonCfg.DeviceFeatureSelect, 4, 1);
    const hi = BigInt(this.#common(CommonCfg.DeviceFeature, 4));
    return lo | (hi << 32n);
  }

  writeDriverFeatures(features: bigint): void {
    this.#setCommon(CommonCfg.DriverFeatureSelect, 4, 0);
    this.#setCommon(CommonCfg.DriverFeature, 4, Number(features & 0xffff_ffffn));
    this.#setCommon(CommonCfg.DriverFeatureSelect, 4, 1);
    this.#setCommon(CommonCfg.DriverFeature, 4, Number(features >> 32n));
  }

  selectQueue(index: number): void {
    this.#selected = index;
    this.#setCommon(CommonCfg.QueueSelect, 2, index);
  }

  queueEnabled(): boolean {
    return this.#common(CommonCfg.QueueEnable, 2) !== 0;
  }

  /** PCI has no separate maximum: queue_size reads the maximum until the driver writes it (§4.1.4.3). */
  queueMaxSize(): number {
    return this.#common(CommonCfg.QueueSize, 2);
  }

  setQueueSize(size: number): void {
    this.#setCommon(CommonCfg.QueueSize, 2, size);
  }

  setQueueAddresses(rings: RingAddresses): void {
    this.#writeAddress(CommonCfg.QueueDescLo, rings.desc);
    this.#writeAddress(CommonCfg.QueueDriverLo, rings.avail);
    this.#writeAddress(CommonCfg.QueueDeviceLo, rings.used);
  }

  enableQueue(): void {
    // setup_vq: the notify address comes from queue_notify_off, checked against the notify region.
    const { notify, notifyOffMultiplier } = this.layout;
    const at = this.#common(CommonCfg.QueueNotifyOff, 2) * notifyOffMultiplier;
    if (at + 2 > notify.length) throw new DriverError(`queue ${this.#selected}: notify offset 0x${at.toString(16)} outside the notify region`);
    this.#notifyAt.set(this.#selected, notify.offset + at);
    this.#setCommon(CommonCfg.QueueEnable, 2, 1);
  }

  /** vp_notify: the queue index, 16 bits, at the queue's notify address. */
  notify(index: number): void {
    const at = this.#notifyAt.get(index);
    if (at !== undefined) this.pci.writeBar(at, 2, index);
  }

  /** vp_interrupt: one ISR read returns the causes and clears them (§4.1.4.5). */
  takeInterrupt(): number {
    return this.pci.readBar(this.layout.isr.offset, 1);
  }

  readConfig(offset: number, width: 1 | 2 | 4 | 8): number {
    const device = this.#deviceRegion(offset, width);
    const at = device.offset + offset;
    return readConsistently(
      () => this.#common(CommonCfg.ConfigGeneration, 1),
      () => (width === 8 ? joinU64(this.pci.readBar(at, 4), this.pci.readBar(at + 4, 4)) : this.pci.readBar(at, width)),
    );
  }

  writeConfig(offset: number, value: number, width: 1 | 2 | 4): void {
    const device = this.#deviceRegion(offset, width);
    this.pci.writeBar(device.offset + offset, width, value);
  }

  #deviceRegion(offset: number, width: number): PciRegion {
    const device = this.layout.device;
    if (!device || offset + width > device.length) throw new DriverError(`device config ${offset}+${width} outside the device region`);
    return device;
  }

  /** A 64-bit guest-physical address as two 32-bit halves, low first (§4.1.3.1). */
  #writeAddress(low: number, addr: number): void {
    this.#setCommon(low, 4, lowU32(addr));
    this.#setCommon(low + 4, 4, highU32(addr));
  }
}
