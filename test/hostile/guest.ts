// A raw guest: no driver, just register writes and bytes in guest RAM. It
// negotiates (or refuses to) with plain register writes, writes any
// descriptor, ring entry or index a case asks for, and keeps a shadow of the
// RAM it wrote itself, so that after a case every byte the device changed can
// be checked against the ranges the device was allowed to write: the
// device-writable buffers the case handed it and the used rings it set up.
// RAM starts filled with a position-dependent canary, so a misplaced write or
// a copy from elsewhere both show.

import { BlkFeature } from '../../src/block/constants.ts';
import { DeviceStatus, VirtioFeature } from '../../src/virtio/device.ts';
import { MmioReg } from '../../src/virtio/mmio/mmio.ts';
import { DescFlag } from '../../src/virtio/queue.ts';
import type { Target } from './target.ts';

export class CaseFailure extends Error {
  override readonly name = 'CaseFailure';
  constructor(
    readonly kind: 'FAIL' | 'WEDGED',
    message: string,
  ) {
    super(message);
  }
}

export function fail(message: string): never {
  throw new CaseFailure('FAIL', message);
}

export function wedged(message: string): never {
  throw new CaseFailure('WEDGED', message);
}

export function check(condition: unknown, message: string): asserts condition {
  if (!condition) fail(message);
}

/** The canary for `length` bytes of RAM: position-dependent, so a copy from elsewhere shows too. */
const canaries = new Map<number, Uint8Array>();
function canary(length: number): Uint8Array {
  let c = canaries.get(length);
  if (!c) {
    c = new Uint8Array(length);
    for (let i = 0; i < length; i++) c[i] = ((Math.imul(i, 0x9e3779b1) >>> 24) ^ 0x5a) & 0xff;
    canaries.set(length, c);
  }
  return c;
}

/** The first index ≥ `from` where `a` and `b` differ, or their length; compares words where it can. */
export function firstDifference(a: Uint8Array, b: Uint8Array, from = 0): number {
  const n = Math.min(a.length, b.length);
  let i = from;
  while (i < n && (i & 3) !== 0) {
    if (a[i] !== b[i]) return i;
    i++;
  }
  if ((a.byteOffset & 3) === 0 && (b.byteOffset & 3) === 0) {
    const words = (n - i) >>> 2;
    const wa = new Uint32Array(a.buffer, a.byteOffset + i, words);
    const wb = new Uint32Array(b.buffer, b.byteOffset + i, words);
    let w = 0;
    while (w < words && wa[w] === wb[w]) w++;
    i += w * 4;
  }
  while (i < n && a[i] === b[i]) i++;
  return i;
}

export interface QueueLayout {
  size: number;
  desc: number;
  avail: number;
  used: number;
}

/** Rings for a queue of `size` at the bottom of RAM; buffers go above them. */
export function layoutFor(ramBase: number, size: number): QueueLayout & { heap: number } {
  const desc = ramBase + 0x1000;
  const avail = desc + 16 * size;
  const used = align(avail + 6 + 2 * size, 0x1000);
  const heap = align(used + 6 + 8 * size, 0x1000);
  return { size, desc, avail, used, heap };
}

function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export interface NegotiateOptions {
  /** Features to accept (default: what the device offers, without EVENT_IDX). */
  features?: bigint;
  /** The queue to set up (default: size 16 at `layoutFor`); null: none. */
  queueSize?: number | null;
  /** Set DRIVER_OK (default true). */
  driverOk?: boolean;
}

/** A device-writable descriptor's bytes, or a used ring: where the device may write. */
interface Range {
  start: number;
  end: number;
}

export interface Used {
  id: number;
  len: number;
}

/** What a submitted chain came to: a used element, or DEVICE_NEEDS_RESET (or both). */
export interface Outcome {
  used: Used | null;
  needsReset: boolean;
}

export const { Next, Write, Indirect } = DescFlag;
export const STATUS_NEEDS_RESET = DeviceStatus.DeviceNeedsReset;
export const NEGOTIATED = DeviceStatus.Acknowledge | DeviceStatus.Driver | DeviceStatus.FeaturesOk;
export const LIVE = NEGOTIATED | DeviceStatus.DriverOk;

export class RawGuest {
  readonly t: Target;
  readonly base: number;
  readonly end: number;
  readonly #ram: DataView;
  /** What RAM holds unless the device wrote it. */
  readonly shadow: Uint8Array;
  readonly #shadowView: DataView;
  readonly #allowed: Range[] = [];
  /** The disk as it was when the case began. */
  readonly diskBefore: Uint8Array;
  q: QueueLayout & { heap: number };
  #heap = 0;
  availIdx = 0;
  lastUsed = 0;

  constructor(t: Target) {
    this.t = t;
    this.base = t.ramBase;
    this.end = t.ramBase + t.ram.length;
    this.#ram = new DataView(t.ram.buffer, t.ram.byteOffset, t.ram.length);
    this.shadow = new Uint8Array(t.ram.length);
    this.#shadowView = new DataView(this.shadow.buffer);
    this.shadow.set(canary(this.shadow.length));
    t.ram.set(this.shadow);
    this.diskBefore = t.disk.slice();
    this.q = layoutFor(this.base, 16);
    this.#heap = this.q.heap;
  }

  // ---- guest RAM --------------------------------------------------------

  #inRam(addr: number, len: number): boolean {
    return addr >= this.base && addr + len <= this.end;
  }

  w8(addr: number, v: number): void {
    if (!this.#inRam(addr, 1)) return;
    this.#ram.setUint8(addr - this.base, v);
    this.#shadowView.setUint8(addr - this.base, v);
  }
  w16(addr: number, v: number): void {
    if (!this.#inRam(addr, 2)) return;
    this.#ram.setUint16(addr - this.base, v, true);
    this.#shadowView.setUint16(addr - this.base, v, true);
  }
  w32(addr: number, v: number): void {
    if (!this.#inRam(addr, 4)) return;
    this.#ram.setUint32(addr - this.base, v >>> 0, true);
    this.#shadowView.setUint32(addr - this.base, v >>> 0, true);
  }
  w64(addr: number, v: bigint | number): void {
    const b = BigInt.asUintN(64, BigInt(v));
    this.w32(addr, Number(b & 0xffff_ffffn));
    this.w32(addr + 4, Number(b >> 32n));
  }
  wbytes(addr: number, bytes: Uint8Array): void {
    if (!this.#inRam(addr, bytes.length)) return;
    this.t.ram.set(bytes, addr - this.base);
    this.shadow.set(bytes, addr - this.base);
  }
  r8(addr: number): number {
    return this.#ram.getUint8(addr - this.base);
  }
  r16(addr: number): number {
    return this.#ram.getUint16(addr - this.base, true);
  }
  r32(addr: number): number {
    return this.#ram.getUint32(addr - this.base, true);
  }
  bytes(addr: number, len: number): Uint8Array {
    return this.t.ram.slice(addr - this.base, addr - this.base + len);
  }

  /** The device may write [addr, addr + len) (clipped to RAM). */
  allow(addr: number, len: number): void {
    const start = Math.max(addr, this.base);
    const end = Math.min(addr + len, this.end);
    if (end > start) this.#allowed.push({ start, end });
  }

  /** Bump-allocate guest RAM for buffers and tables. */
  alloc(len: number, alignTo = 16): number {
    const at = align(this.#heap, alignTo);
    this.#heap = at + len;
    if (this.#heap > this.end) throw new Error('hostile guest: out of RAM');
    return at;
  }

  /** Whether [addr, addr + len) still holds what the guest put there. */
  unchanged(addr: number, len: number): boolean {
    const from = Math.max(addr, this.base) - this.base;
    const to = Math.min(addr + len, this.end) - this.base;
    for (let i = from; i < to; i++) if (this.t.ram[i] !== this.shadow[i]) return false;
    return true;
  }

  /** Bytes the device changed outside what it was allowed to write (first few, described). */
  canaryViolations(max = 4): string[] {
    const allowed = [...this.#allowed].sort((a, b) => a.start - b.start);
    const ram = this.t.ram;
    const out: string[] = [];
    for (let i = firstDifference(ram, this.shadow); i < ram.length && out.length < max; i = firstDifference(ram, this.shadow, i + 1)) {
      const addr = this.base + i;
      if (allowed.some((r) => r.start <= addr && addr < r.end)) continue;
      let endAt = i;
      while (endAt < ram.length && ram[endAt] !== this.shadow[endAt]) endAt++;
      out.push(`0x${addr.toString(16)}+${endAt - i} (0x${this.shadow[i]!.toString(16)} → 0x${ram[i]!.toString(16)})`);
      i = endAt;
    }
    return out;
  }

  /** Fail unless the disk holds what it held when the case began. */
  expectDiskUnchanged(what: string): void {
    const i = firstDifference(this.t.disk, this.diskBefore);
    if (i < this.t.disk.length) fail(`${what}: the disk changed at byte ${i} (sector ${Math.floor(i / 512)})`);
  }

  // ---- registers --------------------------------------------------------

  reg(offset: number, width = 4): number {
    return this.t.mmio.read(offset, width) >>> 0;
  }
  setReg(offset: number, value: number, width = 4): void {
    this.t.mmio.write(offset, value, width);
  }
  get status(): number {
    return this.reg(MmioReg.Status);
  }

  offered(): bigint {
    this.setReg(MmioReg.DeviceFeaturesSel, 0);
    const lo = BigInt(this.reg(MmioReg.DeviceFeatures));
    this.setReg(MmioReg.DeviceFeaturesSel, 1);
    return lo | (BigInt(this.reg(MmioReg.DeviceFeatures)) << 32n);
  }

  /** The default acceptance: everything offered but EVENT_IDX (so every publish interrupts). */
  defaultFeatures(): bigint {
    return this.offered() & ~(1n << VirtioFeature.RingEventIdx);
  }

  writeFeatures(features: bigint): void {
    this.setReg(MmioReg.DriverFeaturesSel, 0);
    this.setReg(MmioReg.DriverFeatures, Number(features & 0xffff_ffffn));
    this.setReg(MmioReg.DriverFeaturesSel, 1);
    this.setReg(MmioReg.DriverFeatures, Number((features >> 32n) & 0xffff_ffffn));
  }

  /** Set up queue 0 at `layout` with plain register writes; its used ring becomes writable. */
  programQueue(layout: QueueLayout, ready = true): void {
    this.q = { ...layout, heap: this.q.heap };
    // Fresh rings, as a driver allocates them.
    for (let i = 0; i < 6 + 2 * layout.size; i += 2) this.w16(layout.avail + i, 0);
    for (let i = 0; i < 6 + 8 * layout.size; i += 2) this.w16(layout.used + i, 0);
    this.availIdx = 0;
    this.lastUsed = 0;
    this.allow(layout.used, 6 + 8 * layout.size);
    this.setReg(MmioReg.QueueSel, 0);
    this.setReg(MmioReg.QueueNum, layout.size);
    this.setReg(MmioReg.QueueDescLow, layout.desc % 2 ** 32);
    this.setReg(MmioReg.QueueDescHigh, Math.floor(layout.desc / 2 ** 32));
    this.setReg(MmioReg.QueueDriverLow, layout.avail % 2 ** 32);
    this.setReg(MmioReg.QueueDriverHigh, Math.floor(layout.avail / 2 ** 32));
    this.setReg(MmioReg.QueueDeviceLow, layout.used % 2 ** 32);
    this.setReg(MmioReg.QueueDeviceHigh, Math.floor(layout.used / 2 ** 32));
    if (ready) this.setReg(MmioReg.QueueReady, 1);
  }

  /** Reset, then initialise like a driver (§3.1.1), with plain register writes. */
  async negotiate(options: NegotiateOptions = {}): Promise<void> {
    await this.reset();
    this.setReg(MmioReg.Status, DeviceStatus.Acknowledge);
    this.setReg(MmioReg.Status, DeviceStatus.Acknowledge | DeviceStatus.Driver);
    this.writeFeatures(options.features ?? this.defaultFeatures());
    this.setReg(MmioReg.Status, NEGOTIATED);
    check(this.status & DeviceStatus.FeaturesOk, `FEATURES_OK refused (status 0x${this.status.toString(16)})`);
    const size = options.queueSize === undefined ? 16 : options.queueSize;
    if (size !== null) {
      const layout = layoutFor(this.base, size);
      this.#heap = Math.max(this.#heap, layout.heap);
      this.programQueue(layout);
    }
    if (options.driverOk ?? true) this.setReg(MmioReg.Status, LIVE);
  }

  /** Write Status 0 and wait (bounded) until it reads 0 (§2.4.2). */
  async reset(): Promise<void> {
    this.setReg(MmioReg.Status, 0);
    if (!(await this.waitFor(() => this.status === 0))) {
      wedged(`Status still reads 0x${this.status.toString(16)} after a reset`);
    }
  }

  ackInterrupts(): number {
    const level = this.reg(MmioReg.InterruptStatus);
    if (level) this.setReg(MmioReg.InterruptAck, level);
    return level;
  }

  // ---- descriptors and rings --------------------------------------------

  /** Descriptor `i` of `table` (default: the queue's). Writable buffers become writable; INDIRECT tables never are. */
  desc(i: number, addr: number | bigint, len: number, flags: number, next = 0, table = this.q.desc): void {
    const d = table + 16 * i;
    this.w64(d, addr);
    this.w32(d + 8, len);
    this.w16(d + 12, flags);
    this.w16(d + 14, next);
    if (flags & Write && !(flags & Indirect) && typeof addr === 'number') this.allow(addr, len);
  }

  /** Link `segs` as descriptors `first`, `first + 1`, … of `table`; returns the head index. */
  chain(first: number, segs: ReadonlyArray<Seg>, table = this.q.desc): number {
    segs.forEach((s, k) => {
      const last = k === segs.length - 1;
      this.desc(first + k, s.addr, s.len, (s.write ? Write : 0) | (last ? 0 : Next) | (s.flags ?? 0), last ? 0 : first + k + 1, table);
    });
    return first;
  }

  /** Write a request header: type, reserved (ioprio), sector (u64). */
  header(addr: number, type: number, sector: bigint | number = 0, reserved = 0): void {
    this.w32(addr, type);
    this.w32(addr + 4, reserved);
    this.w64(addr + 8, sector);
  }

  /** A conventional request in fresh RAM: header, data buffers, status byte (0xee until written). */
  request(type: number, sector: bigint | number, dataBytes: number[], dataWritable: boolean): Req {
    const header = this.alloc(16);
    this.header(header, type, sector);
    const data = dataBytes.map((n) => this.alloc(n, 512));
    const status = this.alloc(1);
    this.w8(status, 0xee);
    const segs: Seg[] = [
      { addr: header, len: 16 },
      ...data.map((addr, k) => ({ addr, len: dataBytes[k]!, write: dataWritable })),
      { addr: status, len: 1, write: true },
    ];
    return { header, data, status, segs };
  }

  offer(head: number): void {
    const { avail, size } = this.q;
    this.w16(avail + 4 + 2 * (this.availIdx % size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.w16(avail + 2, this.availIdx);
  }

  /** Write avail.idx without offering anything. */
  setAvailIdx(idx: number): void {
    this.availIdx = idx & 0xffff;
    this.w16(this.q.avail + 2, this.availIdx);
  }

  notify(queue = 0): void {
    this.setReg(MmioReg.QueueNotify, queue);
  }

  usedIdx(): number {
    return this.r16(this.q.used + 2);
  }

  /** Used elements published since the last call. */
  takeUsed(): Used[] {
    const out: Used[] = [];
    const idx = this.usedIdx();
    while (this.lastUsed !== idx && out.length <= 0x10000) {
      const e = this.q.used + 4 + 8 * (this.lastUsed % this.q.size);
      out.push({ id: this.r32(e), len: this.r32(e + 4) });
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** Poll `pred` until it holds, letting the device run between polls; false after `hangMs`. */
  async waitFor(pred: () => boolean): Promise<boolean> {
    const deadline = Date.now() + this.t.hangMs;
    for (;;) {
      if (pred()) return true;
      if (Date.now() > deadline) return false;
      await this.t.settle();
    }
  }

  /** Wait (bounded) for one more used element or DEVICE_NEEDS_RESET; WEDGED when neither comes. */
  async outcome(what: string): Promise<Outcome> {
    const seen = await this.waitFor(() => this.usedIdx() !== this.lastUsed || (this.status & STATUS_NEEDS_RESET) !== 0);
    if (!seen) wedged(`${what}: no used element and no DEVICE_NEEDS_RESET`);
    const used = this.takeUsed();
    check(used.length <= 1, `${what}: ${used.length} used elements for one chain`);
    return { used: used[0] ?? null, needsReset: (this.status & STATUS_NEEDS_RESET) !== 0 };
  }

  /** Offer `head`, notify, and wait for what the device made of it. */
  async submit(head: number, what: string): Promise<Outcome> {
    this.offer(head);
    this.notify();
    return this.outcome(what);
  }

  /** Wait (bounded) until `count` used elements arrived; returns them. */
  async waitUsed(count: number, what: string): Promise<Used[]> {
    const out: Used[] = [];
    const ok = await this.waitFor(() => {
      out.push(...this.takeUsed());
      return out.length >= count;
    });
    if (!ok) wedged(`${what}: ${out.length} of ${count} used elements arrived`);
    return out;
  }
}

export interface Seg {
  addr: number | bigint;
  len: number;
  write?: boolean;
  flags?: number;
}

export interface Req {
  header: number;
  data: number[];
  status: number;
  segs: Seg[];
}

export const BLK_F = BlkFeature;
