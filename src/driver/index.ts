// src/driver: a guest-side virtio driver, written as Linux's is, for tests,
// benchmarks, end-to-end runs and the demo to drive the device with.
//
//   transport.ts       DriverTransport: what a driver needs from any transport
//   mmio-transport.ts  its virtio-mmio v2 implementation over a register accessor
//   pci-transport.ts   its modern virtio-pci implementation over config space and BAR0
//   virtqueue.ts       the guest side of a split virtqueue and its arena layout
//   block.ts           VirtioBlkDriver: negotiation, block requests, completions
//   errors.ts          DriverError
//
// It may import src/virtio's constants and GuestMemory and src/block's
// constants, nothing of the device's implementation; below the hosts,
// nothing imports it.

export { DriverError } from './errors.ts';
export { InterruptCause, type DriverTransport, type RingAddresses } from './transport.ts';
export { MmioTransport, type MmioAccessor } from './mmio-transport.ts';
export { PciTransport, type PciFunctionAccessor, type PciLayout, type PciRegion, type PciTransportOptions } from './pci-transport.ts';
export { INDIRECT_ENTRIES, SplitQueue, queueLayout, type ChainBuffer, type QueueLayout, type Segment, type SplitQueueOptions } from './virtqueue.ts';
export { VirtioBlkDriver, arenaBytes, type Completion, type DriverOptions, type DriverRequest } from './block.ts';
