// The common configuration structure (virtio 1.2 §4.1.4.3) as a register
// table over the transport core: each field names its width and what
// reading or writing it means in `TransportRegisters` terms. Nothing here
// keeps state; the core's words are the only truth, as for virtio-mmio.
//
// What is PCI's own, beside the core: the fields are 8, 16 or 32 bits wide
// and a driver accesses each at its natural width (§4.1.3.1), 64-bit queue
// addresses as two 32-bit halves; queue_size reads back the size (its reset
// value is the maximum, there is no separate maximum register); the MSI-X
// vectors read NO_VECTOR (INTx only); queue_notify_off is the queue's index;
// queue_enable accepts only 1 (§4.1.4.3.2: the driver never writes 0, and
// VIRTIO_F_RING_RESET, which would make 0 mean something, is not offered).
// An access at any other offset or width reads 0 and writes nothing.

import { W } from '../transport/layout.ts';
import { QueueAddress, type TransportRegisters } from '../transport/registers.ts';
import { CommonCfg, VIRTIO_MSI_NO_VECTOR } from './layout.ts';

type Reader = (core: TransportRegisters) => number;
type Writer = (core: TransportRegisters, value: number) => void;

/** A field: its width in bytes, name, and what reading or writing it does; no `write` means read-only. */
export interface CommonField {
  readonly width: 1 | 2 | 4;
  readonly name: string;
  readonly read: Reader;
  readonly write?: Writer;
}

const address = (field: QueueAddress): Pick<CommonField, 'read' | 'write'> => ({
  read: (c) => c.queueAddress(field),
  write: (c, v) => c.setQueueAddress(field, v),
});

/** Selector words read back as written (the core stores them; it has no getter for the feature selectors). */
const word = (index: number): Reader => (c) => Atomics.load(c.state, index);

export const COMMON_FIELDS: ReadonlyMap<number, CommonField> = new Map<number, CommonField>([
  [CommonCfg.DeviceFeatureSelect, { width: 4, name: 'device_feature_select', read: word(W.DeviceFeaturesSel), write: (c, v) => c.setDeviceFeaturesSelect(v) }],
  [CommonCfg.DeviceFeature, { width: 4, name: 'device_feature', read: (c) => c.deviceFeaturesWindow }],
  [CommonCfg.DriverFeatureSelect, { width: 4, name: 'driver_feature_select', read: word(W.DriverFeaturesSel), write: (c, v) => c.setDriverFeaturesSelect(v) }],
  [CommonCfg.DriverFeature, { width: 4, name: 'driver_feature', read: (c) => c.driverFeaturesWindow, write: (c, v) => c.writeDriverFeatures(v) }],
  // No MSI-X capability: vectors cannot be set and read NO_VECTOR.
  [CommonCfg.ConfigMsixVector, { width: 2, name: 'config_msix_vector', read: () => VIRTIO_MSI_NO_VECTOR, write: () => {} }],
  [CommonCfg.NumQueues, { width: 2, name: 'num_queues', read: (c) => c.queueCount }],
  [CommonCfg.DeviceStatus, { width: 1, name: 'device_status', read: (c) => c.status, write: (c, v) => c.writeStatus(v) }],
  [CommonCfg.ConfigGeneration, { width: 1, name: 'config_generation', read: (c) => c.configGeneration & 0xff }],
  [CommonCfg.QueueSelect, { width: 2, name: 'queue_select', read: (c) => c.queueSelect & 0xffff, write: (c, v) => c.selectQueue(v) }],
  // §4.1.4.3: 0 for a queue that does not exist (the core's selector check); writable only while disabled.
  [CommonCfg.QueueSize, { width: 2, name: 'queue_size', read: (c) => c.queueSize, write: (c, v) => c.setQueueSize(v) }],
  [CommonCfg.QueueMsixVector, { width: 2, name: 'queue_msix_vector', read: () => VIRTIO_MSI_NO_VECTOR, write: () => {} }],
  [CommonCfg.QueueEnable, { width: 2, name: 'queue_enable', read: (c) => c.queueEnabled, write: (c, v) => {
    if (v === 1) c.setQueueEnabled(1);
  } }],
  [CommonCfg.QueueNotifyOff, { width: 2, name: 'queue_notify_off', read: (c) => (c.queueMaxSize !== 0 ? c.queueSelect : 0) }],
  [CommonCfg.QueueDescLo, { width: 4, name: 'queue_desc_lo', ...address(QueueAddress.DescLo) }],
  [CommonCfg.QueueDescHi, { width: 4, name: 'queue_desc_hi', ...address(QueueAddress.DescHi) }],
  [CommonCfg.QueueDriverLo, { width: 4, name: 'queue_driver_lo', ...address(QueueAddress.DriverLo) }],
  [CommonCfg.QueueDriverHi, { width: 4, name: 'queue_driver_hi', ...address(QueueAddress.DriverHi) }],
  [CommonCfg.QueueDeviceLo, { width: 4, name: 'queue_device_lo', ...address(QueueAddress.DeviceLo) }],
  [CommonCfg.QueueDeviceHi, { width: 4, name: 'queue_device_hi', ...address(QueueAddress.DeviceHi) }],
]);

/** The field an access of `size` bytes at `offset` names exactly, or undefined. */
export function commonField(offset: number, size: number): CommonField | undefined {
  const field = COMMON_FIELDS.get(offset);
  return field && field.width === size ? field : undefined;
}
