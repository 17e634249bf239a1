// Where everything of a modern virtio-pci function sits (virtio 1.2 §4.1):
// the PCI type-0 header fields this function implements, its vendor
// capabilities in configuration space, and the four regions of BAR0 they
// point at. Constants only, so the device side, the driver and the tests
// agree on one layout without importing each other.
//
// BAR0 holds one 4 KiB page per region (common config, ISR, device config,
// notify), as QEMU lays them out, so a guest that maps each capability
// separately never maps two regions in one page. The BAR may be larger
// (v86 maps memory in 128 KiB units): the rest reads 0 and ignores writes.

/** PCI vendor ID of virtio devices (§4.1.2). */
export const PCI_VENDOR_ID_VIRTIO = 0x1af4;
/** Modern (non-transitional) PCI device IDs are 0x1040 + the virtio device ID (§4.1.2). */
export const VIRTIO_PCI_DEVICE_ID_BASE = 0x1040;
/** Non-transitional devices have revision 1 or higher (§4.1.2.1). */
export const VIRTIO_PCI_REVISION = 1;
/** Class code: mass storage (0x01), other (0x80), programming interface 0. */
export const VIRTIO_PCI_CLASS_BLOCK = 0x018000;
/** Default subsystem vendor/device: non-transitional devices SHOULD have a subsystem device ID ≥ 0x40 (§4.1.2.1). */
export const VIRTIO_PCI_SUBSYSTEM_VENDOR_ID = PCI_VENDOR_ID_VIRTIO;
export const VIRTIO_PCI_SUBSYSTEM_ID = 0x1100;

/** Bytes of PCI configuration space (conventional PCI). */
export const PCI_CONFIG_SPACE_BYTES = 256;

/** Type-0 header offsets this function decodes. */
export const PciHeader = {
  VendorId: 0x00,
  DeviceId: 0x02,
  Command: 0x04,
  Status: 0x06,
  Revision: 0x08,
  ClassCode: 0x09,
  CacheLineSize: 0x0c,
  LatencyTimer: 0x0d,
  HeaderType: 0x0e,
  Bar0: 0x10,
  Bar5: 0x24,
  SubsystemVendorId: 0x2c,
  SubsystemId: 0x2e,
  ExpansionRom: 0x30,
  CapabilitiesPointer: 0x34,
  InterruptLine: 0x3c,
  InterruptPin: 0x3d,
} as const;

/** Command register bits the function implements; the rest read 0 (PCI 3.0 §6.2.2). */
export const PciCommand = {
  MemorySpace: 1 << 1,
  BusMaster: 1 << 2,
  InterruptDisable: 1 << 10,
} as const;
export const PCI_COMMAND_WRITABLE = PciCommand.MemorySpace | PciCommand.BusMaster | PciCommand.InterruptDisable;

/** Status register bits. */
export const PciStatus = {
  /** The INTx line is pending (whatever InterruptDisable says). */
  Interrupt: 1 << 3,
  /** A capability list starts at CapabilitiesPointer. */
  CapabilitiesList: 1 << 4,
} as const;

/** PCI capability ID of vendor-specific capabilities, which virtio uses (§4.1.4). */
export const PCI_CAP_ID_VENDOR = 0x09;
/** INTA#. */
export const PCI_INTERRUPT_PIN_INTA = 1;

/** virtio_pci_cap.cfg_type (§4.1.4). */
export const VirtioPciCap = {
  CommonCfg: 1,
  NotifyCfg: 2,
  IsrCfg: 3,
  DeviceCfg: 4,
  PciCfg: 5,
} as const;
export type VirtioPciCap = (typeof VirtioPciCap)[keyof typeof VirtioPciCap];

/** Offsets inside struct virtio_pci_cap (§4.1.4). */
export const CapField = {
  Vendor: 0,
  Next: 1,
  Length: 2,
  CfgType: 3,
  Bar: 4,
  Id: 5,
  Offset: 8,
  RegionLength: 12,
  /** virtio_pci_notify_cap.notify_off_multiplier. */
  NotifyOffMultiplier: 16,
  /** virtio_pci_cfg_cap.pci_cfg_data. */
  PciCfgData: 16,
} as const;

/** Where each capability sits in configuration space, in list order. */
export const CapAt = {
  CommonCfg: 0x40,
  NotifyCfg: 0x50,
  IsrCfg: 0x64,
  DeviceCfg: 0x74,
  PciCfg: 0x84,
} as const;
/** Bytes of each capability: 16, or 20 with the notify multiplier or the access window. */
export const CAP_BYTES = 16;
export const NOTIFY_CAP_BYTES = 20;
export const PCI_CFG_CAP_BYTES = 20;

/** Offsets of struct virtio_pci_common_cfg (§4.1.4.3). */
export const CommonCfg = {
  DeviceFeatureSelect: 0x00,
  DeviceFeature: 0x04,
  DriverFeatureSelect: 0x08,
  DriverFeature: 0x0c,
  ConfigMsixVector: 0x10,
  NumQueues: 0x12,
  DeviceStatus: 0x14,
  ConfigGeneration: 0x15,
  QueueSelect: 0x16,
  QueueSize: 0x18,
  QueueMsixVector: 0x1a,
  QueueEnable: 0x1c,
  QueueNotifyOff: 0x1e,
  QueueDescLo: 0x20,
  QueueDescHi: 0x24,
  QueueDriverLo: 0x28,
  QueueDriverHi: 0x2c,
  QueueDeviceLo: 0x30,
  QueueDeviceHi: 0x34,
} as const;
/**
 * Bytes of the common config this function offers: up to queue_device.
 * queue_notify_data and queue_reset are absent: neither
 * VIRTIO_F_NOTIF_CONFIG_DATA nor VIRTIO_F_RING_RESET is offered.
 */
export const COMMON_CFG_BYTES = 0x38;

/** MSI-X is not implemented: every vector reads VIRTIO_MSI_NO_VECTOR (§4.1.4.3). */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

/** BAR0's regions: one 4 KiB page each. */
export const BarRegion = {
  CommonCfg: 0x0000,
  IsrCfg: 0x1000,
  DeviceCfg: 0x2000,
  NotifyCfg: 0x3000,
} as const;
/** Bytes the device config capability announces (the transport's largest config space). */
export const DEVICE_CFG_BYTES = 0x100;
/** Queue q's notify address is NotifyCfg + q × multiplier (queue_notify_off is q, §4.1.4.4). */
export const NOTIFY_OFF_MULTIPLIER = 4;
/** The smallest BAR0 that holds the four regions, and the default size. */
export const MIN_BAR_SIZE = 0x4000;
export const DEFAULT_BAR_SIZE = MIN_BAR_SIZE;
