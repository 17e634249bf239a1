// The guest side of one split virtqueue (§2.7), as Linux's virtio_ring
// keeps it: a descriptor free list used as a stack (free_head), chains
// written into the descriptor table or into a per-head indirect table,
// avail entries published with a release store of avail.idx, the
// notification decision (EVENT_IDX's avail_event, else the device's
// NO_NOTIFY flag), and the used ring reaped up to one acquire load of
// used.idx, re-arming used_event after it.
//
// Memory: the queue lives in one arena of guest RAM laid out once
// (`queueLayout`): descriptor table, avail ring, used ring (page-aligned,
// as the legacy layout wanted), then a small area per head for the
// caller's per-request bytes (virtio-blk's header and status; Linux keeps
// them in the request, here they are indexed by head so they are free
// exactly when the head is), then one indirect table per head. Nothing is
// allocated per request.
//
// It knows nothing of block devices or of transports: the caller tells the
// transport where the rings are (`rings`) and rings the doorbell when
// `kickPrepare` says so.

import type { GuestMemory } from '../virtio/memory.ts';
import { AVAIL_F_NO_INTERRUPT, DescFlag, USED_F_NO_NOTIFY } from '../virtio/queue.ts';
import { DriverError } from './errors.ts';
import type { RingAddresses } from './transport.ts';

/** A piece of guest memory. */
export interface Segment {
  addr: number;
  len: number;
}

/** One buffer of a chain, in chain order. */
export interface ChainBuffer extends Segment {
  /** Device-writable (VIRTQ_DESC_F_WRITE). */
  writable: boolean;
}

/** Entries in each per-head indirect table. */
export const INDIRECT_ENTRIES = 64;

const DESC_BYTES = 16;

/** Offsets into the arena of a queue of `size` with `headAreaBytes` per head. */
export interface QueueLayout {
  desc: number;
  avail: number;
  used: number;
  heads: number;
  tables: number;
  /** Bytes the queue takes; the arena past it is the caller's. */
  total: number;
}

export function queueLayout(size: number, headAreaBytes: number): QueueLayout {
  const desc = 0;
  const avail = desc + DESC_BYTES * size;
  // flags, idx, ring[size], used_event (§2.7.6).
  const used = align(avail + 6 + 2 * size, 4096);
  // flags, idx, ring[size] of {id, len}, avail_event (§2.7.8).
  const heads = align(used + 6 + 8 * size, 64);
  const tables = heads + headAreaBytes * size;
  const total = align(tables + DESC_BYTES * INDIRECT_ENTRIES * size, 4096);
  return { desc, avail, used, heads, tables, total };
}

export function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export interface SplitQueueOptions {
  memory: GuestMemory;
  /** Guest address of the arena (at least `queueLayout(size, headAreaBytes).total` bytes). */
  base: number;
  size: number;
  headAreaBytes: number;
  /** VIRTIO_F_RING_EVENT_IDX was negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_RING_INDIRECT_DESC was negotiated. */
  indirect: boolean;
}

export class SplitQueue {
  readonly memory: GuestMemory;
  readonly size: number;
  /** Where the rings are, for the transport's queue setup. */
  readonly rings: RingAddresses;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #headAreaBytes: number;
  readonly #heads: number;
  readonly #tables: number;
  /** Free descriptor indices (a stack, like Linux's free_head list). */
  readonly #freeDesc: number[] = [];
  /** Descriptors each head holds, to free on completion; empty while the head is free. */
  readonly #chainDescs: number[][];
  /** The chain `reserve` began, until `publishChain` writes it. */
  readonly #pendingAddr: Float64Array;
  readonly #pendingLen: Uint32Array;
  readonly #pendingWritable: Uint8Array;
  #pendingCount = 0;
  #pendingIndirect = false;
  /** Our copy of avail.idx (the ring's is only ever stored, never read back). */
  #availIdx = 0;
  /** avail.idx at the last notification (for EVENT_IDX's avail_event check). */
  #kickedIdx = 0;
  #lastUsedIdx = 0;
  /** Chains added and not yet used. */
  #inFlight = 0;

  constructor(opts: SplitQueueOptions) {
    const l = queueLayout(opts.size, opts.headAreaBytes);
    this.memory = opts.memory;
    this.size = opts.size;
    this.rings = { desc: opts.base + l.desc, avail: opts.base + l.avail, used: opts.base + l.used };
    this.#eventIdx = opts.eventIdx;
    this.#indirect = opts.indirect;
    this.#headAreaBytes = opts.headAreaBytes;
    this.#heads = opts.base + l.heads;
    this.#tables = opts.base + l.tables;
    for (let i = opts.size - 1; i >= 0; i--) this.#freeDesc.push(i);
    this.#chainDescs = Array.from({ length: opts.size }, () => []);
    const longest = Math.max(opts.size, INDIRECT_ENTRIES);
    this.#pendingAddr = new Float64Array(longest);
    this.#pendingLen = new Uint32Array(longest);
    this.#pendingWritable = new Uint8Array(longest);
  }

  /**
   * Zero the descriptor table and both rings before the device is told where
   * they are. Linux asks for an interrupt after every completion: with
   * used_event = 0 and avail.flags = 0 it gets one.
   */
  clearRings(): void {
    this.memory.fill(this.rings.desc, this.#heads - this.rings.desc, 0);
  }

  /** Free descriptors (a chain needs 1 with indirect, else one per buffer). */
  get freeDescriptors(): number {
    return this.#freeDesc.length;
  }

  /** Chains added and not yet reaped. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** The caller's per-head bytes (`headAreaBytes` of them), free exactly when the head is. */
  headArea(head: number): number {
    return this.#heads + this.#headAreaBytes * head;
  }

    /**
   * Take descriptors for a chain of `count` buffers and return its head.
   * `indirect`: put the chain in the head's indirect table (only with the
   * feature and at most INDIRECT_ENTRIES buffers; default: when there is more
   * than one buffer, as Linux chooses), which takes one descriptor. Throws
   * DriverError when descriptors run out. Then then give each buffer with
   * `setBuffer` and make the chain available with `publishChain`. In three
   * steps, so a caller can place per-request data by head (the header area)
   * without a callback, and nothing is allocated per request but the
   * chain's list of descriptors.
   */
  reserve(count: number, indirect: boolean | undefined): number {
    const useIndirect = (indirect ?? (this.#indirect && count > 1)) && this.#indirect && count <= INDIRECT_ENTRIES;
    const needed = useIndirect ? 1 : count;
    if (count > this.#pendingAddr.length) throw new DriverError(`chain of ${count} buffers is longer than the queue`);
    if (this.#freeDesc.length < needed) throw new DriverError('no free descriptors');
    const descs = this.#chainDescs[this.#freeDesc[this.#freeDesc.length - 1]!]!;
    descs.length = 0;
    for (let i = 0; i < needed; i++) descs.push(this.#freeDesc.pop()!);
    this.#pendingCount = count;
    this.#pendingIndirect = useIndirect;
    return descs[0]!;
  }

  /** Buffer `i` of the chain `reserve` began. */
  setBuffer(i: number, addr: number, len: number, writable: boolean): void {
    this.#pendingAddr[i] = addr;
    this.#pendingLen[i] = len;
    this.#pendingWritable[i] = writable ? 1 : 0;
  }

  /** Write the reserved chain's descriptors and make it available. */
  publishChain(head: number): void {
    const mem = this.memory;
    const count = this.#pendingCount;
    const descs = this.#chainDescs[head]!;
    for (let i = 0; i < count; i++) {
      const flags = (this.#pendingWritable[i] ? DescFlag.Write : 0) | (i + 1 < count ? DescFlag.Next : 0);
      if (this.#pendingIndirect) {
        const table = this.#tables + DESC_BYTES * INDIRECT_ENTRIES * head;
        writeDesc(mem, table + DESC_BYTES * i, this.#pendingAddr[i]!, this.#pendingLen[i]!, flags, i + 1);
      } else {
        writeDesc(mem, this.#descAt(descs[i]!), this.#pendingAddr[i]!, this.#pendingLen[i]!, flags, i + 1 < count ? descs[i + 1]! : 0);
      }
    }
    if (this.#pendingIndirect) {
      const table = this.#tables + DESC_BYTES * INDIRECT_ENTRIES * head;
      writeDesc(mem, this.#descAt(head), table, DESC_BYTES * count, DescFlag.Indirect, 0);
    }
    this.#publish(head);
    this.#inFlight++;
  }

  #descAt(index: number): number {
    return this.rings.desc + DESC_BYTES * index;
  }

  #publish(head: number): void {
    const mem = this.memory;
    mem.writeU16(this.rings.avail + 4 + 2 * (this.#availIdx % this.size), head);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    // Release: the descriptors and ring entry above are visible to a device
    // that loads avail.idx (Linux: virtio_wmb before the idx store).
    mem.storeU16Release(this.rings.avail + 2, this.#availIdx);
  }

  /**
   * Whether the device wants a notification for what was published since
   * the last one (Linux's virtqueue_kick_prepare); counts it as sent.
   */
  kickPrepare(): boolean {
    const newIdx = this.#availIdx;
    const oldIdx = this.#kickedIdx;
    if (newIdx === oldIdx) return false;
    this.#kickedIdx = newIdx;
    if (this.#eventIdx) {
      // Linux: virtio_mb, then vring_need_event(avail_event, new, old). Both
      // accesses are sequentially consistent atomics.
      const availEvent = this.memory.loadU16Acquire(this.rings.used + 4 + 8 * this.size);
      return ((newIdx - availEvent - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
    }
    return (this.memory.loadU16Acquire(this.rings.used) & USED_F_NO_NOTIFY) === 0;
  }

  /** Ask for no interrupts (polling mode) or for one per completion (without EVENT_IDX; with it, `reap` re-arms). */
  setInterrupts(on: boolean): void {
    if (!this.#eventIdx) this.memory.storeU16Release(this.rings.avail, on ? 0 : AVAIL_F_NO_INTERRUPT);
  }

  /**
   * Take every used element up to one load of used.idx, in ring order:
   * `onUsed` sees each head while it is still held (its area intact), then
   * the head's descriptors go back on the free list. Throws DriverError on a
   * head that is not in flight.
   */
  reap(onUsed: (head: number, usedLen: number) => void): void {
    const mem = this.memory;
    const used = this.rings.used;
    // Acquire: used elements and what the device wrote are visible after this load.
    const usedIdx = mem.loadU16Acquire(used + 2);
    while (this.#lastUsedIdx !== usedIdx) {
      const elem = used + 4 + 8 * (this.#lastUsedIdx % this.size);
      const head = mem.readU32(elem);
      const usedLen = mem.readU32(elem + 4);
      this.#lastUsedIdx = (this.#lastUsedIdx + 1) & 0xffff;
      const chain = this.#chainDescs[head];
      if (!chain || chain.length === 0) throw new DriverError(`device returned head ${head}, which is not in flight`);
      onUsed(head, usedLen);
      for (const d of chain) this.#freeDesc.push(d);
      chain.length = 0;
      this.#inFlight--;
    }
    if (this.#eventIdx) {
      // virtqueue_enable_cb: interrupt at the next completion.
      mem.storeU16Release(this.rings.avail + 4 + 2 * this.size, this.#lastUsedIdx);
    }
  }
}

function writeDesc(mem: GuestMemory, at: number, addr: number, len: number, flags: number, next: number): void {
  mem.writeU64(at, addr);
  mem.writeU32(at + 8, len);
  mem.writeU16(at + 12, flags);
  mem.writeU16(at + 14, next);
}
