// Guest-physical memory: the device's only window onto guest RAM.
//
// A guest address is mapped onto one of a few regions, each a byte range of a
// WebAssembly.Memory, a SharedArrayBuffer or an ArrayBuffer. Addresses are JS
// numbers: guest RAM ends far below 2^53, and any address too large to be exact
// is also far outside every region, so it fails the same range check.
//
// Every access is checked end-inclusive: [addr, addr + len) must lie inside one
// region (a buffer ending on the last byte of RAM is valid; one more is not).
// Ranges that cross regions are split by `span` so that each piece still gets a
// zero-copy view.
//
// A WebAssembly.Memory can grow. Growing a non-shared memory detaches the old
// buffer (its views read as length 0); growing a shared one leaves the old
// buffer valid but short. Either way an access past a cached view's length
// re-derives the views from `memory.buffer` before failing, so no caller ever
// holds a stale view across a call.

export type MemorySource = WebAssembly.Memory | SharedArrayBuffer | ArrayBuffer;

export interface GuestRegionSpec {
  /** Guest-physical address of the region's first byte (aarch64 `virt` RAM: 0x4000_0000). */
  guestAddress: number;
  /** What holds the bytes. */
  source: MemorySource;
  /** Byte offset of the region inside the source (multiple of 8). Default 0. */
  sourceOffset?: number;
  /**
   * Region size in bytes. Default: the source's current length minus
   * `sourceOffset`. A WebAssembly.Memory region may be declared larger than
   * the memory is now; the part not yet grown into reads as out of range.
   */
  size?: number;
}

class Region {
  readonly start: number;
  readonly end: number; // exclusive
  readonly sourceOffset: number;
  readonly source: MemorySource;
  bytes!: Uint8Array;
  view!: DataView;
  u16!: Uint16Array;
  u32!: Uint32Array;
  /** How far into the region the current views reach (≤ end − start). */
  mapped = 0;

  constructor(spec: GuestRegionSpec) {
    const offset = spec.sourceOffset ?? 0;
    if (!Number.isSafeInteger(spec.guestAddress) || spec.guestAddress < 0) {
      throw new RangeError(`guest address ${spec.guestAddress} is not a valid address`);
    }
    if (offset % 8 !== 0 || offset < 0) throw new RangeError('sourceOffset must be a non-negative multiple of 8');
    this.source = spec.source;
    this.sourceOffset = offset;
    this.start = spec.guestAddress;
    const available = bufferOf(spec.source).byteLength - offset;
    const size = spec.size ?? available;
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`region size ${size} is not valid`);
    this.end = this.start + size;
    this.refresh();
  }

  refresh(): void {
    const buffer = bufferOf(this.source);
    const length = Math.max(0, Math.min(this.end - this.start, buffer.byteLength - this.sourceOffset));
    this.mapped = length;
    this.bytes = new Uint8Array(buffer, this.sourceOffset, length);
    this.view = new DataView(buffer, this.sourceOffset, length);
    // Ring indices are read and written with Atomics, which need aligned
    // integer arrays; ring fields are 2- and 4-byte aligned (virtio 1.2 §2.7).
    this.u16 = new Uint16Array(buffer, this.sourceOffset, length >>> 1);
    this.u32 = new Uint32Array(buffer, this.sourceOffset, length >>> 2);
  }
}

function bufferOf(source: MemorySource): ArrayBuffer | SharedArrayBuffer {
  return source instanceof WebAssembly.Memory ? source.buffer : source;
}

/** Most views `cachedView` keeps before starting over. */
const VIEW_CACHE_ENTRIES = 4096;

export class GuestMemory {
  readonly #regions: Region[];
  /**
   * Views handed out for data transfer, by guest address. Guests reuse their
   * buffers (page-cache pages, a driver's bounce buffers), and a storage API
   * given a view it has seen before is much faster than one given a fresh
   * view: OPFS reads measured 290K/s with reused views against 155K/s with a
   * new one per call (bench/README.md). A cached view stays right: growing a
   * shared memory leaves old views valid, and growing a non-shared one
   * detaches them, which shows as length 0 and misses the cache.
   */
  readonly #viewCache = new Map<number, Uint8Array>();

  constructor(regions: GuestRegionSpec[]) {
    if (regions.length === 0) throw new RangeError('guest memory needs at least one region');
    this.#regions = regions.map((r) => new Region(r)).sort((a, b) => a.start - b.start);
    for (let i = 1; i < this.#regions.length; i++) {
      if (this.#regions[i]!.start < this.#regions[i - 1]!.end) throw new RangeError('guest memory regions overlap');
    }
  }

  /** One region holding all of `source`, starting at `guestAddress`. */
  static of(source: MemorySource, guestAddress = 0): GuestMemory {
    return new GuestMemory([{ guestAddress, source }]);
  }

  /** The regions' guest-physical extents, lowest first. */
  get extents(): ReadonlyArray<{ start: number; end: number }> {
    return this.#regions.map((r) => ({ start: r.start, end: r.end }));
  }

  /** Re-derive every view (call after the source grew, or let accesses do it). */
  refresh(): void {
    for (const r of this.#regions) r.refresh();
  }

  /**
   * The region holding all of [addr, addr + len), with its views covering it,
   * or undefined when any byte lies outside guest RAM.
   */
  #find(addr: number, len: number): Region | undefined {
    const regions = this.#regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i]!;
      if (addr < r.start) return undefined;
      if (addr >= r.end) continue;
      // End-inclusive: the last byte, addr + len − 1, must be inside the region.
      if (len > r.end - addr) return undefined;
      // A view shorter than needed: the memory grew, or (non-shared) its old
      // buffer was detached by growing and now reads as length 0.
      if (addr - r.start + len > r.bytes.length) {
        r.refresh();
        if (addr - r.start + len > r.mapped) return undefined;
      }
      return r;
    }
    return undefined;
  }

  /** Whether every byte of [addr, addr + len) is guest RAM (possibly across regions). */
  contains(addr: number, len: number): boolean {
    if (!(addr >= 0) || !(len >= 0) || !Number.isSafeInteger(addr + len)) return false;
    while (len > 0) {
      const n = this.contiguous(addr, len);
      if (n === 0) return false;
      addr += n;
      len -= n;
    }
    return true;
  }

  /**
   * How many bytes from `addr` lie in the same region (so one view covers
   * them), capped at `len`; 0 when `addr` is outside guest RAM.
   */
  contiguous(addr: number, len: number): number {
    const r = this.#find(addr, 1);
    if (!r) return 0;
    const chunk = Math.min(len, r.end - addr);
    return this.#find(addr, chunk) ? chunk : 0;
  }

  /** A zero-copy view of [addr, addr + len), or null when it is not inside one region. */
  view(addr: number, len: number): Uint8Array | null {
    const r = this.#find(addr, len);
    if (!r) return null;
    const at = addr - r.start;
    return r.bytes.subarray(at, at + len);
  }

  /** Like `view`, but returns the same view object for the same range while it stays valid. */
  cachedView(addr: number, len: number): Uint8Array | null {
    const cached = this.#viewCache.get(addr);
    if (cached !== undefined && cached.length === len) return cached;
    const fresh = this.view(addr, len);
    if (fresh !== null) {
      if (this.#viewCache.size >= VIEW_CACHE_ENTRIES) this.#viewCache.clear();
      this.#viewCache.set(addr, fresh);
    }
    return fresh;
  }

  /** Copy guest bytes into `dst`; false when the range is not guest RAM. */
  read(addr: number, dst: Uint8Array): boolean {
    let done = 0;
    while (done < dst.length) {
      const n = this.contiguous(addr + done, dst.length - done);
      if (n === 0) return false;
      const r = this.#find(addr + done, n)!;
      const at = addr + done - r.start;
      dst.set(r.bytes.subarray(at, at + n), done);
      done += n;
    }
    return true;
  }

  /** Copy `src` into guest RAM; false (and nothing written) when the range is not guest RAM. */
  write(addr: number, src: Uint8Array): boolean {
    if (!this.contains(addr, src.length)) return false;
    let done = 0;
    while (done < src.length) {
      const n = this.contiguous(addr + done, src.length - done);
      const r = this.#find(addr + done, n)!;
      r.bytes.set(src.subarray(done, done + n), addr + done - r.start);
      done += n;
    }
    return true;
  }

  /** Fill [addr, addr + len) with `value`; false (nothing written) when not guest RAM. */
  fill(addr: number, len: number, value = 0): boolean {
    if (!this.contains(addr, len)) return false;
    while (len > 0) {
      const n = this.contiguous(addr, len);
      const r = this.#find(addr, n)!;
      r.bytes.fill(value, addr - r.start, addr - r.start + n);
      addr += n;
      len -= n;
    }
    return true;
  }

  // Little-endian scalar accessors. They throw GuestMemoryError on a bad
  // address; the queue code checks ring and table ranges up front so that the
  // hot path never reaches the throw.

  readU8(addr: number): number {
    const r = this.#need(addr, 1);
    return r.bytes[addr - r.start]!;
  }

  readU16(addr: number): number {
    const r = this.#need(addr, 2);
    return r.view.getUint16(addr - r.start, true);
  }

  readU32(addr: number): number {
    const r = this.#need(addr, 4);
    return r.view.getUint32(addr - r.start, true);
  }

  /** A u64 as a number; values at or above 2^53 lose precision but stay out of every range. */
  readU64(addr: number): number {
    const r = this.#need(addr, 8);
    const at = addr - r.start;
    return r.view.getUint32(at, true) + r.view.getUint32(at + 4, true) * 0x1_0000_0000;
  }

  writeU8(addr: number, value: number): void {
    const r = this.#need(addr, 1);
    r.bytes[addr - r.start] = value;
  }

  writeU16(addr: number, value: number): void {
    const r = this.#need(addr, 2);
    r.view.setUint16(addr - r.start, value, true);
  }

  writeU32(addr: number, value: number): void {
    const r = this.#need(addr, 4);
    r.view.setUint32(addr - r.start, value, true);
  }

  writeU64(addr: number, value: number): void {
    const r = this.#need(addr, 8);
    const at = addr - r.start;
    r.view.setUint32(at, value % 0x1_0000_0000, true);
    r.view.setUint32(at + 4, Math.floor(value / 0x1_0000_0000), true);
  }

  // Ring indices cross threads: the driver (a vCPU in another worker) and the
  // device publish them with Atomics so that every plain store made before the
  // index store is visible to whoever loads the index (sequentially consistent
  // atomics order the surrounding non-atomic accesses in the JS memory model).
  // Both need 2-byte alignment; the queue validates ring alignment on setup.
  // On a little-endian host (every browser and Node platform) the typed array
  // byte order is the guest's.

  loadU16Acquire(addr: number): number {
    const r = this.#need(addr, 2);
    return Atomics.load(r.u16, (addr - r.start) >>> 1);
  }

  storeU16Release(addr: number, value: number): void {
    const r = this.#need(addr, 2);
    Atomics.store(r.u16, (addr - r.start) >>> 1, value);
  }

  #need(addr: number, len: number): Region {
    const r = this.#find(addr, len);
    if (!r) throw new GuestMemoryError(addr, len);
    return r;
  }
}

/** An access to guest-physical memory outside every region. */
export class GuestMemoryError extends Error {
  override readonly name = 'GuestMemoryError';
  constructor(
    readonly address: number,
    readonly length: number,
  ) {
    super(`guest range 0x${address.toString(16)}+${length} is outside guest memory`);
  }
}
