// The emulator's side of the transport core: what a driver's register
// accesses mean, whatever transport decodes them (virtio-mmio's register
// file, a PCI common-config table). Every call is synchronous, returns
// without waiting for the device, and never throws, whatever the value.
//
// What lives here, once for every transport: the 32-bit windows onto the
// feature pairs; the status state machine (bits only added, DEVICE_NEEDS_RESET
// the device's, the feature check at FEATURES_OK, the DRIVER_OK edge); the
// reset handshake; per-queue geometry writable only while the queue is
// disabled and snapshotted when it is enabled; config bytes with their dirty
// map; notifications and the interrupt word.
//
// Reset (Status ← 0) is one state that Status shows: Status reads 0 exactly
// when the device has dropped its work and accepts a new initialisation.
// - Idle device (no batch running, nothing in flight): this thread resets the
//   registers at once, so a driver that does not wait (Linux's virtio_mmio)
//   sees 0 immediately. The device drops its state on the Reset event before
//   it handles anything the driver writes afterwards.
// - Busy device: the Status word keeps its old, non-zero bits plus
//   STATUS_RESET_PENDING; Status writes are ignored until the device has
//   dropped its in-flight work, reset the registers and stored 0 into the
//   Status word, which ends the pending state and shows 0 in one store.
//   No guest memory is written after Status reads 0.

import { DeviceStatus, VirtioFeature } from '../device.ts';
import {
  Activity,
  CONFIG_BYTE,
  CONFIG_NEGOTIATED_BYTE,
  DRIVER_STATUS_BITS,
  MAX_CONFIG_BYTES,
  MAX_QUEUES,
  Q,
  SNAPSHOT_FIELDS,
  STATUS_RESET_PENDING,
  TransportEvent,
  W,
  configBytes,
  maskBits,
  negotiatedImageIndex,
  queueViews,
  resetRegisters,
  ringDoorbell,
  type TransportState,
} from './layout.ts';

/** A queue's address registers, as 32-bit halves (§4.2.2, §4.1.4.3). */
export const QueueAddress = {
  DescLo: Q.DescLo,
  DescHi: Q.DescHi,
  DriverLo: Q.DriverLo,
  DriverHi: Q.DriverHi,
  DeviceLo: Q.DeviceLo,
  DeviceHi: Q.DeviceHi,
} as const;
export type QueueAddress = (typeof QueueAddress)[keyof typeof QueueAddress];

export class TransportRegisters {
  readonly state: TransportState;
  readonly #queues: readonly Int32Array[];
  readonly #configView: DataView;
  /** Called after an event was raised; the same-thread host runs the device from here. */
  onDoorbell: (() => void) | null = null;

  constructor(state: TransportState) {
    this.state = state;
    this.#queues = queueViews(state);
    const config = configBytes(state, CONFIG_BYTE);
    this.#configView = new DataView(config.buffer, config.byteOffset, MAX_CONFIG_BYTES);
  }

  get deviceId(): number {
    return Atomics.load(this.state, W.DeviceId);
  }

  get queueCount(): number {
    return Atomics.load(this.state, W.NumQueues);
  }

  // Features (§2.2) --------------------------------------------------------

  setDeviceFeaturesSelect(value: number): void {
    Atomics.store(this.state, W.DeviceFeaturesSel, value);
  }

  /** The 32 device feature bits the select word names; 0 past bit 63. */
  get deviceFeaturesWindow(): number {
    return this.#featureWindow(W.DeviceFeaturesSel, W.DeviceFeaturesLo, W.DeviceFeaturesHi);
  }

  setDriverFeaturesSelect(value: number): void {
    Atomics.store(this.state, W.DriverFeaturesSel, value);
  }

  /** The 32 driver feature bits the select word names (PCI reads them back). */
  get driverFeaturesWindow(): number {
    return this.#featureWindow(W.DriverFeaturesSel, W.DriverFeaturesLo, W.DriverFeaturesHi);
  }

  writeDriverFeatures(value: number): void {
    const s = this.state;
    // §3.1.1: features are fixed once FEATURES_OK is set.
    if (Atomics.load(s, W.Status) & (DeviceStatus.FeaturesOk | STATUS_RESET_PENDING)) return;
    const sel = Atomics.load(s, W.DriverFeaturesSel);
    if (sel === 0) Atomics.store(s, W.DriverFeaturesLo, value);
    else if (sel === 1) Atomics.store(s, W.DriverFeaturesHi, value);
  }

  #featureWindow(selectWord: number, lo: number, hi: number): number {
    const sel = Atomics.load(this.state, selectWord);
    return sel === 0 ? Atomics.load(this.state, lo) : sel === 1 ? Atomics.load(this.state, hi) : 0;
  }

  // Queues (§2.6, §4.2.2, §4.1.4.3) --------------------------------------------

  selectQueue(value: number): void {
    Atomics.store(this.state, W.QueueSel, value);
  }

  /** The selector as written (unsigned), whether or not it names a queue. */
  get queueSelect(): number {
    return Atomics.load(this.state, W.QueueSel) >>> 0;
  }

  /** The selected queue's words, or null when the selector (unsigned) names no queue of this device. */
  #selected(): Int32Array | null {
    const sel = this.queueSelect;
    if (sel >= Atomics.load(this.state, W.NumQueues)) return null;
    return this.#queues[sel] ?? null;
  }

  /** The selected queue's maximum size; 0 when it does not exist (§4.2.2, §4.1.4.3). */
  get queueMaxSize(): number {
    const q = this.#selected();
    return q ? Atomics.load(q, Q.NumMax) : 0;
  }

  get queueSize(): number {
    const q = this.#selected();
    return q ? Atomics.load(q, Q.Num) : 0;
  }

  setQueueSize(value: number): void {
    this.#writeQueueWord(Q.Num, value);
  }

  queueAddress(field: QueueAddress): number {
    const q = this.#selected();
    return q ? Atomics.load(q, field) : 0;
  }

  setQueueAddress(field: QueueAddress, value: number): void {
    this.#writeQueueWord(field, value);
  }

  /** Geometry is writable only while the queue is disabled (§4.2.3.2, §4.1.4.3.2). */
  #writeQueueWord(field: number, value: number): void {
    const q = this.#selected();
    if (q && Atomics.load(q, Q.Ready) === 0) Atomics.store(q, field, value);
  }

  get queueEnabled(): number {
    const q = this.#selected();
    return q ? Atomics.load(q, Q.Ready) : 0;
  }

  /**
   * 1 snapshots the geometry and enables the selected queue, 0 disables it;
   * either reads back at once. After DRIVER_OK the device is told, and starts
   * serving the new rings or stops touching the old ones. Other values are
   * ignored.
   */
  setQueueEnabled(value: number): void {
    const q = this.#selected();
    if (!q || (value !== 0 && value !== 1)) return;
    if (value === Atomics.load(q, Q.Ready)) return;
    // Odd epoch while the snapshot changes: the device retries its read.
    Atomics.add(q, Q.Epoch, 1);
    if (value === 1) {
      Atomics.store(q, Q.SnapNum, Atomics.load(q, Q.Num));
      for (const [from, to] of SNAPSHOT_FIELDS) Atomics.store(q, to, Atomics.load(q, from));
    }
    Atomics.store(q, Q.Ready, value);
    Atomics.add(q, Q.Epoch, 1);
    if (Atomics.load(this.state, W.Status) & DeviceStatus.DriverOk) {
      Atomics.or(this.state, W.QueueChangedMask, 1 << this.#queues.indexOf(q));
      this.#ring(TransportEvent.Queue);
    }
  }

  /** The driver made buffers available in queue `index` (§2.7.13.3). */
  notify(index: number): void {
    const s = this.state;
    const q = index >>> 0;
    if (q >= Atomics.load(s, W.NumQueues) || q >= MAX_QUEUES) return;
    Atomics.add(s, W.NotifyCount, 1);
    Atomics.or(s, W.NotifyMask, 1 << q);
    this.#ring(TransportEvent.Notify);
  }

  // Interrupts -----------------------------------------------------------------

  /** The interrupt word (InterruptBit values): non-zero while the line is asserted. */
  get interruptStatus(): number {
    return Atomics.load(this.state, W.InterruptStatus);
  }

  /** Clear `bits`; a bit the device sets concurrently is never lost. */
  acknowledgeInterrupt(bits: number): void {
    Atomics.and(this.state, W.InterruptStatus, ~bits);
  }

  /** Read and clear the interrupt word in one step (PCI's ISR, §4.1.4.5). */
  takeInterruptStatus(): number {
    return Atomics.exchange(this.state, W.InterruptStatus, 0);
  }

  // Status (§2.1, §3.1) ----------------------------------------------------------

  /** The eight status bits as the driver reads them. */
  get status(): number {
    return Atomics.load(this.state, W.Status) & 0xff;
  }

  /**
   * 0 resets; any other value adds its status bits (bits above 7 are reserved
   * and ignored, the driver never clears a bit, §2.1.1, and never sets
   * DEVICE_NEEDS_RESET). FEATURES_OK stays clear when the device cannot accept
   * the driver's features (§3.1.1).
   */
  writeStatus(value: number): void {
    const s = this.state;
    if (value === 0) {
      this.#reset();
      return;
    }
    const bits = value & DRIVER_STATUS_BITS;
    if (bits === 0) return;
    for (;;) {
      const old = Atomics.load(s, W.Status);
      // A reset is pending: the driver must wait for Status to read 0 before
      // writing it again (§2.4.2). Ignore until then.
      if (old & STATUS_RESET_PENDING) return;
      let next = old | bits;
      if (next & DeviceStatus.FeaturesOk && !(old & DeviceStatus.FeaturesOk) && !this.#featuresAcceptable()) {
        // §2.2.2 / §3.1.1: a subset the device cannot accept leaves FEATURES_OK
        // clear; the driver reads it back and gives up.
        next &= ~DeviceStatus.FeaturesOk;
      }
      if (next === old) return;
      // A compare-exchange, not a store: the device may set DEVICE_NEEDS_RESET
      // concurrently, and that bit must not be lost.
      if (Atomics.compareExchange(s, W.Status, old, next) !== old) continue;
      const edges = next & ~old;
      if (edges & DeviceStatus.FeaturesOk) this.#showNegotiatedConfig();
      if (edges & (DeviceStatus.FeaturesOk | DeviceStatus.DriverOk)) this.#ring(TransportEvent.Status);
      return;
    }
  }

  /** FEATURES_OK was accepted: show the config the device means for these features, at once. */
  #showNegotiatedConfig(): void {
    const s = this.state;
    const bits = maskBits(Atomics.load(s, W.ConfigFeatureBitsLo), Atomics.load(s, W.ConfigFeatureBitsHi));
    if (bits.length === 0) return;
    const index = negotiatedImageIndex(bits, Atomics.load(s, W.DriverFeaturesLo), Atomics.load(s, W.DriverFeaturesHi));
    configBytes(s, CONFIG_BYTE).set(configBytes(s, CONFIG_NEGOTIATED_BYTE + index * MAX_CONFIG_BYTES));
  }

  #featuresAcceptable(): boolean {
    const s = this.state;
    const lo = Atomics.load(s, W.DriverFeaturesLo);
    const hi = Atomics.load(s, W.DriverFeaturesHi);
    const devLo = Atomics.load(s, W.DeviceFeaturesLo);
    const devHi = Atomics.load(s, W.DeviceFeaturesHi);
    if ((lo & ~devLo) !== 0 || (hi & ~devHi) !== 0) return false;
    // This is a modern-only device: VIRTIO_F_VERSION_1 must be accepted (§6.1).
    return (hi & (1 << Number(VirtioFeature.Version1 - 32n))) !== 0;
  }

  #reset(): void {
    const s = this.state;
    for (;;) {
      const status = Atomics.load(s, W.Status);
      if (status & STATUS_RESET_PENDING) return;
      // Already reset as the driver sees it: nothing runs (the device is
      // inactive, or drops its state on the Reset event before anything
      // else), so only the registers written since need clearing.
      if (status === 0 || Atomics.compareExchange(s, W.Activity, Activity.Idle, Activity.Resetting) === Activity.Idle) {
        const held = status !== 0;
        // The device is idle (or inactive): nothing touches guest memory
        // while we reset, and it drops its state on the event.
        resetRegisters(s, this.#queues);
        if (held) Atomics.store(s, W.Activity, Activity.Idle);
        this.#ring(TransportEvent.Reset);
        return;
      }
      // Busy: the device resets the registers once it has dropped its work;
      // Status reads its old, non-zero bits until then.
      if (Atomics.compareExchange(s, W.Status, status, status | STATUS_RESET_PENDING) !== status) continue;
      this.#ring(TransportEvent.ResetRequest);
      return;
    }
  }

  // Config space (§2.5) ----------------------------------------------------------

  get configGeneration(): number {
    return Atomics.load(this.state, W.ConfigGeneration);
  }

  get configSize(): number {
    return Atomics.load(this.state, W.ConfigSize);
  }

  /** `width` bytes (1, 2 or 4, naturally aligned, inside the config) at `offset`; 0 for anything else. */
  readConfig(offset: number, width: number): number {
    if (!this.#configAccess(offset, width)) return 0;
    const v = this.#configView;
    return width === 1 ? v.getUint8(offset) : width === 2 ? v.getUint16(offset, true) : v.getUint32(offset, true);
  }

  writeConfig(offset: number, value: number, width: number): void {
    if (!this.#configAccess(offset, width)) return;
    // §3.1.1: device-specific setup comes after FEATURES_OK; before it the
    // device does not yet know what the fields mean (block: CONFIG_WCE).
    const status = Atomics.load(this.state, W.Status);
    if (!(status & DeviceStatus.FeaturesOk) || status & STATUS_RESET_PENDING) return;
    // The device decides which bytes are writable: it sees the dirty bytes on
    // its next poll and publishes its own view back, undoing read-only ones.
    const v = this.#configView;
    if (width === 1) v.setUint8(offset, value);
    else if (width === 2) v.setUint16(offset, value, true);
    else v.setUint32(offset, value, true);
    for (let i = offset; i < offset + width; i++) Atomics.or(this.state, W.ConfigDirty + (i >>> 5), 1 << (i & 31));
    this.#ring(TransportEvent.Config);
  }

  #configAccess(offset: number, width: number): boolean {
    if (!Number.isInteger(offset) || offset < 0 || (width !== 1 && width !== 2 && width !== 4)) return false;
    return offset + width <= Atomics.load(this.state, W.ConfigSize) && offset % width === 0;
  }

  #ring(event: number): void {
    ringDoorbell(this.state, event);
    this.onDoorbell?.();
  }
}
