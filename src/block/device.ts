// The virtio-blk device (virtio 1.2 §5.2): features, config space, and the
// request loop — pop, parse, rate-limit, execute, complete.
//
// Execution is synchronous whenever the backend is (memory, OPFS, Node files):
// a whole batch of chains completes inside one `processQueue` call, published
// every few completions so the driver can refill the ring meanwhile, with an
// interrupt only where the driver asked for one (EVENT_IDX). A backend call
// that returns a promise parks its request; it completes on its own later
// (out of order), publishing and interrupting as it lands. In-flight requests
// are bounded by the queue size: each holds one of a pool of slots, made on
// first use and kept. What the guest can make the device hold is bounded by
// construction: queue sizes up to MAX_DEVICE_QUEUE_SIZE, chains up to
// seg_max + framing segments, discard segments up to max_discard_seg.
//
// The status byte is written in exactly one place (`#complete`), and every
// outcome maps to a status in `#execute`'s callers through `BlkStatus`.
// Nothing the guest sends makes this code throw: malformed chains complete
// with used.len 0, and an unusable ring sets DEVICE_NEEDS_RESET.

import { StorageError, isPromise, toStorageError, type BlockBackend } from '../backends/backend.ts';
import { hasFeature, type ActivateContext, type VirtioDevice } from '../virtio/device.ts';
import type { IoKind } from '../limiter/limiter.ts';
import { DescriptorChain, PopResult, isQueueSize, type SplitQueue } from '../virtio/queue.ts';
import {
  BLK_CONDITIONAL_FEATURES,
  BLK_DWZ_SEGMENT_BYTES,
  BLK_ID_BYTES,
  BLK_SUPPORTED_FEATURES,
  BlkConfig,
  BlkFeature,
  BlkRequestType,
  BlkStatus,
  SECTOR_SIZE,
  VIRTIO_ID_BLOCK,
  WRITE_ZEROES_FLAG_UNMAP,
} from './constants.ts';
import { BlockRequest, copyFromChain, copyToChain, parseRequest, seek } from './request.ts';

/** What FLUSH means. */
export const CacheMode = {
  /** Writes may sit in a cache; FLUSH makes them durable (backend.flush). */
  Writeback: 'writeback',
  /** FLUSH completes at once without durability: fast, loses data on a crash. */
  Unsafe: 'unsafe',
} as const;
export type CacheMode = (typeof CacheMode)[keyof typeof CacheMode];

/** Largest queue size the device offers: its slots and their segment lists are what a guest can make it hold. */
export const MAX_DEVICE_QUEUE_SIZE = 1024;
/** Most data segments per request the device advertises (seg_max), whatever the queue size. */
export const MAX_SEGMENTS_PER_REQUEST = 254;
/**
 * Segments a chain may have beyond seg_max: the header and status (2), a
 * header split byte by byte (§5.2.6 allows any framing), buffers split at
 * guest-memory region boundaries.
 */
const FRAMING_SEGMENTS = 2 + 16 + 16;
/** Largest max_discard_seg / max_write_zeroes_seg the device accepts as an option. */
const MAX_DISCARD_SEGMENTS_LIMIT = 4096;

/** The device's view of a rate limiter (src/limiter's RateLimiter satisfies it). */
export interface RequestLimiter {
  /** Take `bytes` (and one op) for a request of `kind`; false when the budget is spent. */
  consume(kind: IoKind, bytes: number): boolean;
  /** Milliseconds until a refused request may succeed. */
  msUntilReady(): number;
  /** Call `listener` when the limits change (RateLimiter.update); returns the unsubscribe function. */
  onUpdate?(listener: () => void): () => void;
}

/** Timers the device uses for throttled retries (injectable for tests). */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface BlockDeviceOptions {
  /** Offer VIRTIO_BLK_F_RO and refuse writes. Default: the backend's readOnly. */
  readOnly?: boolean;
  /** Default writeback. */
  cacheMode?: CacheMode;
  /** GET_ID answer: up to 20 bytes of ASCII. Default "virtio-blk-web". */
  serial?: string;
  /** Queue size offered (QueueNumMax), a power of two from 4 to MAX_DEVICE_QUEUE_SIZE. Default 256. */
  queueSize?: number;
  /** Largest data segment the driver may use (size_max). Default 1 MiB. */
  sizeMaxBytes?: number;
  /** Physical block size (topology). Default 4096. */
  physicalBlockBytes?: number;
  /** Largest sectors per discard / write-zeroes segment. Default 2^22 (2 GiB). */
  maxDiscardSectors?: number;
  /** Most segments per discard / write-zeroes request, 1 to 4096. Default 32. */
  maxDiscardSegments?: number;
  /** Throttles requests; refused chains are retried on a timer. */
  limiter?: RequestLimiter | null;
  /** For tests: an injected timer source. */
  timers?: Timers;
  /** Told of every storage error (the guest sees IOERR). */
  onStorageError?: (error: StorageError) => void;
}

/** The device's counters, in the order hosts lay them out (src/host/browser/stats.ts derives its list from this one). */
export const BLOCK_STAT_NAMES = [
  'reads',
  'writes',
  'flushes',
  'discards',
  'writeZeroes',
  'getIds',
  'bytesRead',
  'bytesWritten',
  /** Requests answered IOERR (storage failures, out-of-range sectors, writes to read-only). */
  'ioErrors',
  /** Requests answered UNSUPP. */
  'unsupported',
  /** Chains completed with used.len 0 (no status could be written). */
  'malformed',
  /** Times a chain was put back because the rate limiter refused it. */
  'throttled',
  /** Requests completed (any status). */
  'completed',
] as const;

/** Counters since the device was created (see BLOCK_STAT_NAMES). */
export type BlockDeviceStats = Record<(typeof BLOCK_STAT_NAMES)[number], number>;

/** What happened to a popped chain. */
const Outcome = {
  /** Completed synchronously: a used element is pushed. */
  Executed: 0,
  /** Parked on a promise; it completes on its own. */
  Submitted: 1,
  /** Refused by the limiter: un-pop it and retry later. */
  Throttled: 2,
} as const;
type Outcome = (typeof Outcome)[keyof typeof Outcome];

/** One in-flight request. A pool of at most queue-size slots per queue bounds what is in flight. */
class Slot {
  readonly req: BlockRequest;
  queueIndex = 0;
  /** The queue the chain was popped from: a completion for a queue since replaced is dropped. */
  queue: SplitQueue | null = null;
  generation = 0;
  /** Bytes written into device-writable buffers besides the status byte. */
  written = 0;
  /** Reused list of data views for vectored backend calls. */
  readonly views: Uint8Array[] = [];
  /**
   * The discard / write-zeroes segments, copied once out of guest memory and
   * used only from here (the guest may rewrite its copy meanwhile). Made on
   * the slot's first such request.
   */
  segments: { bytes: Uint8Array; view: DataView } | null = null;
  constructor(maxSegments: number) {
    this.req = new BlockRequest(new DescriptorChain(16, maxSegments));
  }
}

type StatusResult = BlkStatus | Promise<BlkStatus>;

const cursor = { within: 0 };

/**
 * A long batch publishes its completions this many at a time, or once this
 * many bytes moved, whichever comes first (see `processQueue`): often enough
 * that the driver refills the ring before it drains, seldom enough that the
 * interrupts it asks for stay cheap beside the work.
 */
const PUBLISH_EVERY = 16;
const PUBLISH_EVERY_BYTES = 2 << 20;

/** Make the pushed completions visible; interrupt if the driver asked for it (§2.7.7.2, §2.7.10). */
function publish(queue: SplitQueue, ctx: ActivateContext, index: number): void {
  queue.publishUsed();
  if (queue.needsInterrupt()) ctx.interrupt(index);
}

export class VirtioBlkDevice implements VirtioDevice {
  readonly deviceId = VIRTIO_ID_BLOCK;
  readonly deviceFeatures: bigint;
  readonly queueCount = 1;
  readonly queueMaxSize: number;
  readonly config = new Uint8Array(BlkConfig.Size);
  readonly stats = Object.fromEntries(BLOCK_STAT_NAMES.map((name) => [name, 0])) as BlockDeviceStats;
  onConfigChange: (() => void) | null = null;

  readonly #backend: BlockBackend;
  readonly #readOnly: boolean;
  readonly #cacheMode: CacheMode;
  readonly #serial = new Uint8Array(BLK_ID_BYTES);
  readonly #timers: Timers;
  readonly #onStorageError: ((error: StorageError) => void) | null;
  readonly #maxDiscardSectors: number;
  readonly #maxDiscardSegments: number;
  /** The config as the device means it; driver writes are checked against it. */
  readonly #configShadow = new Uint8Array(BlkConfig.Size);
  #limiter: RequestLimiter | null;
  #capacitySectors: number;

  // Set by activate, cleared by reset.
  #ctx: ActivateContext | null = null;
  /** Slots not in flight. Kept across resets; in-flight ones come back when they land. */
  readonly #free: Slot[] = [];
  /** Slots made so far, at most #maxSlots. */
  #slots = 0;
  readonly #maxSlots: number;
  readonly #maxChainSegments: number;
  /** Queues that found no free slot: served again as soon as one comes back. */
  #starved = 0;
  /** Features the driver accepted: from FEATURES_OK (featuresNegotiated) or activate, until reset. */
  #driverFeatures = 0n;
  #negotiated = false;
  /** Bumped by reset: async completions of an older generation touch nothing. */
  #generation = 0;
  #inFlight = 0;
  #resetWaiters: Array<() => void> = [];
  /** A retry timer per queue while the limiter refuses it. */
  #throttleTimers: unknown[] = [];
  /** Ends the limiter subscription taken while active (new limits retry throttled queues at once). */
  #unsubscribeLimiter: (() => void) | null = null;
  #broken = false;

  constructor(backend: BlockBackend, options: BlockDeviceOptions = {}) {
    this.#backend = backend;
    this.#readOnly = options.readOnly ?? backend.readOnly;
    this.#cacheMode = options.cacheMode ?? CacheMode.Writeback;
    this.#limiter = options.limiter ?? null;
    this.#timers = options.timers ?? realTimers;
    this.#onStorageError = options.onStorageError ?? null;
    const queueSize = options.queueSize ?? 256;
    if (!isQueueSize(queueSize, MAX_DEVICE_QUEUE_SIZE, 4)) {
      throw new RangeError(`queue size ${queueSize} must be a power of two from 4 to ${MAX_DEVICE_QUEUE_SIZE}`);
    }
    this.queueMaxSize = queueSize;
    const segMax = Math.min(queueSize - 2, MAX_SEGMENTS_PER_REQUEST);
    this.#maxChainSegments = segMax + FRAMING_SEGMENTS;
    this.#maxSlots = queueSize * this.queueCount;
    this.#maxDiscardSectors = options.maxDiscardSectors ?? 1 << 22;
    this.#maxDiscardSegments = options.maxDiscardSegments ?? 32;
    if (!Number.isInteger(this.#maxDiscardSegments) || this.#maxDiscardSegments < 1 || this.#maxDiscardSegments > MAX_DISCARD_SEGMENTS_LIMIT) {
      throw new RangeError(`maxDiscardSegments must be an integer from 1 to ${MAX_DISCARD_SEGMENTS_LIMIT}`);
    }
    const serial = new TextEncoder().encode(options.serial ?? 'virtio-blk-web');
    this.#serial.set(serial.subarray(0, BLK_ID_BYTES));
    if (!this.#readOnly && backend.readOnly) throw new RangeError('a read-only backend needs a read-only device');
    this.#capacitySectors = Math.floor(backend.size / SECTOR_SIZE);

    const discard = backend.supportsDiscard && !this.#readOnly;
    const writeZeroes = backend.supportsWriteZeroes && !this.#readOnly;
    let f = BLK_SUPPORTED_FEATURES & ~BLK_CONDITIONAL_FEATURES;
    if (this.#readOnly) f |= 1n << BlkFeature.Ro;
    if (discard) f |= 1n << BlkFeature.Discard;
    if (writeZeroes) f |= 1n << BlkFeature.WriteZeroes;
    this.deviceFeatures = f;

    // §5.2.4: fields of features not offered stay zero.
    const v = new DataView(this.#configShadow.buffer);
    const physical = options.physicalBlockBytes ?? 4096;
    v.setUint32(BlkConfig.SizeMax, options.sizeMaxBytes ?? 1 << 20, true);
    v.setUint32(BlkConfig.SegMax, segMax, true);
    v.setUint32(BlkConfig.BlkSize, SECTOR_SIZE, true);
    v.setUint8(BlkConfig.PhysicalBlockExp, Math.log2(physical / SECTOR_SIZE));
    v.setUint16(BlkConfig.MinIoSize, physical / SECTOR_SIZE, true);
    v.setUint8(BlkConfig.Writeback, 1);
    if (discard) {
      v.setUint32(BlkConfig.MaxDiscardSectors, this.#maxDiscardSectors, true);
      v.setUint32(BlkConfig.MaxDiscardSeg, this.#maxDiscardSegments, true);
      v.setUint32(BlkConfig.DiscardSectorAlignment, physical / SECTOR_SIZE, true);
    }
    if (writeZeroes) {
      v.setUint32(BlkConfig.MaxWriteZeroesSectors, this.#maxDiscardSectors, true);
      v.setUint32(BlkConfig.MaxWriteZeroesSeg, this.#maxDiscardSegments, true);
      v.setUint8(BlkConfig.WriteZeroesMayUnmap, 1);
    }
    this.#writeCapacity();
  }

  /** Disk size in 512-byte sectors. */
  get capacitySectors(): number {
    return this.#capacitySectors;
  }

  get readOnly(): boolean {
    return this.#readOnly;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get backend(): BlockBackend {
    return this.#backend;
  }

  /** Replace the rate limiter (or remove it) while the guest runs. */
  setLimiter(limiter: RequestLimiter | null): void {
    this.#limiter = limiter;
    if (this.#ctx) this.#subscribeLimiter();
    this.#retryAllNow();
  }

  /** While active, retry throttled queues as soon as the limits change: their timers were set for the old ones. */
  #subscribeLimiter(): void {
    this.#unsubscribeLimiter?.();
    this.#unsubscribeLimiter = this.#limiter?.onUpdate?.(() => this.#retryAllNow()) ?? null;
  }

  #retryAllNow(): void {
    for (let q = 0; q < this.#throttleTimers.length; q++) this.#retryNow(q);
  }

  /** Whether writes are cached (FLUSH needed) rather than written through (§5.2.5). */
  get writeback(): boolean {
    if (!this.#negotiated) return true;
    if (hasFeature(this.#driverFeatures, BlkFeature.ConfigWce)) return this.config[BlkConfig.Writeback] !== 0;
    // §5.2.5.1: without CONFIG_WCE, writeback iff FLUSH was negotiated.
    return hasFeature(this.#driverFeatures, BlkFeature.Flush);
  }

  /** Whether the driver may choose writeback: CONFIG_WCE, and FLUSH to make it safe (§5.2.5.2). */
  #writebackWritable(): boolean {
    return hasFeature(this.#driverFeatures, BlkFeature.ConfigWce) && hasFeature(this.#driverFeatures, BlkFeature.Flush);
  }

  /** Change the disk size; the guest gets a config-change interrupt and sees the new capacity. */
  resize(newSizeBytes: number): void | Promise<void> {
    if (!this.#backend.resize) throw new StorageError('unsupported', 'this backend cannot resize');
    const done = (): void => {
      this.#capacitySectors = Math.floor(this.#backend.size / SECTOR_SIZE);
      this.#writeCapacity();
      this.onConfigChange?.();
    };
    const r = this.#backend.resize(newSizeBytes);
    if (isPromise(r)) return r.then(done);
    done();
  }

  #writeCapacity(): void {
    const v = new DataView(this.#configShadow.buffer);
    v.setUint32(BlkConfig.Capacity, this.#capacitySectors % 0x1_0000_0000, true);
    v.setUint32(BlkConfig.Capacity + 4, Math.floor(this.#capacitySectors / 0x1_0000_0000), true);
    const writeback = this.config[BlkConfig.Writeback];
    this.config.set(this.#configShadow);
    // Keep the driver's writeback choice across a capacity change.
    if (this.#negotiated) this.config[BlkConfig.Writeback] = writeback!;
  }

  configWritten(offset: number, length: number): void {
    for (let i = offset; i < offset + length && i < this.config.length; i++) {
      // §5.2.5: only `writeback` is writable, and only with CONFIG_WCE (and
      // FLUSH: without it the device stays write-through, §5.2.5.2).
      if (i === BlkConfig.Writeback && this.#writebackWritable()) {
        this.config[i] = this.config[i] ? 1 : 0;
      } else if (i !== BlkConfig.Writeback) {
        this.config[i] = this.#configShadow[i]!;
      } else {
        this.config[i] = this.#negotiated ? this.#initialWriteback() : this.#configShadow[i]!;
      }
    }
  }

  #initialWriteback(): number {
    return initialWriteback(this.#driverFeatures, this.#configShadow[BlkConfig.Writeback]!);
  }

  featuresNegotiated(driverFeatures: bigint): void {
    this.#driverFeatures = driverFeatures;
    this.#negotiated = true;
    // The driver's writeback choice starts here (§3.1.1 step 7 lets it write
    // the field before DRIVER_OK).
    this.config[BlkConfig.Writeback] = this.#initialWriteback();
  }

  configAfterReset(): Uint8Array {
    return this.#configShadow;
  }

  /** writeback's first value depends on these two (§5.2.5.2). */
  readonly configFeatureBits = (1n << BlkFeature.ConfigWce) | (1n << BlkFeature.Flush);

  configAfterNegotiation(driverFeatures: bigint): Uint8Array {
    const image = this.#configShadow.slice();
    image[BlkConfig.Writeback] = initialWriteback(driverFeatures, this.#configShadow[BlkConfig.Writeback]!);
    return image;
  }

  activate(ctx: ActivateContext): void {
    // A transport that says nothing at FEATURES_OK (vhost-user) negotiates here.
    if (!this.#negotiated || this.#driverFeatures !== ctx.driverFeatures) this.featuresNegotiated(ctx.driverFeatures);
    this.#ctx = ctx;
    this.#broken = false;
    this.#starved = 0;
    this.#throttleTimers = ctx.queues.map(() => null);
    this.#subscribeLimiter();
  }

  /** A free slot, made on first use up to one per queue entry; null when all are in flight. */
  #takeSlot(): Slot | null {
    const slot = this.#free.pop();
    if (slot) return slot;
    if (this.#slots === this.#maxSlots) return null;
    this.#slots++;
    return new Slot(this.#maxChainSegments);
  }

  /** A slot came back from flight: a queue that ran out of slots may go on. */
  #releaseSlot(slot: Slot): void {
    slot.queue = null;
    this.#free.push(slot);
    if (this.#starved === 0 || !this.#ctx) return;
    const starved = this.#starved;
    this.#starved = 0;
    for (let q = 0; q < this.#ctx.queues.length; q++) if (starved & (1 << q)) this.#ctx.wake(q);
  }

  reset(): Promise<void> {
    this.#generation++;
    for (const t of this.#throttleTimers) if (t !== null) this.#timers.clearTimeout(t);
    this.#throttleTimers = [];
    this.#unsubscribeLimiter?.();
    this.#unsubscribeLimiter = null;
    this.#ctx = null;
    this.#starved = 0;
    this.#driverFeatures = 0n;
    this.#negotiated = false;
    this.#broken = false;
    this.config.set(this.#configShadow);
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#resetWaiters.push(resolve));
  }

  processQueue(index: number): void {
    const ctx = this.#ctx;
    const queue = ctx?.queues[index];
    // §2.1 / §3.1: nothing is consumed before DRIVER_OK (activate), nor after
    // the ring broke, nor while the limiter holds the queue.
    if (!ctx || !queue || this.#broken || this.#throttleTimers[index] !== null) return;
    let pushed = 0;
    let pushedBytes = 0;
    try {
      outer: for (;;) {
        queue.disableNotification();
        for (;;) {
          const slot = this.#takeSlot();
          // No free slot means every chain is in flight: a completion hands
          // one back and serves this queue again (#releaseSlot).
          if (!slot) {
            this.#starved |= 1 << index;
            break outer;
          }
          const popped = queue.pop(slot.req.chain);
          if (popped !== PopResult.Chain) {
            this.#free.push(slot);
            if (popped === PopResult.Broken) {
              // What completed before the bad entry is answered; nothing after it is read.
              if (pushed > 0) publish(queue, ctx, index);
              this.#broken = true;
              ctx.needsReset(`queue ${index}: ${queue.brokenReason}`);
              return;
            }
            break;
          }
          slot.queueIndex = index;
          slot.queue = queue;
          slot.generation = this.#generation;
          const outcome = this.#start(slot);
          if (outcome === Outcome.Executed) {
            this.#free.push(slot);
            // Publish as the batch goes, not only at its end: the driver can
            // reap and refill while the device works on the rest, so the ring
            // never drains and the device never sleeps between batches. With
            // EVENT_IDX this costs a store; the interrupt still comes only
            // when the driver asked for one (used_event).
            pushedBytes += slot.req.dataBytes;
            if (++pushed >= PUBLISH_EVERY || pushedBytes >= PUBLISH_EVERY_BYTES) {
              publish(queue, ctx, index);
              pushed = 0;
              pushedBytes = 0;
            }
          } else if (outcome === Outcome.Throttled) {
            queue.undoPop();
            this.#free.push(slot);
            this.stats.throttled++;
            this.#throttle(index);
            break outer;
          }
        }
        if (pushed > 0) {
          publish(queue, ctx, index);
          pushed = 0;
          pushedBytes = 0;
        }
        if (!queue.enableNotification()) break;
      }
      if (pushed > 0) publish(queue, ctx, index);
    } catch (err) {
      // Only a device bug gets here (every guest-controlled range is checked
      // before use). Stop serving this ring instead of throwing.
      this.#broken = true;
      ctx.needsReset(`queue ${index}: internal error: ${String(err)}`);
    }
  }

  #throttle(index: number): void {
    const ms = Math.max(1, Math.ceil(this.#limiter?.msUntilReady() ?? 1));
    this.#throttleTimers[index] = this.#timers.setTimeout(() => this.#retryNow(index), ms);
  }

  #retryNow(index: number): void {
    const t = this.#throttleTimers[index];
    if (t === null || t === undefined) return;
    this.#timers.clearTimeout(t);
    this.#throttleTimers[index] = null;
    this.#ctx?.wake(index);
  }

  /** Parse, rate-limit and execute one popped chain. */
  #start(slot: Slot): Outcome {
    const mem = this.#ctx!.memory;
    const req = slot.req;
    slot.written = 0;
    if (parseRequest(mem, req) !== null) {
      this.stats.malformed++;
      this.#complete(slot, -1);
      return Outcome.Executed;
    }
    const limiter = this.#limiter;
    if (limiter) {
      const kind: IoKind =
        req.type === BlkRequestType.In ? 'read' : req.type === BlkRequestType.Out ? 'write' : 'other';
      const bytes = kind === 'other' ? 0 : req.dataBytes;
      if (!limiter.consume(kind, bytes)) return Outcome.Throttled;
    }
    let result: StatusResult;
    try {
      result = this.#execute(slot);
    } catch (err) {
      result = this.#storageFailure(err);
    }
    if (!isPromise(result)) {
      this.#complete(slot, result);
      return Outcome.Executed;
    }
    this.#inFlight++;
    const generation = slot.generation;
    result.then(
      (status) => this.#landed(slot, generation, status),
      (err: unknown) => this.#landed(slot, generation, this.#storageFailure(err)),
    );
    return Outcome.Submitted;
  }

  /** An asynchronous request finished. */
  #landed(slot: Slot, generation: number, status: BlkStatus): void {
    this.#inFlight--;
    if (generation !== this.#generation) {
      // Reset meanwhile: the guest forgot this request; touch nothing.
      slot.queue = null;
      this.#free.push(slot);
      if (this.#inFlight === 0) for (const w of this.#resetWaiters.splice(0)) w();
      return;
    }
    const ctx = this.#ctx!;
    const queue = slot.queue;
    try {
      // The driver stopped (or restarted) the queue meanwhile: there is no
      // ring to answer in (§4.2.2.1).
      if (queue !== null && queue === ctx.queues[slot.queueIndex]) {
        this.#complete(slot, status);
        publish(queue, ctx, slot.queueIndex);
      }
    } catch (err) {
      this.#broken = true;
      ctx.needsReset(`internal error: ${String(err)}`);
    } finally {
      this.#releaseSlot(slot);
    }
    if (this.#inFlight === 0) ctx.settled();
  }

  /**
   * Write the status byte (unless the chain is malformed, status −1) and push
   * the used element. The only place a status byte is written.
   */
  #complete(slot: Slot, status: BlkStatus | -1): void {
    const req = slot.req;
    const queue = slot.queue!;
    this.stats.completed++;
    if (status === -1) {
      queue.pushUsed(req.chain.head, 0);
      return;
    }
    if (status === BlkStatus.IoErr) this.stats.ioErrors++;
    else if (status === BlkStatus.Unsupp) this.stats.unsupported++;
    this.#ctx!.memory.writeU8(req.statusAddr, status);
    // §2.7.8.2 / §5.2.6: used.len counts the bytes written, status included.
    queue.pushUsed(req.chain.head, (status === BlkStatus.Ok ? slot.written : 0) + 1);
  }

  #storageFailure(err: unknown): BlkStatus {
    const e = toStorageError(err, 'block request');
    this.#onStorageError?.(e);
    return BlkStatus.IoErr;
  }

  #execute(slot: Slot): StatusResult {
    const req = slot.req;
    switch (req.type) {
      case BlkRequestType.In:
        return this.#readWrite(slot, false);
      case BlkRequestType.Out:
        return this.#readWrite(slot, true);
      case BlkRequestType.Flush:
        this.stats.flushes++;
        return this.#flush();
      case BlkRequestType.GetId: {
        this.stats.getIds++;
        // §5.2.6: up to 20 bytes; a shorter buffer gets what fits.
        const n = Math.min(BLK_ID_BYTES, req.dataBytes);
        copyToChain(this.#ctx!.memory, req.chain, req.dataOffset, this.#serial.subarray(0, n));
        slot.written = n;
        return BlkStatus.Ok;
      }
      case BlkRequestType.Discard:
        if (!hasFeature(this.#driverFeatures, BlkFeature.Discard)) return BlkStatus.Unsupp;
        this.stats.discards++;
        return this.#discardOrZero(slot, false);
      case BlkRequestType.WriteZeroes:
        if (!hasFeature(this.#driverFeatures, BlkFeature.WriteZeroes)) return BlkStatus.Unsupp;
        this.stats.writeZeroes++;
        return this.#discardOrZero(slot, true);
      default:
        // §5.2.6.1: unknown types are answered UNSUPP.
        return BlkStatus.Unsupp;
    }
  }

  #flush(): StatusResult {
    if (this.#cacheMode === CacheMode.Unsafe) return BlkStatus.Ok;
    const r = this.#backend.flush();
    return isPromise(r) ? r.then(() => BlkStatus.Ok) : BlkStatus.Ok;
  }

  #readWrite(slot: Slot, write: boolean): StatusResult {
    const req = slot.req;
    const bytes = req.dataBytes;
    if (write) this.stats.writes++;
    else this.stats.reads++;
    // §5.2.6.2: a write to a read-only device fails, and nothing is written.
    if (write && this.#readOnly) return BlkStatus.IoErr;
    // Data is whole sectors, inside the disk (§5.2.6.2).
    if (bytes % SECTOR_SIZE !== 0) return BlkStatus.IoErr;
    if (req.sector > this.#capacitySectors || bytes / SECTOR_SIZE > this.#capacitySectors - req.sector) {
      return BlkStatus.IoErr;
    }
    const seg = seek(req.chain, req.dataOffset, cursor);
    const vectored = write ? this.#backend.writev !== undefined : this.#backend.readv !== undefined;
    const r =
      vectored && bytes > req.chain.len[seg]! - cursor.within
        ? this.#transferVectored(slot, write, seg, cursor.within, bytes, req.sector * SECTOR_SIZE)
        : this.#transfer(slot, write, seg, cursor.within, bytes, req.sector * SECTOR_SIZE);
    if (!write) return r;
    const after = (status: BlkStatus): StatusResult =>
      status === BlkStatus.Ok && !this.writeback ? this.#flush() : status;
    return isPromise(r) ? r.then(after) : after(r);
  }

  /** Move `remaining` bytes between the chain (from segment `seg`, offset `within`) and the disk at `offset`. */
  #transfer(slot: Slot, write: boolean, seg: number, within: number, remaining: number, offset: number): StatusResult {
    const chain = slot.req.chain;
    const mem = this.#ctx!.memory;
    const backend = this.#backend;
    while (remaining > 0) {
      const n = Math.min(chain.len[seg]! - within, remaining);
      const view = mem.cachedView(chain.addr[seg]! + within, n);
      if (!view) return BlkStatus.IoErr;
      const r = write ? backend.write(offset, view) : backend.read(offset, view);
      offset += n;
      remaining -= n;
      seg++;
      within = 0;
      if (write) this.stats.bytesWritten += n;
      else {
        this.stats.bytesRead += n;
        slot.written += n;
      }
      if (isPromise(r)) {
        const s = seg;
        const left = remaining;
        const at = offset;
        return r.then(() => (slot.generation === this.#generation ? this.#transfer(slot, write, s, 0, left, at) : BlkStatus.IoErr));
      }
    }
    return BlkStatus.Ok;
  }

  /** The whole data range in one readv / writev call. */
  #transferVectored(slot: Slot, write: boolean, seg: number, within: number, bytes: number, offset: number): StatusResult {
    const chain = slot.req.chain;
    const mem = this.#ctx!.memory;
    const views = slot.views;
    views.length = 0;
    for (let remaining = bytes; remaining > 0; seg++, within = 0) {
      const n = Math.min(chain.len[seg]! - within, remaining);
      const view = mem.cachedView(chain.addr[seg]! + within, n);
      if (!view) return BlkStatus.IoErr;
      views.push(view);
      remaining -= n;
    }
    const r = write ? this.#backend.writev!(offset, views) : this.#backend.readv!(offset, views);
    const done = (): BlkStatus => {
      views.length = 0;
      if (write) this.stats.bytesWritten += bytes;
      else {
        this.stats.bytesRead += bytes;
        slot.written += bytes;
      }
      return BlkStatus.Ok;
    };
    return isPromise(r) ? r.then(done) : done();
  }

  /**
   * DISCARD or WRITE_ZEROES (§5.2.6.2): copy every segment out of guest memory
   * once, check them all, then apply them from the copy in order. In
   * write-through mode the change is flushed before it completes, as writes are.
   */
  #discardOrZero(slot: Slot, zeroes: boolean): StatusResult {
    const req = slot.req;
    if (this.#readOnly) return BlkStatus.IoErr;
    const count = req.dataBytes / BLK_DWZ_SEGMENT_BYTES;
    if (!Number.isInteger(count) || count === 0 || count > this.#maxDiscardSegments) return BlkStatus.IoErr;
    if (!slot.segments) {
      const bytes = new Uint8Array(this.#maxDiscardSegments * BLK_DWZ_SEGMENT_BYTES);
      slot.segments = { bytes, view: new DataView(bytes.buffer) };
    }
    const segments = slot.segments;
    copyFromChain(this.#ctx!.memory, req.chain, req.dataOffset, segments.bytes, req.dataBytes);
    // A request that fails must change nothing: validate all segments first.
    for (let i = 0; i < count; i++) {
      const bad = this.#checkSegment(segments.view, i * BLK_DWZ_SEGMENT_BYTES, zeroes);
      if (bad !== null) return bad;
    }
    const r = this.#applySegments(slot, 0, count, zeroes);
    const after = (status: BlkStatus): StatusResult => (status === BlkStatus.Ok && !this.writeback ? this.#flush() : status);
    return isPromise(r) ? r.then(after) : after(r);
  }

  /** Check one copied segment; returns the failing status, or null when valid. */
  #checkSegment(v: DataView, at: number, zeroes: boolean): BlkStatus | null {
    const sector = v.getUint32(at, true) + v.getUint32(at + 4, true) * 0x1_0000_0000;
    const sectors = v.getUint32(at + 8, true);
    const flags = v.getUint32(at + 12, true);
    // §5.2.6.2: unknown flags, or UNMAP on a discard, are unsupported.
    if (zeroes ? flags & ~WRITE_ZEROES_FLAG_UNMAP : flags !== 0) return BlkStatus.Unsupp;
    if (sectors > this.#maxDiscardSectors) return BlkStatus.IoErr;
    if (sector > this.#capacitySectors || sectors > this.#capacitySectors - sector) return BlkStatus.IoErr;
    return null;
  }

  #applySegments(slot: Slot, from: number, count: number, zeroes: boolean): StatusResult {
    const v = slot.segments!.view;
    for (let i = from; i < count; i++) {
      const at = i * BLK_DWZ_SEGMENT_BYTES;
      const sectors = v.getUint32(at + 8, true);
      if (sectors === 0) continue;
      const offset = (v.getUint32(at, true) + v.getUint32(at + 4, true) * 0x1_0000_0000) * SECTOR_SIZE;
      const length = sectors * SECTOR_SIZE;
      const unmap = (v.getUint32(at + 12, true) & WRITE_ZEROES_FLAG_UNMAP) !== 0;
      const r = zeroes ? this.#backend.writeZeroes(offset, length, unmap) : this.#backend.discard(offset, length);
      if (isPromise(r)) {
        const next = i + 1;
        return r.then(() =>
          slot.generation === this.#generation ? this.#applySegments(slot, next, count, zeroes) : BlkStatus.IoErr,
        );
      }
    }
    return BlkStatus.Ok;
  }
}

/** writeback's value at negotiation: the default, or 0 under CONFIG_WCE without FLUSH (§5.2.5.2). */
function initialWriteback(driverFeatures: bigint, byDefault: number): number {
  if (hasFeature(driverFeatures, BlkFeature.ConfigWce) && !hasFeature(driverFeatures, BlkFeature.Flush)) return 0;
  return byDefault;
}

