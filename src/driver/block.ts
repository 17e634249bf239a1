// A guest-side virtio-blk driver that does what Linux's virtio_blk does,
// through any `DriverTransport`: reset, ACKNOWLEDGE, DRIVER, feature
// negotiation, the FEATURES_OK check, queue 0 set up in guest RAM,
// DRIVER_OK (virtio_dev_probe and virtblk_probe); then requests built as
// virtblk_add_req builds them (a header, data segments, a one-byte status,
// all of them in an indirect table when there is more than one), and
// completions reaped from the used ring.
//
// Tests, end-to-end runs, benchmarks and the demo drive the device with it,
// and it is public API for exercising a disk without booting a guest.
//
// Memory: the driver owns an arena of guest RAM: the queue's rings, its
// per-head header and status bytes and indirect tables (`SplitQueue`), then
// a bump allocator for data buffers. Data buffers are otherwise the
// caller's (any guest addresses).

import { BLK_DWZ_SEGMENT_BYTES, BLK_HEADER_BYTES, BLK_ID_BYTES, BLK_SUPPORTED_FEATURES, BlkConfig, BlkFeature, BlkRequestType, BlkStatus, VIRTIO_ID_BLOCK } from '../block/constants.ts';
import { DeviceStatus, VirtioFeature, hasFeature } from '../virtio/device.ts';
import type { GuestMemory } from '../virtio/memory.ts';
import { DriverError } from './errors.ts';
import { MmioTransport, type MmioAccessor } from './mmio-transport.ts';
import { InterruptCause, type DriverTransport } from './transport.ts';
import { SplitQueue, align, queueLayout, type Segment } from './virtqueue.ts';

interface CommonDriverOptions {
  memory: GuestMemory;
  /** Guest RAM the driver may use for rings, headers and tables (see `arenaBytes`). */
  arena: Segment;
  /** Queue size (default: the device's maximum, at most 256). */
  queueSize?: number;
  /** Features to refuse even if offered (e.g. 1n << 29n to run without EVENT_IDX). */
  refuseFeatures?: bigint;
  /** Wait until the interrupt line may have risen. Default: yield to the event loop. */
  waitForInterrupt?: () => Promise<void>;
  /** Called when the device reports a config change (e.g. a resize). */
  onConfigChange?: (driver: VirtioBlkDriver) => void;
}

/** The device behind a transport, or behind virtio-mmio registers (wrapped in an `MmioTransport`). */
export type DriverOptions = CommonDriverOptions & ({ transport: DriverTransport } | { mmio: MmioAccessor });

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

/** Per-head area: header (16), status (1), padded. */
const REQ_AREA = 32;
/** The status byte's offset in a head's area. */
const STATUS_AT = BLK_HEADER_BYTES;
/** Where the split-header framing cuts the header. */
const SPLIT_HEADER_AT = 5;

/** Bytes of arena a queue of `size` needs. */
export function arenaBytes(size: number): number {
  return queueLayout(size, REQ_AREA).total;
}

export class VirtioBlkDriver {
  readonly transport: DriverTransport;
  readonly memory: GuestMemory;
  readonly queueSize: number;
  /** Features both sides agreed on. */
  readonly features: bigint;
  readonly #queue: SplitQueue;
  readonly #waitForInterrupt: () => Promise<void>;
  readonly #onConfigChange: ((d: VirtioBlkDriver) => void) | null;
  /** Completions reaped but not yet taken. */
  readonly #done = new Map<number, Completion>();
  /** The one wait concurrent `run` callers share, while there is one. */
  #reaping: Promise<void> | null = null;
  /** Next free arena byte for `allocate`; the queue's layout lies below it. */
  #bump: number;
  readonly #arenaEnd: number;
  /** The id of the request each head carries. */
  readonly #ids: Int32Array;
  #nextId = 1;
  /** Config-change interrupts seen. */
  configChanges = 0;

  private constructor(opts: DriverOptions, transport: DriverTransport, size: number, features: bigint) {
    this.transport = transport;
    this.memory = opts.memory;
    this.queueSize = size;
    this.features = features;
    this.#queue = new SplitQueue({
      memory: opts.memory,
      base: opts.arena.addr,
      size,
      headAreaBytes: REQ_AREA,
      eventIdx: hasFeature(features, VirtioFeature.RingEventIdx),
      indirect: hasFeature(features, VirtioFeature.RingIndirectDesc),
    });
    this.#bump = opts.arena.addr + arenaBytes(size);
    this.#arenaEnd = opts.arena.addr + opts.arena.len;
    this.#waitForInterrupt = opts.waitForInterrupt ?? (() => new Promise((r) => setTimeout(r, 0)));
    this.#onConfigChange = opts.onConfigChange ?? null;
    this.#ids = new Int32Array(size);
  }

  /** Reset the device and bring it up as Linux does (§3.1.1). */
  static async init(opts: DriverOptions): Promise<VirtioBlkDriver> {
    const t = transportOf(opts);
    if (t.probe() !== VIRTIO_ID_BLOCK) throw new DriverError('not a block device');
    await t.reset();
    t.setStatus(DeviceStatus.Acknowledge);
    t.setStatus(DeviceStatus.Acknowledge | DeviceStatus.Driver);
    const features = t.readDeviceFeatures() & BLK_SUPPORTED_FEATURES & ~(opts.refuseFeatures ?? 0n);
    t.writeDriverFeatures(features);
    const s = DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk;
    t.setStatus(s);
    if (!(t.getStatus() & DeviceStatus.FeaturesOk)) {
      t.setStatus(s | DeviceStatus.Failed);
      throw new DriverError('device refused FEATURES_OK');
    }
    // Linux's vm_setup_vq / vp_modern's setup_vq.
    t.selectQueue(0);
    if (t.queueEnabled()) throw new DriverError('queue 0 already live');
    const max = t.queueMaxSize();
    if (max === 0) throw new DriverError('queue 0 not available');
    const size = Math.min(opts.queueSize ?? 256, max);
    if (arenaBytes(size) > opts.arena.len) throw new DriverError(`arena too small: need ${arenaBytes(size)} bytes`);
    const d = new VirtioBlkDriver(opts, t, size, features);
    d.#queue.clearRings();
    t.setQueueSize(size);
    t.setQueueAddresses(d.#queue.rings);
    t.enableQueue();
    t.setStatus(s | DeviceStatus.DriverOk);
    return d;
  }

  // ---- config space -------------------------------------------------------

  /** Read config bytes consistently (retried while the config generation changes, §2.5.1). */
  readConfig(offset: number, width: 1 | 2 | 4 | 8): number {
    return this.transport.readConfig(offset, width);
  }

  get capacitySectors(): number {
    return this.readConfig(BlkConfig.Capacity, 8);
  }

  get readOnly(): boolean {
    return hasFeature(this.features, BlkFeature.Ro);
  }

  get status(): number {
    return this.transport.getStatus();
  }

  /** Set the cache mode (needs CONFIG_WCE): true = writeback, false = writethrough. */
  setWriteback(on: boolean): void {
    this.transport.writeConfig(BlkConfig.Writeback, on ? 1 : 0, 1);
  }

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
    return this.#queue.freeDescriptors;
  }

  /** Requests submitted and not yet reaped. */
  get inFlight(): number {
    return this.#queue.inFlight;
  }

  /**
   * Build the chain and make it available (not yet notified: see `kick`).
   * Returns the request's id. Throws DriverError when there are not enough
   * free descriptors.
   */
  submit(req: DriverRequest): number {
    const mem = this.memory;
    const outs = req.out ?? [];
    const ins = req.in ?? [];
    const count = outs.length + ins.length + (req.splitHeader ? 3 : 2);
    const q = this.#queue;
    const head = q.reserve(count, req.indirect);
    const area = q.headArea(head);
    mem.writeU32(area, req.type);
    mem.writeU32(area + 4, req.ioprio ?? 0);
    mem.writeU64(area + 8, req.sector ?? 0);
    mem.writeU8(area + STATUS_AT, 0xff); // status: poisoned until the device writes it
    // Linux: header, data..., status (§5.2.6).
    let i = 0;
    if (req.splitHeader) {
      q.setBuffer(i++, area, SPLIT_HEADER_AT, false);
      q.setBuffer(i++, area + SPLIT_HEADER_AT, BLK_HEADER_BYTES - SPLIT_HEADER_AT, false);
    } else {
      q.setBuffer(i++, area, BLK_HEADER_BYTES, false);
    }
    for (const s of outs) q.setBuffer(i++, s.addr, s.len, false);
    for (const s of ins) q.setBuffer(i++, s.addr, s.len, true);
    q.setBuffer(i, area + STATUS_AT, 1, true);
    q.publishChain(head);
    const id = this.#nextId++;
    this.#ids[head] = id;
    return id;
  }

  /** Notify the device of everything submitted, unless it said it does not need it. */
  kick(): void {
    if (this.#queue.kickPrepare()) this.transport.notify(0);
  }

  /** Ask for no interrupts (polling mode) or for one per completion. */
  setInterrupts(on: boolean): void {
    this.#queue.setInterrupts(on);
  }

  /** Reap every completion in the used ring (without waiting). */
  reap(): Completion[] {
    const out: Completion[] = [];
    this.#queue.reap((head, usedLen) => {
      const status = this.memory.readU8(this.#queue.headArea(head) + STATUS_AT);
      out.push({ id: this.#ids[head]!, head, status, usedLen });
    });
    return out;
  }

  /** Take and acknowledge the interrupt cause (as vm_interrupt does). Returns the bits seen. */
  ackInterrupt(): number {
    const bits = this.transport.takeInterrupt();
    if (bits & InterruptCause.ConfigChange) {
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

  /** Read `bytes` bytes (whole sectors) starting at `sector` into a new array. Throws on a non-OK status. */
  async read(sector: number, bytes: number, buffer = this.#scratch(bytes)): Promise<Uint8Array> {
    const c = await this.run({ type: BlkRequestType.In, sector, in: [{ addr: buffer.addr, len: bytes }] });
    expectOk(c, 'read');
    const out = new Uint8Array(bytes);
    this.memory.read(buffer.addr, out);
    return out;
  }

  /** Write `data` (whole sectors) starting at `sector`. Throws on a non-OK status. */
  async write(sector: number, data: Uint8Array, buffer = this.#scratch(data.length)): Promise<void> {
    this.memory.write(buffer.addr, data);
    const c = await this.run({ type: BlkRequestType.Out, sector, out: [{ addr: buffer.addr, len: data.length }] });
    expectOk(c, 'write');
  }

  async flush(): Promise<void> {
    expectOk(await this.run({ type: BlkRequestType.Flush }), 'flush');
  }

  async getId(): Promise<string> {
    const buf = this.#scratch(BLK_ID_BYTES);
    const c = await this.run({ type: BlkRequestType.GetId, in: [{ addr: buf.addr, len: BLK_ID_BYTES }] });
    expectOk(c, 'get-id');
    const bytes = new Uint8Array(BLK_ID_BYTES);
    this.memory.read(buf.addr, bytes);
    const end = bytes.indexOf(0);
    return new TextDecoder().decode(bytes.subarray(0, end < 0 ? BLK_ID_BYTES : end));
  }

  /** DISCARD or WRITE_ZEROES of [sector, sector + sectors) ranges. Returns the status. */
  async discardOrZero(type: number, ranges: Array<{ sector: number; sectors: number; flags?: number }>): Promise<number> {
    const bytes = BLK_DWZ_SEGMENT_BYTES * ranges.length;
    const buf = this.#scratch(bytes);
    ranges.forEach((r, i) => {
      const at = buf.addr + BLK_DWZ_SEGMENT_BYTES * i;
      this.memory.writeU64(at, r.sector);
      this.memory.writeU32(at + 8, r.sectors);
      this.memory.writeU32(at + 12, r.flags ?? 0);
    });
    const c = await this.run({ type, out: [{ addr: buf.addr, len: bytes }] });
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
    await this.transport.reset();
  }
}

function transportOf(opts: DriverOptions): DriverTransport {
  if ('transport' in opts && opts.transport) return opts.transport;
  if ('mmio' in opts && opts.mmio) return new MmioTransport(opts.mmio);
  throw new DriverError('DriverOptions needs a transport or mmio');
}

function expectOk(c: Completion, what: string): void {
  if (c.status !== BlkStatus.Ok) throw new DriverError(`${what} failed with status ${c.status}`);
}
