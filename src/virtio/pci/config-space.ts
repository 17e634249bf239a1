// PCI configuration space of one modern virtio-pci function (virtio 1.2
// §4.1.2–§4.1.4): the 256-byte type-0 header with the virtio vendor
// capabilities, as a byte image plus a write mask, the way a PCI device model
// keeps it. A write changes only the bits the mask lets through, so read-only
// fields (IDs, class, capability list, BARs 1–5, the expansion ROM) stay
// what they are whatever a guest writes, and BAR sizing falls out of the mask:
// all ones written to BAR0 read back as its size mask (PCI 3.0 §6.2.5.1).
//
// Two fields are not plain bytes: Status's interrupt bit shows the INTx
// line, and the VIRTIO_PCI_CAP_PCI_CFG window (§4.1.4.9) turns an access to
// pci_cfg_data into a BAR0 access at the offset and length the driver put in
// the capability. The function supplies both through `PciConfigHooks`.
//
// Accesses are 1, 2 or 4 bytes, naturally aligned, inside the 256 bytes;
// anything else reads 0 and writes nothing. Nothing here throws.

import {
  CAP_BYTES,
  CapAt,
  CapField,
  COMMON_CFG_BYTES,
  BarRegion,
  DEVICE_CFG_BYTES,
  NOTIFY_CAP_BYTES,
  NOTIFY_OFF_MULTIPLIER,
  PCI_CAP_ID_VENDOR,
  PCI_CFG_CAP_BYTES,
  PCI_COMMAND_WRITABLE,
  PCI_CONFIG_SPACE_BYTES,
  PCI_INTERRUPT_PIN_INTA,
  PCI_VENDOR_ID_VIRTIO,
  PciHeader,
  PciStatus,
  VIRTIO_PCI_CLASS_BLOCK,
  VIRTIO_PCI_DEVICE_ID_BASE,
  VIRTIO_PCI_REVISION,
  VIRTIO_PCI_SUBSYSTEM_ID,
  VIRTIO_PCI_SUBSYSTEM_VENDOR_ID,
  VirtioPciCap,
} from './layout.ts';
import { MAX_QUEUES } from '../transport/layout.ts';

/** What the configuration-space image is built from. */
export interface PciIdentity {
  /** The virtio device ID (2 for block): the PCI device ID is 0x1040 + it. */
  virtioDeviceId: number;
  /** BAR0's size in bytes. */
  barSize: number;
  subsystemVendorId?: number;
  subsystemId?: number;
  /** 24-bit class code (default mass storage / other). */
  classCode?: number;
}

/** What the function supplies to the two fields that are not plain bytes. */
export interface PciConfigHooks {
  /** Whether the INTx line is pending (Status bit 3). */
  interruptPending(): boolean;
  /** A BAR0 read / write through the PCI_CFG window. */
  readBar(offset: number, size: number): number;
  writeBar(offset: number, size: number, value: number): void;
  /** The command register changed (InterruptDisable may have flipped). */
  commandWritten(): void;
}

const DATA_AT = CapAt.PciCfg + CapField.PciCfgData;

/** Whether an access of `size` bytes at `offset` is one this space decodes. */
function decodable(offset: number, size: number): boolean {
  return (
    Number.isInteger(offset) &&
    (size === 1 || size === 2 || size === 4) &&
    offset >= 0 &&
    offset + size <= PCI_CONFIG_SPACE_BYTES &&
    offset % size === 0
  );
}

/** Build the configuration space image a function starts with, and its write mask. */
export function buildConfigSpace(id: PciIdentity): { image: Uint8Array; mask: Uint8Array } {
  const image = new Uint8Array(PCI_CONFIG_SPACE_BYTES);
  const mask = new Uint8Array(PCI_CONFIG_SPACE_BYTES);
  const v = new DataView(image.buffer);
  const m = new DataView(mask.buffer);
  v.setUint16(PciHeader.VendorId, PCI_VENDOR_ID_VIRTIO, true);
  v.setUint16(PciHeader.DeviceId, VIRTIO_PCI_DEVICE_ID_BASE + id.virtioDeviceId, true);
  v.setUint16(PciHeader.Status, PciStatus.CapabilitiesList, true);
  v.setUint8(PciHeader.Revision, VIRTIO_PCI_REVISION);
  const classCode = id.classCode ?? VIRTIO_PCI_CLASS_BLOCK;
  v.setUint8(PciHeader.ClassCode, classCode & 0xff);
  v.setUint16(PciHeader.ClassCode + 1, classCode >>> 8, true);
  // Header type 0, single function; BAR0 a 32-bit non-prefetchable memory BAR (low bits 0).
  v.setUint16(PciHeader.SubsystemVendorId, id.subsystemVendorId ?? VIRTIO_PCI_SUBSYSTEM_VENDOR_ID, true);
  v.setUint16(PciHeader.SubsystemId, id.subsystemId ?? VIRTIO_PCI_SUBSYSTEM_ID, true);
  v.setUint8(PciHeader.CapabilitiesPointer, CapAt.CommonCfg);
  v.setUint8(PciHeader.InterruptPin, PCI_INTERRUPT_PIN_INTA);

  m.setUint16(PciHeader.Command, PCI_COMMAND_WRITABLE, true);
  m.setUint8(PciHeader.CacheLineSize, 0xff);
  // Address bits below the size are hard-wired to 0, as are the type bits 3:0.
  m.setUint32(PciHeader.Bar0, ~(id.barSize - 1) & ~0xf, true);
  m.setUint8(PciHeader.InterruptLine, 0xff);

  const cap = (at: number, next: number, length: number, type: VirtioPciCap, offset: number, regionLength: number): void => {
    v.setUint8(at + CapField.Vendor, PCI_CAP_ID_VENDOR);
    v.setUint8(at + CapField.Next, next);
    v.setUint8(at + CapField.Length, length);
    v.setUint8(at + CapField.CfgType, type);
    v.setUint8(at + CapField.Bar, 0);
    v.setUint32(at + CapField.Offset, offset, true);
    v.setUint32(at + CapField.RegionLength, regionLength, true);
  };
  cap(CapAt.CommonCfg, CapAt.NotifyCfg, CAP_BYTES, VirtioPciCap.CommonCfg, BarRegion.CommonCfg, COMMON_CFG_BYTES);
  cap(CapAt.NotifyCfg, CapAt.IsrCfg, NOTIFY_CAP_BYTES, VirtioPciCap.NotifyCfg, BarRegion.NotifyCfg, MAX_QUEUES * NOTIFY_OFF_MULTIPLIER);
  v.setUint32(CapAt.NotifyCfg + CapField.NotifyOffMultiplier, NOTIFY_OFF_MULTIPLIER, true);
  cap(CapAt.IsrCfg, CapAt.DeviceCfg, CAP_BYTES, VirtioPciCap.IsrCfg, BarRegion.IsrCfg, 1);
  cap(CapAt.DeviceCfg, CapAt.PciCfg, CAP_BYTES, VirtioPciCap.DeviceCfg, BarRegion.DeviceCfg, DEVICE_CFG_BYTES);
  // §4.1.4.9: the access window's bar, offset, length and data are the driver's to write.
  cap(CapAt.PciCfg, 0, PCI_CFG_CAP_BYTES, VirtioPciCap.PciCfg, 0, 0);
  m.setUint8(CapAt.PciCfg + CapField.Bar, 0xff);
  m.setUint32(CapAt.PciCfg + CapField.Offset, 0xffff_ffff, true);
  m.setUint32(CapAt.PciCfg + CapField.RegionLength, 0xffff_ffff, true);
  m.setUint32(DATA_AT, 0xffff_ffff, true);
  return { image, mask };
}

export class PciConfigSpace {
  /** The live bytes; Status's interrupt bit and pci_cfg_data are filled in on read. */
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #mask: Uint8Array;
  readonly #initial: Uint8Array;
  readonly #barSize: number;
  readonly #hooks: PciConfigHooks;

  constructor(id: PciIdentity, hooks: PciConfigHooks) {
    const { image, mask } = buildConfigSpace(id);
    this.#initial = image.slice();
    this.#bytes = image;
    this.#view = new DataView(image.buffer);
    this.#mask = mask;
    this.#barSize = id.barSize;
    this.#hooks = hooks;
  }

  /** A copy of the 256 bytes the function starts with (for emulators that keep config space themselves). */
  image(): Uint8Array {
    return this.#initial.slice();
  }

  get command(): number {
    return this.#view.getUint16(PciHeader.Command, true);
  }

  /** BAR0's base address as the guest programmed it (0 until it does). */
  get barAddress(): number {
    return (this.#view.getUint32(PciHeader.Bar0, true) & ~0xf) >>> 0;
  }

  read(offset: number, size: number): number {
    if (!decodable(offset, size)) return 0;
    if (overlaps(offset, size, DATA_AT, 4)) this.#view.setUint32(DATA_AT, this.#windowRead(), true);
    const status = this.#view.getUint16(PciHeader.Status, true) & ~PciStatus.Interrupt;
    this.#view.setUint16(PciHeader.Status, status | (this.#hooks.interruptPending() ? PciStatus.Interrupt : 0), true);
    const v = this.#view;
    return size === 1 ? v.getUint8(offset) : size === 2 ? v.getUint16(offset, true) : v.getUint32(offset, true);
  }

  write(offset: number, size: number, value: number): void {
    if (!decodable(offset, size)) return;
    for (let i = 0; i < size; i++) {
      const at = offset + i;
      const byte = (value >>> (8 * i)) & 0xff;
      const mask = this.#mask[at]!;
      this.#bytes[at] = (this.#bytes[at]! & ~mask) | (byte & mask);
    }
    if (overlaps(offset, size, PciHeader.Command, 2)) this.#hooks.commandWritten();
    if (overlaps(offset, size, DATA_AT, 4)) {
      const window = this.#window();
      if (window) this.#hooks.writeBar(window.offset, window.length, (this.#view.getUint32(DATA_AT, true) & lengthMask(window.length)) >>> 0);
    }
  }

  /** The PCI_CFG window the driver set up, when it names a decodable BAR0 access (§4.1.4.9.1). */
  #window(): { offset: number; length: number } | null {
    const v = this.#view;
    if (v.getUint8(CapAt.PciCfg + CapField.Bar) !== 0) return null;
    const offset = v.getUint32(CapAt.PciCfg + CapField.Offset, true);
    const length = v.getUint32(CapAt.PciCfg + CapField.RegionLength, true);
    if (length !== 1 && length !== 2 && length !== 4) return null;
    if (offset % length !== 0 || offset + length > this.#barSize) return null;
    return { offset, length };
  }

  #windowRead(): number {
    const window = this.#window();
    return window ? (this.#hooks.readBar(window.offset, window.length) & lengthMask(window.length)) >>> 0 : 0;
  }
}

function overlaps(offset: number, size: number, at: number, length: number): boolean {
  return offset < at + length && at < offset + size;
}

function lengthMask(length: number): number {
  return length === 4 ? 0xffff_ffff : (1 << (8 * length)) - 1;
}
