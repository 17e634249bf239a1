// A hand-driven queue for tests that need rings a real driver would never
// build: it negotiates like a driver, then lets the test write any
// descriptor, ring entry or index it likes.
//
// `inspect` answers what the device cannot be asked: which QueueError (or
// MalformedRequest) a chain it completed with used.len 0 got. It pops the
// same avail slot again through a second SplitQueue over the same memory and
// geometry, which sees exactly the bytes the device saw as long as the test
// has not rewritten them since.

import { MemoryBackend } from '../../src/backends/memory.ts';
import type { BlockBackend } from '../../src/backends/backend.ts';
import { createSameThreadDisk, type SameThreadDisk } from '../../src/host/browser/same-thread.ts';
import type { BlockDeviceOptions } from '../../src/block/device.ts';
import { BlockRequest, parseRequest, type MalformedRequest } from '../../src/block/request.ts';
import { DeviceStatus, VirtioFeature, hasFeature } from '../../src/virtio/device.ts';
import { GuestMemory, type GuestRegionSpec } from '../../src/virtio/memory.ts';
import { MmioReg } from '../../src/virtio/mmio/mmio.ts';
import { DescriptorChain, PopResult, SplitQueue, type QueueError } from '../../src/virtio/queue.ts';

export const RAW_RAM_BASE = 0x4000_0000;
export const RAW_RAM_BYTES = 4 << 20;

export interface RawQueueOptions extends BlockDeviceOptions {
  size?: number;
  /** Guest RAM size (default 4 MiB; at least 128 KiB). Ignored when `ram` is given. */
  ramBytes?: number;
  /** Guest RAM to use (a SharedArrayBuffer lets another thread watch it). */
  ram?: ArrayBuffer | SharedArrayBuffer;
  /**
   * Split guest RAM from `from` bytes above its base into adjacent regions of
   * `bytes` each (one source, many regions): buffers crossing them split into
   * many segments. The rings and the first 64 KiB of heap stay in one region.
   */
  splitRegions?: { from: number; bytes: number };
  features?: bigint;
  backend?: BlockBackend;
  diskBytes?: number;
}

/** What the queue and request layers say about a chain (see `RawQueue.inspect`). */
export interface ChainVerdict {
  /** The QueueError the chain got, or null when the queue layer accepted it. */
  queueError: QueueError | null;
  /** Why no status byte can be written, or null when the request parses. */
  malformed: MalformedRequest | null;
  /** Segments, readable and writable bytes of the chain as popped. */
  count: number;
  readableBytes: number;
  writableBytes: number;
}

export class RawQueue {
  readonly ram: ArrayBuffer | SharedArrayBuffer;
  readonly bytes: Uint8Array;
  readonly memory: GuestMemory;
  readonly backend: BlockBackend;
  readonly disk: SameThreadDisk;
  readonly size: number;
  // Room for queues up to 256 entries.
  readonly desc = RAW_RAM_BASE + 0x1000;
  readonly avail = RAW_RAM_BASE + 0x2000;
  readonly used = RAW_RAM_BASE + 0x3000;
  /** Free guest RAM for buffers and tables, up to the end of RAM. */
  readonly heap = RAW_RAM_BASE + 0x10000;
  availIdx = 0;
  lastUsed = 0;
  /** The features the last negotiation wrote (undefined: everything offered). */
  readonly #features: bigint | undefined;

  constructor(options: RawQueueOptions = {}) {
    const { size, features, backend, diskBytes, ramBytes, ram, splitRegions, ...deviceOptions } = options;
    this.ram = ram ?? new ArrayBuffer(ramBytes ?? RAW_RAM_BYTES);
    this.bytes = new Uint8Array(this.ram);
    this.memory = new GuestMemory(regionsOf(this.ram, splitRegions));
    this.size = size ?? 16;
    this.backend = backend ?? new MemoryBackend(diskBytes ?? 1 << 20);
    this.disk = createSameThreadDisk({ memory: this.memory, backend: this.backend, ...deviceOptions });
    this.#features = features;
    this.negotiate();
  }

  /**
   * Reset (Status 0, which must read back 0 at once: the device is idle) and
   * negotiate again up to QueueReady, on fresh rings; DRIVER_OK is left to
   * the test. Throws when the reset does not complete at once.
   */
  reinit(): void {
    this.disk.mmio.write(MmioReg.Status, 0, 4);
    if (this.status !== 0) throw new Error(`Status reads ${this.status} after an idle reset`);
    this.memory.fill(this.desc, this.heap - this.desc, 0);
    this.availIdx = 0;
    this.lastUsed = 0;
    this.negotiate();
  }

  /** Status 0, ACK | DRIVER, features, FEATURES_OK, queue 0 set up and ready. */
  negotiate(features = this.#features ?? this.offered()): void {
    const m = this.disk.mmio;
    m.write(MmioReg.Status, 0, 4);
    m.write(MmioReg.Status, DeviceStatus.Acknowledge | DeviceStatus.Driver, 4);
    m.write(MmioReg.DriverFeaturesSel, 0, 4);
    m.write(MmioReg.DriverFeatures, Number(features & 0xffff_ffffn), 4);
    m.write(MmioReg.DriverFeaturesSel, 1, 4);
    m.write(MmioReg.DriverFeatures, Number(features >> 32n), 4);
    m.write(MmioReg.Status, DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk, 4);
    this.setUpQueue();
  }

  /** Queue 0 on this queue's rings (size, the three addresses), then QueueReady = 1. */
  setUpQueue(): void {
    const m = this.disk.mmio;
    m.write(MmioReg.QueueSel, 0, 4);
    m.write(MmioReg.QueueNum, this.size, 4);
    m.write(MmioReg.QueueDescLow, this.desc, 4);
    m.write(MmioReg.QueueDriverLow, this.avail, 4);
    m.write(MmioReg.QueueDeviceLow, this.used, 4);
    m.write(MmioReg.QueueReady, 1, 4);
  }

  offered(): bigint {
    const m = this.disk.mmio;
    m.write(MmioReg.DeviceFeaturesSel, 0, 4);
    const lo = BigInt(m.read(MmioReg.DeviceFeatures, 4) >>> 0);
    m.write(MmioReg.DeviceFeaturesSel, 1, 4);
    return lo | (BigInt(m.read(MmioReg.DeviceFeatures, 4) >>> 0) << 32n);
  }

  driverOk(): void {
    this.disk.mmio.write(MmioReg.Status, DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk | DeviceStatus.DriverOk, 4);
  }

  get status(): number {
    return this.disk.mmio.read(MmioReg.Status, 4);
  }

  /** Write descriptor `i` of the table at `table` (default: the queue's). */
  setDesc(i: number, addr: number, len: number, flags: number, next = 0, table = this.desc): void {
    const m = this.memory;
    m.writeU64(table + 16 * i, addr);
    m.writeU32(table + 16 * i + 8, len);
    m.writeU16(table + 16 * i + 12, flags);
    m.writeU16(table + 16 * i + 14, next);
  }

  /** Write a block request header at `addr`. */
  header(addr: number, type: number, sector: number, ioprio = 0): void {
    this.memory.writeU32(addr, type);
    this.memory.writeU32(addr + 4, ioprio);
    this.memory.writeU64(addr + 8, sector);
  }

  /** Put `head` in the avail ring and publish the index (no notify). */
  offer(head: number): void {
    this.memory.writeU16(this.avail + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.memory.writeU16(this.avail + 2, this.availIdx);
  }

  notify(): void {
    this.disk.mmio.write(MmioReg.QueueNotify, 0, 4);
  }

  usedIdx(): number {
    return this.memory.readU16(this.used + 2);
  }

  /** Used elements published since the last call. */
  takeUsed(): Array<{ id: number; len: number }> {
    const out = [];
    const idx = this.usedIdx();
    while (this.lastUsed !== idx) {
      const e = this.used + 4 + 8 * (this.lastUsed % this.size);
      out.push({ id: this.memory.readU32(e), len: this.memory.readU32(e + 4) });
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /**
   * Pop avail slot `slot` (a free-running index: 0 is the first chain
   * offered) again, through a queue of its own over `memory` (default: this
   * guest RAM), and say what the queue and request layers make of it.
   */
  inspect(slot: number, memory: GuestMemory = this.memory): ChainVerdict {
    const features = this.#features ?? this.offered();
    const queue = new SplitQueue(
      memory,
      { size: this.size, descTable: this.desc, availRing: this.avail, usedRing: this.used },
      { eventIdx: hasFeature(features, VirtioFeature.RingEventIdx), indirect: hasFeature(features, VirtioFeature.RingIndirectDesc) },
      { availIdx: slot },
    );
    const chain = new DescriptorChain();
    const popped = popAt(queue, memory, this.avail, slot, chain);
    if (popped !== PopResult.Chain) throw new Error(`avail slot ${slot} does not pop a chain (${queue.brokenReason ?? 'empty'})`);
    const req = new BlockRequest(chain);
    return {
      queueError: chain.error,
      malformed: parseRequest(memory, req),
      count: chain.count,
      readableBytes: chain.readableBytes,
      writableBytes: chain.writableBytes,
    };
  }
}

/** Pop slot `slot`, with avail.idx made to read slot + 1 for the one pop and then put back. */
function popAt(queue: SplitQueue, memory: GuestMemory, avail: number, slot: number, chain: DescriptorChain): PopResult {
  const saved = memory.readU16(avail + 2);
  memory.writeU16(avail + 2, (slot + 1) & 0xffff);
  try {
    return queue.pop(chain);
  } finally {
    memory.writeU16(avail + 2, saved);
  }
}

function regionsOf(ram: ArrayBuffer | SharedArrayBuffer, split?: { from: number; bytes: number }): GuestRegionSpec[] {
  if (!split) return [{ guestAddress: RAW_RAM_BASE, source: ram }];
  const regions: GuestRegionSpec[] = [{ guestAddress: RAW_RAM_BASE, source: ram, size: split.from }];
  for (let at = split.from; at < ram.byteLength; at += split.bytes) {
    regions.push({ guestAddress: RAW_RAM_BASE + at, source: ram, sourceOffset: at, size: Math.min(split.bytes, ram.byteLength - at) });
  }
  return regions;
}

// ---- the device side of a two-thread used-ring test -------------------------

/** Words of the control block `publishForWatcher` shares with the watching thread (Int32). */
export const WatchWord = {
  /** Used elements the watcher has checked (it may reuse their slots from then on). */
  Consumed: 0,
  /** Set by the publisher once it is set up and about to start. */
  Ready: 1,
  /** Set by the publisher when it failed (the watcher stops waiting). */
  Failed: 2,
} as const;

/** What `publishForWatcher` is told (structured-clonable, for workerData). */
export interface WatchedPublisherArgs {
  ram: SharedArrayBuffer;
  control: SharedArrayBuffer;
  size: number;
  requests: number;
  batch: number;
  /** For the test of the test: publish each used.idx before its used.len is written. */
  misorder?: boolean;
}

/** The used.len GET_ID request `k` of `publishForWatcher` completes with: id bytes (1 to 20) + status. */
export function watchedUsedLen(k: number): number {
  return (k % 20) + 2;
}

/** The length a used element holds until the device writes it. */
export const WATCH_POISON = 0xdead_beef;

/**
 * Run on a thread of its own: a device over the shared RAM serves `requests`
 * GET_IDs, `batch` per notification, while another thread watches used.idx.
 * Before offering request k it poisons used.len of the slot k will land in,
 * so a watcher that sees used.idx pass k before used.len is set reads the
 * poison. It never reuses a slot the watcher has not checked.
 */
export function publishForWatcher(args: WatchedPublisherArgs): void {
  const control = new Int32Array(args.control);
  try {
    const q = new RawQueue({ ram: args.ram, size: args.size });
    if (args.misorder) misorderUsedRing(q, control);
    q.driverOk();
    Atomics.store(control, WatchWord.Ready, 1);
    Atomics.notify(control, WatchWord.Ready);
    for (let k = 0; k < args.requests; k += args.batch) {
      const n = Math.min(args.batch, args.requests - k);
      // Room in the used ring: every slot about to be filled was checked.
      for (let consumed = Atomics.load(control, WatchWord.Consumed); k + n - consumed > args.size; consumed = Atomics.load(control, WatchWord.Consumed)) {
        Atomics.wait(control, WatchWord.Consumed, consumed);
      }
      for (let j = 0; j < n; j++) {
        const at = q.heap + j * 0x100;
        q.memory.writeU32(q.used + 4 + 8 * ((k + j) % args.size) + 4, WATCH_POISON);
        q.header(at, 8, 0);
        q.setDesc(3 * j, at, 16, 1, 3 * j + 1);
        q.setDesc(3 * j + 1, at + 32, watchedUsedLen(k + j) - 1, 2 | 1, 3 * j + 2);
        q.setDesc(3 * j + 2, at + 16, 1, 2);
        q.offer(3 * j);
      }
      q.notify();
      if (q.usedIdx() !== ((k + n) & 0xffff)) throw new Error(`request ${k + n - 1} was not completed in its notify`);
    }
  } catch (err) {
    Atomics.store(control, WatchWord.Failed, 1);
    throw err;
  }
}

/**
 * Make this thread's SplitQueue publish used.idx before used.len (a
 * deliberately wrong device). Every 50th element it holds the wrong order
 * until the watcher has looked, so the watcher's test does not depend on
 * how the two threads happen to be scheduled.
 */
function misorderUsedRing(q: RawQueue, control: Int32Array): void {
  const pushUsed = SplitQueue.prototype.pushUsed;
  SplitQueue.prototype.pushUsed = function (this: SplitQueue, head: number, writtenBytes: number): void {
    pushUsed.call(this, head, WATCH_POISON);
    this.publishUsed();
    const published = this.usedIdx;
    if (published % 50 === 0) {
      while (((Atomics.load(control, WatchWord.Consumed) - published) & 0xffff) >= 0x8000) {
        /* the watcher has not checked this element yet */
      }
    }
    q.memory.writeU32(q.used + 4 + 8 * ((published - 1) & (this.size - 1)) + 4, writtenBytes);
  };
}
