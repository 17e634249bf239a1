// The device side of a split virtqueue (virtio 1.2 §2.7).
//
// It knows nothing of block devices: it pops descriptor chains from the
// available ring into reusable `DescriptorChain` objects, publishes used
// elements, and decides whether the driver wants an interrupt. Everything the
// guest controls is bounded here, each guard citing its section. A malformed
// chain is still returned (with `error` set) so the device can complete it with
// used.len 0; a malformed ring (runaway avail.idx, a head index out of range)
// is reported as `PopResult.Broken` and the device sets DEVICE_NEEDS_RESET.
//
// Chains split every descriptor at guest-memory region boundaries, so each
// segment maps onto exactly one zero-copy view.

import type { GuestMemory } from './memory.ts';

/** Descriptor flags (§2.7.5). */
export const DescFlag = {
  Next: 1,
  Write: 2,
  Indirect: 4,
} as const;

/** avail.flags: the driver does not want interrupts (§2.7.7). */
export const AVAIL_F_NO_INTERRUPT = 1;
/** used.flags: the device does not want notifications (§2.7.10). */
export const USED_F_NO_NOTIFY = 1;

/** Largest split queue size (§2.7: Queue Size is a power of 2, at most 32768). */
export const MAX_QUEUE_SIZE = 32768;

/** Where a split queue lives in guest memory. */
export interface QueueGeometry {
  size: number;
  descTable: number;
  availRing: number;
  usedRing: number;
}

/** Why a descriptor chain (or the whole ring) is malformed. */
export const QueueError = {
  /** A descriptor index is ≥ the queue (or indirect table) size (§2.7.5.2). */
  DescriptorIndexOutOfRange: 'descriptor-index-out-of-range',
  /** The chain visits more descriptors than the queue (or its indirect table) has: a loop (§2.7.5.2, §2.7.5.3.1). */
  ChainTooLong: 'chain-too-long',
  /** More descriptors or segments than the device accepts in one chain (its seg_max, plus framing). */
  TooManySegments: 'too-many-segments',
  /** The chain's total length exceeds 2^32 bytes (§2.7.5.2). */
  ChainTooLarge: 'chain-too-large',
  /** A buffer lies (partly) outside guest memory (§2.7.5). */
  AddressOutOfRange: 'address-out-of-range',
  /** A device-readable descriptor follows a device-writable one (§2.7.4.2). */
  ReadableAfterWritable: 'readable-after-writable',
  /** INDIRECT was not negotiated (§2.7.5.3.1). */
  IndirectNotNegotiated: 'indirect-not-negotiated',
  /** An indirect table inside an indirect table (§2.7.5.3.1). */
  NestedIndirect: 'nested-indirect',
  /** INDIRECT together with NEXT: the indirect descriptor ends the chain (§2.7.5.3.1). */
  IndirectWithNext: 'indirect-with-next',
  /** An indirect table whose length is zero or not a multiple of 16 (§2.7.5.3.1). */
  IndirectBadLength: 'indirect-bad-length',
  /** avail.idx ran more than the queue size ahead of the device (§2.7.6). */
  AvailIndexRunaway: 'avail-index-runaway',
  /** A ring entry names a head descriptor ≥ the queue size (§2.7.6). */
  HeadOutOfRange: 'head-out-of-range',
  /** Queue size not a power of two, or rings misaligned or outside memory (§2.7, §2.7.2). */
  BadGeometry: 'bad-geometry',
} as const;
export type QueueError = (typeof QueueError)[keyof typeof QueueError];

/** What `pop` found. */
export const PopResult = {
  /** No chain is available. */
  Empty: 0,
  /** A chain was popped (its `error` may still be set: complete it with len 0). */
  Chain: 1,
  /** The ring itself is unusable: set DEVICE_NEEDS_RESET. `queue.brokenReason` says why. */
  Broken: 2,
} as const;
export type PopResult = (typeof PopResult)[keyof typeof PopResult];

/**
 * A popped chain, as segments of guest memory. Reused from pop to pop: the
 * typed arrays grow on demand up to `maxSegments` and are never reallocated
 * per request, so what one chain retains is bounded by that limit, whatever
 * the guest builds.
 */
export class DescriptorChain {
  /** Head descriptor index: the id returned in the used ring. */
  head = 0;
  /** Number of segments. */
  count = 0;
  /** Device-readable bytes (they come first). */
  readableBytes = 0;
  /** Device-writable bytes (they follow the readable ones). */
  writableBytes = 0;
  /** Index of the first writable segment (= count when none). */
  firstWritable = 0;
  /** Set when the chain is malformed: complete it with used.len 0 and touch nothing. */
  error: QueueError | null = null;
  addr: Float64Array;
  len: Uint32Array;
  /** Most segments (and most descriptors visited) one chain may have; more is TooManySegments. */
  readonly maxSegments: number;

  constructor(capacity = 16, maxSegments = MAX_QUEUE_SIZE) {
    this.maxSegments = maxSegments;
    capacity = Math.min(capacity, maxSegments);
    this.addr = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
  }

  reset(head: number): void {
    this.head = head;
    this.count = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.firstWritable = 0;
    this.error = null;
  }

  /** Append a segment; false when the chain already holds `maxSegments`. */
  push(addr: number, len: number, writable: boolean): boolean {
    if (this.count === this.maxSegments) return false;
    if (this.count === this.addr.length) {
      const addrs = new Float64Array(Math.min(this.count * 2, this.maxSegments));
      addrs.set(this.addr);
      this.addr = addrs;
      const lens = new Uint32Array(addrs.length);
      lens.set(this.len);
      this.len = lens;
    }
    this.addr[this.count] = addr;
    this.len[this.count] = len;
    this.count++;
    if (writable) this.writableBytes += len;
    else {
      this.readableBytes += len;
      this.firstWritable = this.count;
    }
    return true;
  }
}

/** Whether `size` is a split queue size (§2.7: a power of two, at most 32768) no larger than `max`. */
export function isQueueSize(size: number, max = MAX_QUEUE_SIZE, min = 1): boolean {
  return Number.isInteger(size) && size >= min && size <= Math.min(max, MAX_QUEUE_SIZE) && (size & (size - 1)) === 0;
}

/** Checks a queue's geometry against guest memory (§2.7, §2.7.2). Returns null when usable. */
export function checkGeometry(mem: GuestMemory, g: QueueGeometry): QueueError | null {
  const { size } = g;
  if (!isQueueSize(size)) return QueueError.BadGeometry;
  // Alignment: descriptor table 16, available ring 2, used ring 4 (§2.7.2 table).
  if (g.descTable % 16 !== 0 || g.availRing % 2 !== 0 || g.usedRing % 4 !== 0) return QueueError.BadGeometry;
  if (!mem.contains(g.descTable, 16 * size)) return QueueError.BadGeometry;
  // flags, idx, ring[size], used_event: 6 + 2·size bytes (§2.7.6).
  if (!mem.contains(g.availRing, 6 + 2 * size)) return QueueError.BadGeometry;
  // flags, idx, ring[size] of 8-byte elements, avail_event: 6 + 8·size (§2.7.8).
  if (!mem.contains(g.usedRing, 6 + 8 * size)) return QueueError.BadGeometry;
  // The ring indices are accessed with Atomics through one view each.
  if (mem.contiguous(g.availRing, 4) !== 4 || mem.contiguous(g.usedRing, 4) !== 4) return QueueError.BadGeometry;
  return null;
}

/** What the driver negotiated that changes how a queue is read, and whether it may be touched at all. */
export interface QueueFeatures {
  eventIdx: boolean;
  indirect: boolean;
  /**
   * False once the driver stopped the queue or reset the device: from then on
   * the queue reads as empty and writes nothing (§4.2.2.1). Absent: always live.
   */
  live?: () => boolean;
}

export class SplitQueue {
  readonly size: number;
  readonly #mem: GuestMemory;
  readonly #desc: number;
  readonly #avail: number;
  readonly #used: number;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #mask: number;
  readonly #live: (() => boolean) | null;

  /** Next avail ring slot the device will read (free-running u16). */
  #lastAvailIdx = 0;
  /** Last avail.idx read from the driver; lets pop skip re-reading it in a batch. */
  #availIdxShadow = 0;
  /** Next used ring slot the device will fill (free-running u16). */
  #usedIdx = 0;
  /** used.idx when the driver was last interrupted (for EVENT_IDX). */
  #signalledUsedIdx = 0;
  /** Why the ring is unusable, once it is. */
  brokenReason: QueueError | null = null;

  /** Geometry must have passed `checkGeometry`. */
  constructor(
    mem: GuestMemory,
    geometry: QueueGeometry,
    features: QueueFeatures,
    start: { availIdx?: number; usedIdx?: number } = {},
  ) {
    this.#mem = mem;
    this.size = geometry.size;
    this.#mask = geometry.size - 1;
    this.#desc = geometry.descTable;
    this.#avail = geometry.availRing;
    this.#used = geometry.usedRing;
    this.#eventIdx = features.eventIdx;
    this.#indirect = features.indirect;
    this.#live = features.live ?? null;
    this.#lastAvailIdx = (start.availIdx ?? 0) & 0xffff;
    this.#availIdxShadow = this.#lastAvailIdx;
    this.#usedIdx = (start.usedIdx ?? this.#lastAvailIdx) & 0xffff;
    this.#signalledUsedIdx = this.#usedIdx;
  }

  /** The next avail slot the device will read (vhost-user's vring base). */
  get lastAvailIdx(): number {
    return this.#lastAvailIdx;
  }

  /** The next used slot the device will fill. */
  get usedIdx(): number {
    return this.#usedIdx;
  }

  /** The driver's avail.idx, read with acquire semantics. */
  availIdx(): number {
    // Pairs with the driver's release store of avail.idx: ring entries and
    // descriptors written before it are visible after this load.
    return this.#mem.loadU16Acquire(this.#avail + 2);
  }

  /** False once the transport says the driver took the queue away (see QueueFeatures.live). */
  get live(): boolean {
    return this.#live === null || this.#live();
  }

  /** Whether a chain is waiting (re-reads avail.idx). */
  hasAvailable(): boolean {
    if (!this.live) return false;
    this.#availIdxShadow = this.availIdx();
    return this.#availIdxShadow !== this.#lastAvailIdx;
  }

  /**
   * Pop the next available chain into `chain`. Consumes the ring slot even for
   * a malformed chain, which the caller completes with used.len 0.
   */
  pop(chain: DescriptorChain): PopResult {
    if (this.brokenReason) return PopResult.Broken;
    if (!this.live) return PopResult.Empty;
    if (this.#availIdxShadow === this.#lastAvailIdx) {
      this.#availIdxShadow = this.availIdx();
      if (this.#availIdxShadow === this.#lastAvailIdx) return PopResult.Empty;
    }
    // §2.7.6: the driver can be at most a queue's worth ahead. More means a
    // corrupt index, and every slot the device would read is suspect.
    if (((this.#availIdxShadow - this.#lastAvailIdx) & 0xffff) > this.size) {
      this.brokenReason = QueueError.AvailIndexRunaway;
      return PopResult.Broken;
    }
    const head = this.#mem.readU16(this.#avail + 4 + 2 * (this.#lastAvailIdx & this.#mask));
    // §2.7.6: ring entries are descriptor indices; one ≥ size cannot be
    // answered in the used ring, so the ring is unusable.
    if (head >= this.size) {
      this.brokenReason = QueueError.HeadOutOfRange;
      return PopResult.Broken;
    }
    this.#lastAvailIdx = (this.#lastAvailIdx + 1) & 0xffff;
    this.#walk(head, chain);
    return PopResult.Chain;
  }

  /** Give back the last popped chain (the rate limiter refused it); it is popped again later. */
  undoPop(): void {
    this.#lastAvailIdx = (this.#lastAvailIdx - 1) & 0xffff;
  }

  #walk(head: number, chain: DescriptorChain): void {
    chain.reset(head);
    const mem = this.#mem;
    let table = this.#desc;
    let tableSize = this.size;
    let index = head;
    // §2.7.5.2: a chain is at most Queue Size descriptors long; counting down
    // from that ends any loop the guest built.
    let ttl = this.size;
    // The device's own limit bounds the work one chain costs, loops or not.
    let budget = chain.maxSegments;
    let indirect = false;
    let total = 0;
    let sawWritable = false;
    for (;;) {
      if (ttl-- === 0) return fail(chain, QueueError.ChainTooLong);
      if (budget-- === 0) return fail(chain, QueueError.TooManySegments);
      const d = table + 16 * index;
      const addr = mem.readU64(d);
      const len = mem.readU32(d + 8);
      const flags = mem.readU16(d + 12);
      const next = mem.readU16(d + 14);
      if (flags & DescFlag.Indirect) {
        // §2.7.5.3.1: only with VIRTIO_F_INDIRECT_DESC, one level, never with
        // NEXT. §2.7.5.3.2: zero or more direct descriptors may come before
        // it (Linux puts it on the head alone), and its WRITE flag is ignored.
        if (!this.#indirect) return fail(chain, QueueError.IndirectNotNegotiated);
        if (indirect) return fail(chain, QueueError.NestedIndirect);
        if (flags & DescFlag.Next) return fail(chain, QueueError.IndirectWithNext);
        if (len === 0 || len % 16 !== 0) return fail(chain, QueueError.IndirectBadLength);
        // §2.7.5.3.1 says a chain is at most Queue Size long, but Linux
        // sizes its tables by seg_max + 2, not by the ring it chose: a guest
        // on a ring smaller than QueueNumMax (QEMU's vhost-user-blk: 128
        // entries against seg_max 254) builds longer tables, and refusing
        // them would fail its writes. So a table may be as long as the
        // device's own chain limit too; the walk stays bounded by it.
        if (len / 16 > Math.max(this.size, chain.maxSegments)) return fail(chain, QueueError.ChainTooLong);
        if (!mem.contains(addr, len)) return fail(chain, QueueError.AddressOutOfRange);
        indirect = true;
        table = addr;
        tableSize = len / 16;
        ttl = tableSize;
        index = 0;
        continue;
      }
      const writable = (flags & DescFlag.Write) !== 0;
      // §2.7.4.2: device-writable descriptors come after device-readable ones.
      if (!writable && sawWritable) return fail(chain, QueueError.ReadableAfterWritable);
      sawWritable ||= writable;
      // §2.7.5.2: the total length of a chain fits in 32 bits.
      total += len;
      if (total > 0x1_0000_0000) return fail(chain, QueueError.ChainTooLarge);
      if (len > 0) {
        const pushed = this.#pushSplit(chain, addr, len, writable);
        if (pushed !== null) return fail(chain, pushed);
      }
      if (!(flags & DescFlag.Next)) return;
      // §2.7.5.2: `next` indexes the same table.
      if (next >= tableSize) return fail(chain, QueueError.DescriptorIndexOutOfRange);
      index = next;
    }
  }

  /** Append [addr, addr + len) split at region boundaries; the error when a byte is outside RAM or the chain is full. */
  #pushSplit(chain: DescriptorChain, addr: number, len: number, writable: boolean): QueueError | null {
    while (len > 0) {
      const n = this.#mem.contiguous(addr, len);
      if (n === 0) return QueueError.AddressOutOfRange;
      if (!chain.push(addr, n, writable)) return QueueError.TooManySegments;
      addr += n;
      len -= n;
    }
    return null;
  }

  /** Record a completed chain; the driver sees it after `publishUsed`. */
  pushUsed(head: number, writtenBytes: number): void {
    if (!this.live) return;
    const elem = this.#used + 4 + 8 * (this.#usedIdx & this.#mask);
    this.#mem.writeU32(elem, head);
    // §2.7.8.2: used.len is set before used.idx publishes the element.
    this.#mem.writeU32(elem + 4, writtenBytes);
    this.#usedIdx = (this.#usedIdx + 1) & 0xffff;
  }

  /** Make every pushed used element visible to the driver. */
  publishUsed(): void {
    // Release: the element stores above (and the data and status bytes the
    // device wrote into guest buffers) happen-before the driver's acquire
    // load of used.idx.
    if (this.live) this.#mem.storeU16Release(this.#used + 2, this.#usedIdx);
  }

  /**
   * Whether the driver wants an interrupt for what was published since the
   * last time this returned true (§2.7.7.2, §2.7.10).
   */
  needsInterrupt(): boolean {
    const newIdx = this.#usedIdx;
    const oldIdx = this.#signalledUsedIdx;
    if (newIdx === oldIdx || !this.live) return false;
    if (this.#eventIdx) {
      // Atomic load: ordered after the release store of used.idx, so a driver
      // that moved used_event before reading used.idx is never missed.
      const usedEvent = this.#mem.loadU16Acquire(this.#avail + 4 + 2 * this.size);
      this.#signalledUsedIdx = newIdx;
      // vring_need_event: interrupt when used_event lies in (oldIdx, newIdx].
      return ((newIdx - usedEvent - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
    }
    this.#signalledUsedIdx = newIdx;
    return (this.#mem.loadU16Acquire(this.#avail) & AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Ask for a notification when the driver adds more chains, then re-check:
   * returns true when chains arrived meanwhile (keep processing) (§2.7.10).
   */
  enableNotification(): boolean {
    if (!this.live) return false;
    if (this.#eventIdx) {
      // avail_event = the slot the device will read next: notify when it fills.
      this.#mem.storeU16Release(this.#used + 4 + 8 * this.size, this.#lastAvailIdx);
    } else {
      this.#setUsedFlags(0);
    }
    // The store above and this load are both sequentially consistent, so the
    // driver either sees the request or the device sees the new avail.idx.
    return this.hasAvailable();
  }

  /** Tell the driver notifications are not needed while the device is busy. */
  disableNotification(): void {
    if (!this.#eventIdx && this.live) this.#setUsedFlags(USED_F_NO_NOTIFY);
  }

  #setUsedFlags(flags: number): void {
    this.#mem.storeU16Release(this.#used, flags);
  }
}

function fail(chain: DescriptorChain, error: QueueError): void {
  chain.error = error;
}
