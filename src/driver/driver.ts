// A guest-side virtio-blk driver that does what Linux's virtio_blk and
// virtio_mmio do, through the same registers and rings: reset, ACKNOWLEDGE,
// DRIVER, feature negotiation, the FEATURES_OK check, queue setup in guest
// RAM, DRIVER_OK; then requests built as Linux builds them (a header
// descriptor, data segments, a one-byte status descriptor, or all of them in
// an indirect table), EVENT_IDX for both directions, and completions reaped
// from the used ring.
//
// Tests, end-to-end runs, benchmarks and the demo drive the device with it,
// and it is public API for exercising a disk without booting a guest.
//
// Memory: the driver owns an arena of guest RAM for its rings, per-request
// headers and status bytes, and indirect tables; data buffers are the
// caller's (any guest addresses), or come from `allocate`.

import { BLK_HEADER_BYTES, BLK_SUPPORTED_FEATURES, BlkConfig, BlkFeature, BlkRequestType, BlkStatus, SECTOR_SIZE, VIRTIO_ID_BLOCK } from '../block/constants.ts';
import { DeviceStatus, VirtioFeature, hasFeature } from '../virtio/device.ts';
import type { GuestMemory } from '../virtio/memory.ts';
import { MMIO_MAGIC, MmioInterrupt, MmioReg } from '../virtio/mmio.ts';
import { AVAIL_F_NO_INTERRUPT, DescFlag, USED_F_NO_NOTIFY } from '../virtio/queue.ts';

/** The emulator-side register accessor (`MmioRegisters` or the worker host's). */
export interface MmioAccessor {
  read(offset: number, width: number): number;
  write(offset: number, value: number, width: number): void;
}

/** A piece of guest memory. */
export interface Segment {
  addr: number;
  len: number;
}

export interface DriverOptions {
  mmio: MmioAccessor;
  memory: GuestMemory;
  /** Guest RAM the driver may use for rings, headers and tables (see `arenaBytes`). */
  arena: Segment;
  /** Queue size (default: the device's QueueNumMax, at most 256). */
  queueSize?: number;
  /** Features to refuse even if offered (e.g. 1n << 29n to run without EVENT_IDX). */
  refuseFeatures?: bigint;
  /** Wait until the interrupt line may have risen. Default: yield to the event loop. */
  waitForInterrupt?: () => Promise<void>;
  /** Called when the device reports a config change (e.g. a resize). */
  onConfigChange?: (driver: VirtioBlkDriver) => void;
}

/** A request as the caller describes it. */
export interface DriverRequest {
  type: number;
  sector?: number;
  /** Device-readable data (OUT data, discard segments). */
  out?: Segment[];
  /** Device-writable data (IN data, GET_ID buffer). */
  in?: Segment[];
  /** Put the chain in an indirect table (needs the feature; default: Linux's choice, when > 1 descriptor). */
  indirect?: boolean;
  /** Split the 16-byte header over two descriptors (a framing test; Linux does not). */
  splitHeader?: boolean;
  /** Linux's ioprio in the reserved field (the device ignores it). */
  ioprio?: number;
}

export interface Completion {
  /** What `submit` returned: unique per request (heads are reused, ids are not). */
  id: number;
  /** The head descriptor the device returned. */
  head: number;
  status: number;
  usedLen: number;
}

/** Error thrown when the device refuses initialisation. */
export class DriverError extends Error {
  override readonly name = 'DriverError';
}

/** Entries in each per-request indirect table. */
const INDIRECT_ENTRIES = 64;
/** Per-request area: header (16), status (1), padded. */
const REQ_AREA = 32;

/** Bytes of arena a queue of `size` needs. */
export function arenaBytes(size: number): number {
  return layout(size).total;
}

function layout(size: number) {
  const desc = 0;
  const avail = desc + 16 * size;
  const used = align(avail + 6 + 2 * size, 4096);
  const reqs = align(used + 6 + 8 * size, 64);
  const tables = reqs + REQ_AREA * size;
  const total = align(tables + 16 * INDIRECT_ENTRIES * size, 4096);
  return { desc, avail, used, reqs, tables, total };
}

function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export class VirtioBlkDriver {
  readonly mmio: MmioAccessor;
  readonly memory: GuestMemory;
  readonly queueSize: number;
  /** Features both sides agreed on. */
  readonly features: bigint;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #desc: number;
  readonly #avail: number;
  readonly #used: number;
  readonly #reqs: number;
  readonly #tables: number;
  readonly #waitForInterrupt: () => Promise<void>;
  readonly #onConfigChange: ((d: VirtioBlkDriver) => void) | null;
  /** Free descriptor indices (a stack, like Linux's free_head list). */
  #freeDesc: number[] = [];
  /** Descriptors each head holds, to free on completion. */
  readonly #chainDescs: number[][];
  #availIdx = 0;
  /** avail.idx at the last notification (for EVENT_IDX's avail_event check). */
  #kickedIdx = 0;
  #lastUsedIdx = 0;
  /** Completions reaped but not yet taken. */
  readonly #done = new Map<number, Completion>();
  /** The one wait concurrent `run` callers share, while there is one. */
  #reaping: Promise<void> | null = null;
  #bump: number;
  readonly #arenaEnd: number;
  /** Requests submitted and not yet reaped. */
  #outstanding = 0;
  /** The id of the request each head carries. */
  readonly #ids: Int32Array;
  #nextId = 1;
  /** Config-change interrupts seen. */
  configChanges = 0;

  private constructor(opts: DriverOptions, size: number, features: bigint) {
    this.mmio = opts.mmio;
    this.memory = opts.memory;
    this.queueSize = size;
    this.features = features;
    this.#eventIdx = hasFeature(features, VirtioFeature.RingEventIdx);
    this.#indirect = hasFeature(features, VirtioFeature.RingIndirectDesc);
    const l = layout(size);
    const base = opts.arena.addr;
    this.#desc = base + l.desc;
    this.#avail = base + l.avail;
    this.#used = base + l.used;
    this.#reqs = base + l.reqs;
    this.#tables = base + l.tables;
    this.#bump = base + l.total;
    this.#arenaEnd = base + opts.arena.len;
    this.#waitForInterrupt = opts.waitForInterrupt ?? (() => new Promise((r) => setTimeout(r, 0)));
    this.#onConfigChange = opts.onConfigChange ?? null;
    for (let i = size - 1; i >= 0; i--) this.#freeDesc.push(i);
    this.#chainDescs = Array.from({ length: size }, () => []);
    this.#ids = new Int32Array(size);
  }

  /** Reset the device and bring it up as Linux does (§3.1.1). */
  static async init(opts: DriverOptions): Promise<VirtioBlkDriver> {
    const m = opts.mmio;
    if (m.read(MmioReg.MagicValue, 4) !== MMIO_MAGIC) throw new DriverError('no virtio-mmio device (bad magic)');
    if (m.read(MmioReg.Version, 4) !== 2) throw new DriverError('not a virtio-mmio version 2 device');
    if (m.read(MmioReg.DeviceId, 4) !== VIRTIO_ID_BLOCK) throw new DriverError('not a block device');
    await resetDevice(m);
    m.write(MmioReg.Status, DeviceStatus.Acknowledge, 4);
    m.write(MmioReg.Status, DeviceStatus.Acknowledge | DeviceStatus.Driver, 4);
    m.write(MmioReg.DeviceFeaturesSel, 0, 4);
    const lo = BigInt(m.read(MmioReg.DeviceFeatures, 4) >>> 0);
    m.write(MmioReg.DeviceFeaturesSel, 1, 4);
    const hi = BigInt(m.read(MmioReg.DeviceFeatures, 4) >>> 0);
    const offered = lo | (hi << 32n);
    const features = offered & BLK_SUPPORTED_FEATURES & ~(opts.refuseFeatures ?? 0n);
    m.write(MmioReg.DriverFeaturesSel, 0, 4);
    m.write(MmioReg.DriverFeatures, Number(features & 0xffff_ffffn), 4);
    m.write(MmioReg.DriverFeaturesSel, 1, 4);
    m.write(MmioReg.DriverFeatures, Number(features >> 32n), 4);
    const s = DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk;
    m.write(MmioReg.Status, s, 4);
    if (!(m.read(MmioReg.Status, 4) & DeviceStatus.FeaturesOk)) {
      m.write(MmioReg.Status, s | DeviceStatus.Failed, 4);
      throw new DriverError('device refused FEATURES_OK');
    }
    m.write(MmioReg.QueueSel, 0, 4);
    if (m.read(MmioReg.QueueReady, 4) !== 0) throw new DriverError('queue 0 already live');
    const max = m.read(MmioReg.QueueNumMax, 4);
    if (max === 0) throw new DriverError('queue 0 not available');
    const size = Math.min(opts.queueSize ?? 256, max);
    if (layout(size).total > opts.arena.len) throw new DriverError(`arena too small: need ${layout(size).total} bytes`);
    const d = new VirtioBlkDriver(opts, size, features);
    d.#setupQueue();
    m.write(MmioReg.Status, s | DeviceStatus.DriverOk, 4);
    return d;
  }

  #setupQueue(): void {
    const m = this.mmio;
    const mem = this.memory;
    mem.fill(this.#desc, this.#reqs - this.#desc, 0);
    // Linux asks for an interrupt after every completion: used_event = 0.
    m.write(MmioReg.QueueNum, this.queueSize, 4);
    writeAddr(m, MmioReg.QueueDescLow, this.#desc);
    writeAddr(m, MmioReg.QueueDriverLow, this.#avail);
    writeAddr(m, MmioReg.QueueDeviceLow, this.#used);
    m.write(MmioReg.QueueReady, 1, 4);
  }

  // ---- config space -------------------------------------------------------

  /** Read config bytes consistently (retry while ConfigGeneration changes, §4.2.3.1). */
  readConfig(offset: number, width: 1 | 2 | 4 | 8): number {
    for (;;) {
      const gen = this.mmio.read(MmioReg.ConfigGeneration, 4);
      const v =
        width === 8
          ? this.mmio.read(MmioReg.Config + offset, 4) + this.mmio.read(MmioReg.Config + offset + 4, 4) * 0x1_0000_0000
          : this.mmio.read(MmioReg.Config + offset, width);
      if (this.mmio.read(MmioReg.ConfigGeneration, 4) === gen) return v;
    }
  }

  get capacitySectors(): number {
    return this.readConfig(BlkConfig.Capacity, 8);
  }

  get readOnly(): boolean {
    return hasFeature(this.features, BlkFeature.Ro);
  }

  get status(): number {
    return this.mmio.read(MmioReg.Status, 4);
  }

  /** Set the cache mode (needs CONFIG_WCE): true = writeback, false = writethrough. */
  setWriteback(on: boolean): void {
    this.mmio.write(MmioReg.Config + BlkConfig.Writeback, on ? 1 : 0, 1);
  }

  // ---- memory for data ----------------------------------------------------

  /** Take `bytes` of arena for data buffers (never freed; size the arena for it). */
  allocate(bytes: number, alignment = 4096): Segment {
    const addr = align(this.#bump, alignment);
    if (addr + bytes > this.#arenaEnd) throw new DriverError('driver arena exhausted');
    this.#bump = addr + bytes;
    return { addr, len: bytes };
  }

  // ---- requests -----------------------------------------------------------

  /** Free descriptors (a request needs 1 with indirect, else 2 + segments). */
  get freeDescriptors(): number {
    return this.#freeDesc.length;
  }

  /** Requests submitted and not yet reaped. */
  get inFlight(): number {
    return this.#outstanding;
  }

  /**
   * Build the chain and make it available; notify the device if it asked to
   * be (EVENT_IDX) or did not opt out. Returns the request's id.
   * Throws DriverError when there are not enough free descriptors.
   */
  submit(req: DriverRequest): number {
    const mem = this.memory;
    const outs = req.out ?? [];
    const ins = req.in ?? [];
    // Linux: header, data..., status (§5.2.6).
    const pieces: Array<[number, number, boolean]> = [];
    const count = outs.length + ins.length + (req.splitHeader ? 3 : 2);
    const useIndirect = (req.indirect ?? (this.#indirect && count > 1)) && this.#indirect && count <= INDIRECT_ENTRIES;
    const needed = useIndirect ? 1 : count;
    if (this.#freeDesc.length < needed) throw new DriverError('no free descriptors');
    const descs: number[] = [];
    for (let i = 0; i < needed; i++) descs.push(this.#freeDesc.pop()!);
    const head = descs[0]!;
    this.#chainDescs[head] = descs;
    const area = this.#reqs + REQ_AREA * head;
    mem.writeU32(area, req.type);
    mem.writeU32(area + 4, req.ioprio ?? 0);
    mem.writeU64(area + 8, req.sector ?? 0);
    mem.writeU8(area + BLK_HEADER_BYTES, 0xff); // status: poisoned until the device writes it
    if (req.splitHeader) {
      pieces.push([area, 5, false], [area + 5, BLK_HEADER_BYTES - 5, false]);
    } else {
      pieces.push([area, BLK_HEADER_BYTES, false]);
    }
    for (const s of outs) pieces.push([s.addr, s.len, false]);
    for (const s of ins) pieces.push([s.addr, s.len, true]);
    pieces.push([area + BLK_HEADER_BYTES, 1, true]);

    if (useIndirect) {
      const table = this.#tables + 16 * INDIRECT_ENTRIES * head;
      pieces.forEach(([addr, len, w], i) =>
        writeDesc(mem, table + 16 * i, addr, len, (w ? DescFlag.Write : 0) | (i + 1 < pieces.length ? DescFlag.Next : 0), i + 1),
      );
      writeDesc(mem, this.#desc + 16 * head, table, 16 * pieces.length, DescFlag.Indirect, 0);
    } else {
      pieces.forEach(([addr, len, w], i) => {
        const next = i + 1 < pieces.length ? descs[i + 1]! : 0;
        writeDesc(mem, this.#desc + 16 * descs[i]!, addr, len, (w ? DescFlag.Write : 0) | (i + 1 < pieces.length ? DescFlag.Next : 0), next);
      });
    }
    this.#publish(head);
    this.#outstanding++;
    const id = this.#nextId++;
    this.#ids[head] = id;
    return id;
  }

  #publish(head: number): void {
    const mem = this.memory;
    const size = this.queueSize;
    mem.writeU16(this.#avail + 4 + 2 * (this.#availIdx % size), head);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    // Release: the descriptors and ring entry above are visible to a device
    // that loads avail.idx (Linux: virtio_wmb before the idx store).
    mem.storeU16Release(this.#avail + 2, this.#availIdx);
  }

  /** Notify the device of everything submitted, unless it said it does not need it. */
  kick(): void {
    const newIdx = this.#availIdx;
    const oldIdx = this.#kickedIdx;
    if (newIdx === oldIdx) return;
    this.#kickedIdx = newIdx;
    let needed: boolean;
    if (this.#eventIdx) {
      // Linux: virtio_mb, then vring_need_event(avail_event, new, old). Both
      // accesses are sequentially consistent atomics.
      const availEvent = this.memory.loadU16Acquire(this.#used + 4 + 8 * this.queueSize);
      needed = ((newIdx - availEvent - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
    } else {
      needed = (this.memory.loadU16Acquire(this.#used) & USED_F_NO_NOTIFY) === 0;
    }
    if (needed) this.mmio.write(MmioReg.QueueNotify, 0, 4);
  }

  /** Ask for no interrupts (polling mode) or for one per completion. */
  setInterrupts(on: boolean): void {
    if (!this.#eventIdx) this.memory.storeU16Release(this.#avail, on ? 0 : AVAIL_F_NO_INTERRUPT);
  }

  /** Reap every completion in the used ring (without waiting). */
  reap(): Completion[] {
    const mem = this.memory;
    const out: Completion[] = [];
    // Acquire: used elements and status bytes are visible after this load.
    const usedIdx = mem.loadU16Acquire(this.#used + 2);
    while (this.#lastUsedIdx !== usedIdx) {
      const elem = this.#used + 4 + 8 * (this.#lastUsedIdx % this.queueSize);
      const head = mem.readU32(elem);
      const usedLen = mem.readU32(elem + 4);
      this.#lastUsedIdx = (this.#lastUsedIdx + 1) & 0xffff;
      const chain = this.#chainDescs[head];
      if (!chain || chain.length === 0) throw new DriverError(`device returned head ${head}, which is not in flight`);
      const status = mem.readU8(this.#reqs + REQ_AREA * head + BLK_HEADER_BYTES);
      for (const d of chain) this.#freeDesc.push(d);
      this.#chainDescs[head] = [];
      this.#outstanding--;
      out.push({ id: this.#ids[head]!, head, status, usedLen });
    }
    if (this.#eventIdx) {
      // virtqueue_enable_cb: interrupt at the next completion.
      mem.storeU16Release(this.#avail + 4 + 2 * this.queueSize, this.#lastUsedIdx);
    }
    return out;
  }

  /** Acknowledge the interrupt line (as vm_interrupt does). Returns the bits seen. */
  ackInterrupt(): number {
    const bits = this.mmio.read(MmioReg.InterruptStatus, 4);
    if (bits) this.mmio.write(MmioReg.InterruptAck, bits, 4);
    if (bits & MmioInterrupt.ConfigChange) {
      this.configChanges++;
      this.#onConfigChange?.(this);
    }
    return bits;
  }

  /** Wait for at least one completion, acknowledging interrupts as Linux's vm_interrupt does. */
  async wait(): Promise<Completion[]> {
    for (;;) {
      this.ackInterrupt();
      const got = this.reap();
      if (got.length > 0) return got;
      if (this.status & DeviceStatus.DeviceNeedsReset) throw new DriverError('device needs reset');
      await this.#waitForInterrupt();
    }
  }

  /**
   * Submit, kick, and wait for this request's completion. Concurrent callers
   * share one wait: whoever's completions it reaps, every caller looks for
   * its own (a caller that waited alone could sleep on after another had
   * reaped its completion, with no interrupt left to wake it).
   */
  async run(req: DriverRequest): Promise<Completion> {
    const id = this.submit(req);
    this.kick();
    for (;;) {
      const mine = this.#done.get(id);
      if (mine) {
        this.#done.delete(id);
        return mine;
      }
      await (this.#reaping ??= this.#reapShared());
    }
  }

  async #reapShared(): Promise<void> {
    try {
      for (const c of await this.wait()) this.#done.set(c.id, c);
    } finally {
      this.#reaping = null;
    }
  }

  // ---- conveniences over the arena (copying; tests and demos) -------------

  /** Read `sectors` sectors at `sector` into a new array. Throws on a non-OK status. */
  async read(sector: number, bytes: number, buffer = this.#scratch(bytes)): Promise<Uint8Array> {
    const c = await this.run({ type: BlkRequestType.In, sector, in: splitSegments(buffer, bytes) });
    expectOk(c, 'read');
    const out = new Uint8Array(bytes);
    this.memory.read(buffer.addr, out);
    return out;
  }

  /** Write `data` at `sector`. Throws on a non-OK status. */
  async write(sector: number, data: Uint8Array, buffer = this.#scratch(data.length)): Promise<void> {
    this.memory.write(buffer.addr, data);
    const c = await this.run({ type: BlkRequestType.Out, sector, out: splitSegments(buffer, data.length) });
    expectOk(c, 'write');
  }

  async flush(): Promise<void> {
    expectOk(await this.run({ type: BlkRequestType.Flush }), 'flush');
  }

  async getId(): Promise<string> {
    const buf = this.#scratch(20);
    const c = await this.run({ type: BlkRequestType.GetId, in: [{ addr: buf.addr, len: 20 }] });
    expectOk(c, 'get-id');
    const bytes = new Uint8Array(20);
    this.memory.read(buf.addr, bytes);
    const end = bytes.indexOf(0);
    return new TextDecoder().decode(bytes.subarray(0, end < 0 ? 20 : end));
  }

  /** DISCARD or WRITE_ZEROES of [sector, sector + sectors) ranges. Returns the status. */
  async discardOrZero(type: number, ranges: Array<{ sector: number; sectors: number; flags?: number }>): Promise<number> {
    const buf = this.#scratch(16 * ranges.length);
    ranges.forEach((r, i) => {
      this.memory.writeU64(buf.addr + 16 * i, r.sector);
      this.memory.writeU32(buf.addr + 16 * i + 8, r.sectors);
      this.memory.writeU32(buf.addr + 16 * i + 12, r.flags ?? 0);
    });
    const c = await this.run({ type, out: [{ addr: buf.addr, len: 16 * ranges.length }] });
    return c.status;
  }

  #scratchSeg: Segment | null = null;
  /** A reusable buffer for the copying conveniences (one request at a time). */
  #scratch(bytes: number): Segment {
    if (!this.#scratchSeg || this.#scratchSeg.len < bytes) this.#scratchSeg = this.allocate(Math.max(bytes, 64 << 10));
    return this.#scratchSeg;
  }

  /** Reset the device (status 0) and wait until it reads back 0 (§2.4). */
  async reset(): Promise<void> {
    await resetDevice(this.mmio);
  }
}

async function resetDevice(m: MmioAccessor): Promise<void> {
  m.write(MmioReg.Status, 0, 4);
  // §2.4.2: wait for Status to read 0 before re-initialising.
  for (let i = 0; m.read(MmioReg.Status, 4) !== 0; i++) {
    if (i > 100_000) throw new DriverError('device did not finish reset');
    await new Promise((r) => setTimeout(r, i < 10 ? 0 : 1));
  }
}

function writeAddr(m: MmioAccessor, low: number, addr: number): void {
  m.write(low, addr % 0x1_0000_0000, 4);
  m.write(low + 4, Math.floor(addr / 0x1_0000_0000), 4);
}

function writeDesc(mem: GuestMemory, at: number, addr: number, len: number, flags: number, next: number): void {
  mem.writeU64(at, addr);
  mem.writeU32(at + 8, len);
  mem.writeU16(at + 12, flags);
  mem.writeU16(at + 14, next);
}

/** Split a buffer into page-sized segments, like a bio of scattered pages. */
function splitSegments(buf: Segment, bytes: number, pieces = 1): Segment[] {
  if (pieces <= 1) return [{ addr: buf.addr, len: bytes }];
  const out: Segment[] = [];
  const step = Math.ceil(bytes / pieces / SECTOR_SIZE) * SECTOR_SIZE;
  for (let at = 0; at < bytes; at += step) out.push({ addr: buf.addr + at, len: Math.min(step, bytes - at) });
  return out;
}

function expectOk(c: Completion, what: string): void {
  if (c.status !== BlkStatus.Ok) throw new DriverError(`${what} failed with status ${c.status}`);
}
