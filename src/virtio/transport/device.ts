// The device's side of the transport core: consumes the events the
// emulator's side raises, tells the device of the negotiated features, builds
// queues from the geometry snapshotted when the driver enabled them, drives a
// `VirtioDevice`, and raises interrupts. Transport-neutral: the virtio-mmio
// register file and a PCI function both sit in front of it.
//
// Call `poll()` whenever the doorbell rang (the worker host after
// Atomics.wait returns; the same-thread host from `onDoorbell`).

import { DeviceStatus, type VirtioDevice } from '../device.ts';
import type { GuestMemory } from '../memory.ts';
import type { QueueGeometry, SplitQueue } from '../queue.ts';
import {
  Activity,
  CONFIG_AFTER_RESET_BYTE,
  CONFIG_BYTE,
  CONFIG_NEGOTIATED_BYTE,
  InterruptBit,
  MAX_CONFIG_BYTES,
  MAX_CONFIG_FEATURE_BITS,
  MAX_QUEUES,
  Q,
  STATUS_RESET_PENDING,
  TransportEvent,
  W,
  configBytes,
  features64,
  isShared,
  maskBits,
  queueViews,
  resetRegisters,
  ringDoorbell,
  type TransportState,
} from './layout.ts';
import { queueProblem, splitQueueFor } from './queues.ts';
import { joinU64 } from '../u64.ts';

/** Counters the device side exposes. */
export interface TransportStats {
  notifications: number;
  interrupts: number;
}

/** How long the device retries reading a queue snapshot the emulator is rewriting before it tries again later. */
const SNAPSHOT_TRIES = 1000;

/** What reading a queue's registers found. */
type QueueRead =
  | { kind: 'stopped'; epoch: number }
  | { kind: 'ready'; epoch: number; geometry: QueueGeometry }
  | { kind: 'changing' };

/**
 * The device's side of the register file. Call `poll()` whenever the doorbell
 * rang (the worker host after Atomics.wait returns; the same-thread host from
 * `onDoorbell`); it handles every pending event and returns.
 */
export class TransportDevice {
  readonly state: TransportState;
  readonly device: VirtioDevice;
  readonly #queueViews: readonly Int32Array[];
  readonly #config: Uint8Array;
  readonly #configAfterReset: Uint8Array;
  readonly #memory: GuestMemory;
  /**
   * The queues handed to the device at activation, by index. Entries change
   * while active when the driver stops or restarts a queue (QueueReady); the
   * device reads them afresh on every pass.
   */
  readonly #queues: (SplitQueue | null)[] = [];
  /** The epoch each entry of #queues was built at. */
  readonly #builtEpochs: number[] = [];
  /** Whether the driver set DRIVER_OK and the device is serving. */
  #active = false;
  /** FEATURES_OK was seen and the device told of the features. */
  #negotiated = false;
  #driverFeatures = 0n;
  /** Set while a reset waits for in-flight requests to settle. */
  #resetting = false;
  /** True inside poll(), which holds Activity = Busy. */
  #polling = false;
  /** Called when InterruptStatus goes from 0 to non-zero (for emulators that prefer a callback). */
  onInterrupt: ((status: number) => void) | null = null;
  /** Called when the device set DEVICE_NEEDS_RESET (with the reason). */
  onNeedsReset: ((reason: string) => void) | null = null;
  /** Called when an asynchronous reset has finished. */
  onResetDone: (() => void) | null = null;
  /**
   * Called when the device asks to be polled again (a throttled queue's timer,
   * an async completion); defaults to ringing the doorbell.
   */
  onWake: (() => void) | null = null;

  constructor(state: TransportState, device: VirtioDevice, memory: GuestMemory) {
    this.state = state;
    this.device = device;
    this.#memory = memory;
    this.#queueViews = queueViews(state);
    this.#config = configBytes(state, CONFIG_BYTE);
    this.#configAfterReset = configBytes(state, CONFIG_AFTER_RESET_BYTE);
    if (device.queueCount > MAX_QUEUES) throw new RangeError(`at most ${MAX_QUEUES} queues`);
    if (device.config.length > MAX_CONFIG_BYTES) throw new RangeError(`config space larger than ${MAX_CONFIG_BYTES} bytes`);
    const featureBits = device.configFeatureBits ?? 0n;
    Atomics.store(state, W.ConfigFeatureBitsLo, Number(featureBits & 0xffff_ffffn) | 0);
    Atomics.store(state, W.ConfigFeatureBitsHi, Number(featureBits >> 32n) | 0);
    if (maskBits(Atomics.load(state, W.ConfigFeatureBitsLo), Atomics.load(state, W.ConfigFeatureBitsHi)).length > MAX_CONFIG_FEATURE_BITS) {
      throw new RangeError(`configFeatureBits names more than ${MAX_CONFIG_FEATURE_BITS} bits`);
    }
    Atomics.store(state, W.DeviceId, device.deviceId);
    Atomics.store(state, W.NumQueues, device.queueCount);
    Atomics.store(state, W.DeviceFeaturesLo, Number(device.deviceFeatures & 0xffff_ffffn) | 0);
    Atomics.store(state, W.DeviceFeaturesHi, Number(device.deviceFeatures >> 32n) | 0);
    for (let q = 0; q < device.queueCount; q++) {
      Atomics.store(this.#queueViews[q]!, Q.NumMax, device.queueMaxSize);
      this.#queues.push(null);
      this.#builtEpochs.push(-1);
    }
    this.#publishConfigAfterReset();
    resetRegisters(state, this.#queueViews);
    device.onConfigChange = () => this.configChanged();
  }

  /** Whether the driver set DRIVER_OK and the device is serving. */
  get active(): boolean {
    return this.#active;
  }

  /** The ring served as queue `index` while active (null otherwise): for hosts' diagnostics, read only. */
  queue(index: number): SplitQueue | null {
    return this.#active ? (this.#queues[index] ?? null) : null;
  }

  get stats(): TransportStats {
    return {
      notifications: Atomics.load(this.state, W.NotifyCount),
      interrupts: Atomics.load(this.state, W.InterruptCount),
    };
  }

  /** Handle every pending event. Never throws. */
  poll(): void {
    const s = this.state;
    if (this.#polling) return;
    // Enter Busy, unless the emulator thread holds Resetting: that is a
    // handful of stores, so wait it out.
    while (Atomics.compareExchange(s, W.Activity, Activity.Idle, Activity.Busy) === Activity.Resetting) {
      /* spin */
    }
    this.#polling = true;
    try {
      for (;;) {
        const events = Atomics.exchange(s, W.Events, 0);
        if (events === 0) break;
        // Each handler reads the registers as they are now, so coalesced
        // events are handled in the order the driver's setup needs them.
        if (events & TransportEvent.Reset) this.#dropState();
        if (events & TransportEvent.ResetRequest) this.#beginReset();
        if (this.#resetting) continue;
        if (events & TransportEvent.Status) this.#negotiate();
        // After negotiation (what a config write means depends on features),
        // before activation (the device starts with what the driver set up).
        if (events & (TransportEvent.Status | TransportEvent.Config)) this.#syncConfigFromDriver();
        if (events & TransportEvent.Status) this.#maybeActivate();
        if (events & TransportEvent.Queue) this.#queuesChanged();
        if (events & TransportEvent.Notify) {
          const mask = Atomics.exchange(s, W.NotifyMask, 0);
          if (this.#active) {
            for (let q = 0; q < this.device.queueCount; q++) if (mask & (1 << q)) this.device.processQueue(q);
          }
        }
      }
    } catch (err) {
      // The device promises never to throw; if it does, stop serving rather
      // than take the host down.
      this.#needsReset(`device error: ${String(err)}`);
    } finally {
      this.#polling = false;
      this.#settle();
    }
  }

  /** Go Idle when nothing is in flight, so the emulator may reset synchronously. */
  #settle(): void {
    if (this.#polling || this.#resetting || this.device.inFlight > 0) return;
    Atomics.store(this.state, W.Activity, Activity.Idle);
    // Anything raised while we were Busy rang the doorbell: the host polls again.
  }

  /** FEATURES_OK was accepted: tell the device what the driver chose (§3.1.1 step 5). */
  #negotiate(): void {
    if (this.#negotiated) return;
    const s = this.state;
    if (!(Atomics.load(s, W.Status) & DeviceStatus.FeaturesOk)) return;
    this.#driverFeatures = features64(Atomics.load(s, W.DriverFeaturesLo), Atomics.load(s, W.DriverFeaturesHi));
    this.#negotiated = true;
    this.device.featuresNegotiated?.(this.#driverFeatures);
  }

  #maybeActivate(): void {
    const s = this.state;
    if (this.#active) return;
    const status = Atomics.load(s, W.Status);
    if (!(status & DeviceStatus.DriverOk) || status & (DeviceStatus.DeviceNeedsReset | STATUS_RESET_PENDING)) return;
    if (!(status & DeviceStatus.FeaturesOk) || !this.#negotiated) {
      // §3.1.1: DRIVER_OK comes after an accepted FEATURES_OK. Say so rather
      // than sit there silently.
      this.#needsReset('DRIVER_OK without FEATURES_OK');
      return;
    }
    this.#memory.refresh();
    for (let q = 0; q < this.device.queueCount; q++) {
      const built = this.#buildQueue(q);
      if (built === 'bad') return;
      if (built === 'changing') this.#retryQueueLater(q);
    }
    this.#active = true;
    this.device.activate({
      memory: this.#memory,
      queues: this.#queues,
      driverFeatures: this.#driverFeatures,
      interrupt: () => this.#interrupt(InterruptBit.UsedBuffer),
      needsReset: (reason) => this.#needsReset(reason),
      wake: (q) => this.#wake(q),
      settled: () => this.#settle(),
    });
    // Chains made available before DRIVER_OK are served now.
    for (let q = 0; q < this.#queues.length; q++) if (this.#queues[q]) this.device.processQueue(q);
  }

  /** QueueReady changed after DRIVER_OK: stop the old rings, start the new ones. */
  #queuesChanged(): void {
    const mask = Atomics.exchange(this.state, W.QueueChangedMask, 0);
    if (!this.#active) return;
    for (let q = 0; q < this.device.queueCount; q++) {
      if (!(mask & (1 << q))) continue;
      const built = this.#buildQueue(q);
      if (built === 'bad') return;
      if (built === 'changing') this.#retryQueueLater(q);
      else if (built === 'started') this.device.processQueue(q);
    }
  }

  /**
   * Rebuild #queues[q] from the registers when they moved on from what it was
   * built from. 'bad' when the geometry is unusable (DEVICE_NEEDS_RESET is set).
   */
  #buildQueue(q: number): 'started' | 'stopped' | 'unchanged' | 'changing' | 'bad' {
    const read = this.#readQueue(q);
    if (read.kind === 'changing') return 'changing';
    if (read.epoch === this.#builtEpochs[q]) return 'unchanged';
    this.#queues[q] = null;
    this.#builtEpochs[q] = read.epoch;
    if (read.kind === 'stopped') return 'stopped';
    const { geometry } = read;
    const bad = queueProblem(this.#memory, geometry, this.device.queueMaxSize);
    if (bad) {
      this.#needsReset(`queue ${q}: ${bad}`);
      return 'bad';
    }
    const view = this.#queueViews[q]!;
    const epoch = read.epoch;
    // §4.2.2.1: nothing touches the rings once the driver disabled the queue
    // or reset the device (both move the epoch on).
    this.#queues[q] = splitQueueFor(this.#memory, geometry, this.#driverFeatures, {
      live: () => Atomics.load(view, Q.Epoch) === epoch,
    });
    return 'started';
  }

  /** Read queue q's ready bit and snapshot as one consistent set (the epoch is a sequence lock). */
  #readQueue(q: number): QueueRead {
    const v = this.#queueViews[q]!;
    for (let i = 0; i < SNAPSHOT_TRIES; i++) {
      const epoch = Atomics.load(v, Q.Epoch);
      if (epoch & 1) continue;
      const ready = Atomics.load(v, Q.Ready);
      const geometry: QueueGeometry = {
        size: Atomics.load(v, Q.SnapNum) >>> 0,
        descTable: joinU64(Atomics.load(v, Q.SnapDescLo), Atomics.load(v, Q.SnapDescHi)),
        availRing: joinU64(Atomics.load(v, Q.SnapDriverLo), Atomics.load(v, Q.SnapDriverHi)),
        usedRing: joinU64(Atomics.load(v, Q.SnapDeviceLo), Atomics.load(v, Q.SnapDeviceHi)),
      };
      if (Atomics.load(v, Q.Epoch) !== epoch) continue;
      return ready === 1 ? { kind: 'ready', epoch, geometry } : { kind: 'stopped', epoch };
    }
    return { kind: 'changing' };
  }

  /** The emulator is rewriting queue q right now: look again on a later pass. */
  #retryQueueLater(q: number): void {
    Atomics.or(this.state, W.QueueChangedMask, 1 << q);
    ringDoorbell(this.state, TransportEvent.Queue);
    this.onWake?.();
  }

  /** The device wants queue `q` processed again: go through the doorbell like a notification. */
  #wake(q: number): void {
    Atomics.or(this.state, W.NotifyMask, 1 << q);
    ringDoorbell(this.state, TransportEvent.Notify);
    this.onWake?.();
  }

  #interrupt(bit: number): void {
    const s = this.state;
    Atomics.add(s, W.InterruptCount, 1);
    // The device's writes to guest memory (data, status, used ring) happen
    // before this sequentially consistent RMW; an emulator that sees the bit
    // sees them.
    const before = Atomics.or(s, W.InterruptStatus, bit);
    if (isShared(s.buffer)) Atomics.notify(s, W.InterruptStatus);
    if (before === 0) this.onInterrupt?.(bit);
  }

  #needsReset(reason: string): void {
    const s = this.state;
    // §2.1.2: set DEVICE_NEEDS_RESET and, when DRIVER_OK is set, send a config
    // change notification. Not while reset (Status 0) or resetting: there is
    // no driver to tell.
    let old: number;
    do {
      old = Atomics.load(s, W.Status);
      if ((old & 0xff) === 0 || old & (STATUS_RESET_PENDING | DeviceStatus.DeviceNeedsReset)) return;
    } while (Atomics.compareExchange(s, W.Status, old, old | DeviceStatus.DeviceNeedsReset) !== old);
    this.onNeedsReset?.(reason);
    if (old & DeviceStatus.DriverOk) this.#interrupt(InterruptBit.ConfigChange);
  }

  /** The device's config changed (resize): publish it, bump ConfigGeneration, interrupt (§4.2.2). */
  configChanged(): void {
    this.#publishConfigAfterReset();
    this.#publishConfig();
    Atomics.add(this.state, W.ConfigGeneration, 1);
    if (Atomics.load(this.state, W.Status) & DeviceStatus.DriverOk) this.#interrupt(InterruptBit.ConfigChange);
  }

  /** Hand the bytes the driver wrote to the device, then publish its view (undoing read-only bytes). */
  #syncConfigFromDriver(): void {
    const cfg = this.device.config;
    for (let w = 0; w < MAX_CONFIG_BYTES / 32; w++) {
      let dirty = Atomics.exchange(this.state, W.ConfigDirty + w, 0);
      while (dirty !== 0) {
        const bit = 31 - Math.clz32(dirty);
        dirty &= ~(1 << bit);
        const offset = w * 32 + bit;
        if (offset >= cfg.length) continue;
        cfg[offset] = this.#config[offset]!;
        this.device.configWritten(offset, 1);
      }
    }
    this.#publishConfig();
  }

  /**
   * Show the device's config to the driver. Bytes the driver wrote since the
   * last sync keep the driver's value: the next sync hands them over.
   */
  #publishConfig(): void {
    const cfg = this.device.config;
    for (let i = 0; i < cfg.length; i++) {
      if (this.#config[i] === cfg[i]) continue;
      if (Atomics.load(this.state, W.ConfigDirty + (i >>> 5)) & (1 << (i & 31))) continue;
      this.#config[i] = cfg[i]!;
    }
  }

  /**
   * Keep the config as it reads after a reset and after FEATURES_OK, for the
   * emulator thread to show without waiting for the device.
   */
  #publishConfigAfterReset(): void {
    const s = this.state;
    const after = this.device.configAfterReset?.() ?? this.device.config;
    this.#configAfterReset.fill(0);
    this.#configAfterReset.set(after);
    Atomics.store(s, W.ConfigSize, after.length);
    const bits = maskBits(Atomics.load(s, W.ConfigFeatureBitsLo), Atomics.load(s, W.ConfigFeatureBitsHi));
    for (let index = 0; bits.length > 0 && index < 1 << bits.length; index++) {
      let features = 0n;
      for (let i = 0; i < bits.length; i++) if (index & (1 << i)) features |= 1n << BigInt(bits[i]!);
      const image = configBytes(s, CONFIG_NEGOTIATED_BYTE + index * MAX_CONFIG_BYTES);
      image.fill(0);
      image.set(this.device.configAfterNegotiation?.(features) ?? after);
    }
  }

  /** Forget the driver: nothing of the old setup is served again. */
  #forgetDriver(): void {
    this.#active = false;
    this.#negotiated = false;
    this.#driverFeatures = 0n;
    this.#queues.fill(null);
    this.#builtEpochs.fill(-1);
  }

  /** The emulator already reset the registers (we were idle): forget the driver. */
  #dropState(): void {
    this.#forgetDriver();
    // Nothing is in flight (the emulator found us idle), so this settles at once.
    void this.device.reset();
    this.#publishConfig();
  }

  /** Reset while busy: drop in-flight work, then reset the registers and let Status read 0. */
  #beginReset(): void {
    if (this.#resetting) return;
    this.#forgetDriver();
    this.#resetting = true;
    const finish = (): void => {
      this.#resetting = false;
      // Whatever the driver wrote while the reset was pending goes with it,
      // before Status reads 0 and the driver may write again.
      Atomics.store(this.state, W.Events, 0);
      this.#publishConfig();
      resetRegisters(this.state, this.#queueViews);
      this.#settle();
      this.onResetDone?.();
    };
    this.device.reset().then(finish, finish);
  }
}
