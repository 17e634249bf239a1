// The public API. Everything an emulator author, a test writer or a tool needs
// is re-exported here and nowhere else. Node-only pieces (the vhost-user host,
// the Node file backend) live behind 'virtio-blk-web/node'.

// Guest memory and the virtio transport.
export { GuestMemory, GuestMemoryError, type GuestRegionSpec, type MemorySource } from './virtio/memory.ts';
export {
  DescFlag,
  DescriptorChain,
  PopResult,
  QueueError,
  SplitQueue,
  checkGeometry,
  type QueueGeometry,
} from './virtio/queue.ts';
export {
  MMIO_MAGIC,
  MMIO_STATE_BYTES,
  MMIO_VERSION,
  MMIO_WINDOW_SIZE,
  MmioDevice,
  MmioInterrupt,
  MmioReg,
  MmioRegisters,
  MmioWord,
  createMmioState,
  type MmioAccessor,
  type MmioState,
  type MmioStats,
} from './virtio/mmio/mmio.ts';
// virtio-pci (modern, §4.1): a PCI function for an emulator's bus (docs/pci.md).
export {
  VirtioPciError,
  VirtioPciFunction,
  type PciFunctionAccessor,
  type VirtioPciOptions,
} from './virtio/pci/function.ts';
export {
  BarRegion as PciBarRegion,
  COMMON_CFG_BYTES as PCI_COMMON_CFG_BYTES,
  CapAt as PciCapAt,
  CapField as PciCapField,
  CommonCfg as PciCommonCfg,
  DEFAULT_BAR_SIZE as PCI_DEFAULT_BAR_SIZE,
  DEVICE_CFG_BYTES as PCI_DEVICE_CFG_BYTES,
  MIN_BAR_SIZE as PCI_MIN_BAR_SIZE,
  NOTIFY_OFF_MULTIPLIER as PCI_NOTIFY_OFF_MULTIPLIER,
  PCI_CONFIG_SPACE_BYTES,
  PCI_VENDOR_ID_VIRTIO,
  PciCommand,
  PciHeader,
  PciStatus,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_DEVICE_ID_BASE,
  VirtioPciCap,
} from './virtio/pci/layout.ts';
export { COMMON_FIELDS as PCI_COMMON_FIELDS, commonField as pciCommonField, type CommonField as PciCommonField } from './virtio/pci/common-cfg.ts';
// The transport core every transport decodes onto (for a transport of your own).
export {
  InterruptBit,
  MAX_QUEUES,
  TRANSPORT_STATE_BYTES,
  TransportWord,
  createTransportState,
  type TransportState,
} from './virtio/transport/layout.ts';
export { QueueAddress, TransportRegisters } from './virtio/transport/registers.ts';
export { TransportDevice, type TransportStats } from './virtio/transport/device.ts';
export { queueProblem, splitQueueFor, type QueueStart } from './virtio/transport/queues.ts';
export { DeviceStatus, VirtioFeature, hasFeature, type ActivateContext, type VirtioDevice } from './virtio/device.ts';

// The block device.
export {
  BLK_ID_BYTES,
  BlkConfig,
  BlkFeature,
  BlkRequestType,
  BlkStatus,
  SECTOR_SIZE,
  VIRTIO_ID_BLOCK,
  WRITE_ZEROES_FLAG_UNMAP,
} from './block/constants.ts';
export {
  CacheMode,
  VirtioBlkDevice,
  type BlockDeviceOptions,
  type BlockDeviceStats,
  type RequestLimiter,
  type Timers,
} from './block/device.ts';

// Storage.
export {
  StorageError,
  StorageErrorCode,
  toStorageError,
  type BlockBackend,
  type MaybePromise,
} from './backends/backend.ts';
export { MemoryBackend, type MemoryBackendOptions } from './backends/memory.ts';
export {
  OpfsBackend,
  deleteOpfsDisk,
  listOpfsDisks,
  opfsDirectory,
  opfsLockName,
  type OpfsBackendOptions,
} from './backends/opfs.ts';
export {
  HttpChunkedBackend,
  HttpError,
  HttpErrorReason,
  HttpImageBackend,
  HttpRangeBackend,
  type BlockCacheOptions,
  type HttpChunkedOptions,
  type HttpRangeOptions,
  type HttpStats,
  type ImageIdentity,
  type RetryOptions,
  ChunkCache,
  chunkCacheAvailable,
  type ChunkCacheOptions,
  type ChunkCacheStats,
} from './backends/http.ts';
export {
  CHUNK_DIR,
  Compression,
  MANIFEST_FILE,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  ManifestError,
  chunkPath,
  parseManifest,
  type ChunkedManifest,
} from './pack/manifest.ts';
export { DEFAULT_CHUNK_SIZE, packStream, type ChunkStore, type PackOptions, type PackProgress } from './pack/pack.ts';
export {
  DEFAULT_INDEXEDDB_CHUNK_BYTES,
  IndexedDbBackend,
  deleteIndexedDbDisk,
  indexedDbDatabaseName,
  indexedDbLockName,
  listIndexedDbDisks,
  type IndexedDbBackendOptions,
} from './backends/indexeddb.ts';
export {
  DEFAULT_OVERLAY_BLOCK_BYTES,
  OverlayBackend,
  overlayTopBytes,
  type OverlayBackendOptions,
  type OverlayState,
} from './backends/overlay.ts';
export { BlockState } from './backends/overlay-map.ts';

// Streaming import and export of disk images.
export {
  OPFS_EXPORT_FOLDER,
  OPFS_IMPORT_FOLDER,
  clearExportFiles,
  diskBytesFor,
  exportStream,
  exportToFile,
  importImage,
  importIntoBackend,
  offerDownload,
  saveToHandle,
  type ImageSource,
  type ImportImageOptions,
  type ImportOptions,
  type ImportResult,
  type ImportTarget,
  type TransferOptions,
  type TransferProgress,
} from './transfer/index.ts';

// Rate limiting.
export * from './limiter/index.ts';

// The guest-side driver.
export {
  DriverError,
  VirtioBlkDriver,
  arenaBytes,
  type Completion,
  type DriverOptions,
  type DriverRequest,
  InterruptCause,
  MmioTransport,
  type DriverTransport,
  type RingAddresses,
  type Segment,
} from './driver/driver.ts';
export { PciTransport, type PciLayout, type PciRegion, type PciTransportOptions } from './driver/pci-transport.ts';

// Hosts.
export { createSameThreadDisk, type SameThreadDisk, type SameThreadDiskOptions } from './host/browser/same-thread.ts';
export {
  DiskHost,
  DiskTransport,
  canUseWorkerHost,
  createDisk,
  waitForLine,
  type CreateDiskOptions,
  type Disk,
  type DiskStats,
  type InterruptLine,
  type PciDiskOptions,
} from './host/browser/disk.ts';
export type { BackendSpec, DeviceSpec } from './host/browser/worker-protocol.ts';
// v86: a disk on a v86 PC's PCI bus (docs/v86.md).
export * from './host/v86/index.ts';
// The synchronous facade: a disk in a backend worker, read and written by a
// thread that blocks (a WASI program, an emulator's CPU loop). The WASI files
// themselves are in 'virtio-blk-web/wasi'.
export * from './wasi/facade.ts';
export { DEVICE_POLL_MICROS, HaltPoller, VCPU_HALT_POLL_MICROS, type HaltPollOptions, type HaltPollResult } from './host/browser/halt-poll.ts';
export {
  IrqTrigger,
  kernelCommandLine,
  virtioMmioCmdlineDevice,
  virtioMmioDts,
  virtioMmioFdtProperties,
  virtioMmioNodeName,
  type FdtProperty,
  type KernelCommandLineOptions,
  type VirtioMmioNodeOptions,
} from './virtio/mmio/devicetree.ts';
