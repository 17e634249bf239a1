// A copy-on-write overlay: a read-only base (an HTTP image, an OPFS or
// IndexedDB disk, memory) under a writable top that holds every block the
// guest changed, and a map (overlay-map.ts) of which blocks those are. The
// base is never written, except by an explicit `commit`.
//
// Reads merge runs: consecutive blocks in the same state are one base read,
// one top read (block i lives at a fixed place in the top, so a run of top
// blocks is one contiguous range, overlay-header.ts) or one fill of zeroes.
// Writes go to the top; a write that covers a block only in part first
// copies the rest of that block up from the base (or zeroes, for a zeroed
// block), merged with the new bytes into one write. DISCARD and WRITE_ZEROES
// of whole blocks only mark them Zero — a state of its own, so a zeroed
// block never reads the base again; partial blocks are zeroed in the top.
//
// Block size: 64 KiB by default. That is the HTTP Range backend's block, so a
// copy-up costs one cached base block; a 4 KiB write into an untouched block
// moves 64 KiB twice (read base, write top), and the map stays small (32 KiB
// for 8 GiB, written back page by page at FLUSH). A top keeps the block size
// it was made with.
//
// Crash safety — data before map, both durable at FLUSH. The map lives in the
// top itself, so it needs no second file or store. Between FLUSHes only the
// in-memory map changes; FLUSH then (1) flushes the top, making every block
// written so far durable, (2) writes the map's changed pages, (3) flushes the
// top again. A map entry on disk therefore only ever names data made durable
// in step 1 of the FLUSH that wrote it, or earlier. A crash before (3)
// completes leaves each entry old or new (overlay-map.ts: an entry never
// straddles a byte), and both are safe:
// - an old "top" entry whose slot was rewritten since holds that newer,
//   unflushed write (a write may survive a crash before its FLUSH, as on any
//   disk); slots are dropped (reset) only once the map saying so is durable;
// - an old "base" entry reads the base, which never changes under an
//   overlay (its identity is checked at open);
// - an old "zero" entry reads zeroes whatever the slot holds.
// For IndexedDB tops the same argument holds: its FLUSH settles only after
// every transaction carrying a write completed ('strict'), and the map pages
// are handed to it only after that (indexeddb.ts: chunks are atomic values).
//
// Identity: the top's header records the base's size and a content identity
// (the base's `identity` — an HTTP image's ETag or Last-Modified, a chunked
// image's manifest hash — or one the caller gives). Opening a top over a base
// that differs in either is a 'base-mismatch' StorageError naming both, never
// mixed data (Infinite Mac #182, WebVM #124).
//
// Concurrency: reads run at once; writes, zeroes, FLUSH, reset and commit run
// one at a time (overlay-steps.ts: synchronously while the backends answer
// synchronously), since a copy-up reads, merges and writes a whole block and
// two of them racing on one block would lose a write.

import { StorageError, StorageErrorCode, isPromise, type BlockBackend, type MaybePromise } from './backend.ts';
import { HEADER_BYTES, MAP_OFFSET, decodeHeader, describeIdentity, encodeHeader, overlayLayout, type OverlayLayout } from './overlay-header.ts';
import { BlockMap, BlockState, MAP_PAGE_BYTES } from './overlay-map.ts';
import { Exclusive, all, sequence, type Step } from './overlay-steps.ts';

export interface OverlayBackendOptions {
  /** The disk under the overlay; read, never written (except by `commit`). */
  base: BlockBackend;
  /** Where changed blocks and the map live: a fresh disk (any content reads as "not an overlay yet" only when its first sector is zero), or a top made before over this base. */
  top: BlockBackend;
  /** Block size of a new top: a power of two from 4 KiB to 16 MiB. Default 64 KiB. An existing top keeps its own. */
  blockSize?: number;
  /**
   * The base's content identity, when the base names none (`base.identity`)
   * or to name it differently: anything that changes when its content does
   * (a version, a hash). The top is tied to it.
   */
  baseIdentity?: string;
  /** Open read-only (default: the top's own readOnly). */
  readOnly?: boolean;
  /** For messages. Default 'overlay'. */
  name?: string;
}

export const DEFAULT_OVERLAY_BLOCK_BYTES = 64 * 1024;
/** Bytes per piece when commit copies the top into the base. */
const COMMIT_PIECE_BYTES = 1 << 20;

/** The size a new top must have for a base of `baseSize` bytes (overlay-header.ts has the layout). */
export function overlayTopBytes(baseSize: number, blockSize = DEFAULT_OVERLAY_BLOCK_BYTES): number {
  return overlayLayout(baseSize, blockSize).topBytes;
}

/** How many blocks are where, for a status display. */
export interface OverlayState {
  blockSize: number;
  blocks: number;
  /** Blocks still read from the base. */
  baseBlocks: number;
  /** Blocks the top holds. */
  topBlocks: number;
  /** Blocks zeroed or discarded. */
  zeroBlocks: number;
  /** Whether the map has changes a FLUSH has not yet made durable. */
  mapDirty: boolean;
}

export class OverlayBackend implements BlockBackend {
  readonly name: string;
  readonly readOnly: boolean;
  readonly supportsDiscard = true;
  readonly supportsWriteZeroes = true;
  readonly blockSize: number;
  /** The identity this overlay's top is tied to. */
  readonly baseIdentity: string;
  readonly #base: BlockBackend;
  readonly #top: BlockBackend;
  readonly #layout: OverlayLayout;
  readonly #map: BlockMap;
  readonly #exclusive = new Exclusive();
  /** One block, for copy-ups; only touched inside exclusive operations. */
  readonly #scratch: Uint8Array;
  #closed = false;

  private constructor(options: OverlayBackendOptions, identity: string, layout: OverlayLayout, map: BlockMap, readOnly: boolean) {
    this.name = options.name ?? 'overlay';
    this.#base = options.base;
    this.#top = options.top;
    this.baseIdentity = identity;
    this.#layout = layout;
    this.blockSize = layout.blockSize;
    this.#map = map;
    this.readOnly = readOnly;
    this.#scratch = new Uint8Array(readOnly ? 0 : layout.blockSize);
  }

  /**
   * Open an overlay of `base` and `top`. A top whose first sector is zero
   * is made into a new overlay of this base; any other must be one made over
   * this same base ('base-mismatch' otherwise, 'corrupt' for a sector that is
   * no overlay header). On success the overlay owns both backends (close
   * closes them); on failure the caller still does.
   */
  static async open(options: OverlayBackendOptions): Promise<OverlayBackend> {
    const { base, top } = options;
    const what = `overlay "${options.name ?? 'overlay'}"`;
    const readOnly = options.readOnly ?? top.readOnly;
    if (!readOnly && top.readOnly) throw new StorageError(StorageErrorCode.ReadOnly, `${what}: its top is read-only; open the overlay read-only`);
    const identity = options.baseIdentity ?? describeIdentity(base.identity);
    if (identity === null || identity === '') {
      throw new StorageError(
        StorageErrorCode.Unsupported,
        `${what}: the base names no content identity (BlockBackend.identity); give baseIdentity, something that changes when the base's content does`,
      );
    }
    const headerBytes = new Uint8Array(HEADER_BYTES);
    if (top.size >= HEADER_BYTES) await top.read(0, headerBytes);
    const header = decodeHeader(headerBytes, `${what}: its top`);
    let layout: OverlayLayout;
    if (header === null) {
      if (readOnly) throw new StorageError(StorageErrorCode.NotFound, `${what}: the top holds no overlay yet (open it writable once to make one)`);
      layout = overlayLayout(base.size, options.blockSize ?? DEFAULT_OVERLAY_BLOCK_BYTES);
      await makeTop(top, layout, identity, what);
    } else {
      if (header.baseSize !== base.size || header.identity !== identity) {
        throw new StorageError(
          StorageErrorCode.BaseMismatch,
          `${what}: its top was made over a base of ${header.baseSize} bytes with identity "${header.identity}", ` +
            `but this base has ${base.size} bytes and identity "${identity}"; reset the overlay or open it over its own base`,
        );
      }
      layout = overlayLayout(header.baseSize, header.blockSize);
      if (header.dataOffset !== layout.dataOffset || top.size < layout.topBytes) {
        throw new StorageError(StorageErrorCode.Corrupt, `${what}: its top's layout does not fit its header (${top.size} bytes, data at ${header.dataOffset})`);
      }
    }
    const mapBytes = new Uint8Array(layout.mapBytes);
    await top.read(MAP_OFFSET, mapBytes);
    return new OverlayBackend(options, identity, layout, new BlockMap(layout.blocks, mapBytes), readOnly);
  }

  get size(): number {
    return this.#layout.baseSize;
  }

  get state(): OverlayState {
    const c = this.#map.counts();
    return { blockSize: this.blockSize, blocks: this.#map.blocks, baseBlocks: c.base, topBlocks: c.top, zeroBlocks: c.zero, mapDirty: this.#map.dirty };
  }

  read(offset: number, dst: Uint8Array): MaybePromise {
    this.#check(offset, dst.length);
    const end = offset + dst.length;
    const bs = this.blockSize;
    const lastBlock = Math.ceil(end / bs);
    let pending: Promise<void>[] | null = null;
    try {
      for (let at = offset, block = Math.floor(offset / bs); at < end; ) {
        const runEnd = this.#map.runEnd(block, lastBlock);
        const stop = Math.min(end, runEnd * bs);
        // The usual single-run read passes dst itself: no subarray.
        const view = at === offset && stop === end ? dst : dst.subarray(at - offset, stop - offset);
        const state = this.#map.get(block);
        let r: MaybePromise = undefined;
        if (state === BlockState.Top) r = this.#top.read(this.#layout.dataOffset + at, view);
        else if (state === BlockState.Base) r = this.#base.read(at, view);
        else view.fill(0);
        if (isPromise(r)) (pending ??= []).push(r);
        at = stop;
        block = runEnd;
      }
    } catch (err) {
      // Reads already started settle unobserved: the first error is the answer.
      for (const p of pending ?? []) p.catch(() => undefined);
      throw err;
    }
    return pending ? all(pending) : undefined;
  }

  /**
   * The parts of a range that may hold data (BlockBackend's optional hook,
   * for sparse exports): top blocks, and whatever the base reports for base
   * blocks (all of them when it cannot tell); zeroed blocks never.
   */
  async allocatedRanges(offset: number, length: number): Promise<Array<[number, number]>> {
    this.#check(offset, length);
    const end = offset + length;
    const lastBlock = Math.ceil(end / this.blockSize);
    const ranges: Array<[number, number]> = [];
    const add = (start: number, stop: number) => {
      const previous = ranges[ranges.length - 1];
      if (previous && previous[1] === start) previous[1] = stop;
      else if (stop > start) ranges.push([start, stop]);
    };
    for (let at = offset, block = Math.floor(offset / this.blockSize); at < end; ) {
      const runEnd = this.#map.runEnd(block, lastBlock);
      const stop = Math.min(end, runEnd * this.blockSize);
      const state = this.#map.get(block);
      if (state === BlockState.Top) add(at, stop);
      else if (state === BlockState.Base) {
        const inBase = this.#base.allocatedRanges ? await this.#base.allocatedRanges(at, stop - at) : [[at, stop] as [number, number]];
        for (const [s, e] of inBase) add(s, e);
      }
      at = stop;
      block = runEnd;
    }
    return ranges;
  }

  write(offset: number, src: Uint8Array): MaybePromise {
    this.#checkWritable();
    this.#check(offset, src.length);
    if (src.length === 0) return;
    return this.#exclusive.run(() => this.#write(offset, src));
  }

  discard(offset: number, length: number): MaybePromise {
    // Discarded blocks read as zeroes: marking them costs no more than leaving them.
    return this.writeZeroes(offset, length, true);
  }

  writeZeroes(offset: number, length: number, _mayUnmap: boolean): MaybePromise {
    this.#checkWritable();
    this.#check(offset, length);
    if (length === 0) return;
    return this.#exclusive.run(() => this.#zero(offset, length));
  }

  /** Make every completed write durable: top data first, then the map (see the header). */
  flush(): MaybePromise {
    this.#open();
    if (this.readOnly) return;
    return this.#exclusive.run(() => this.#flush());
  }

  /**
   * Drop the top: every block reads the base again. The emptied map is made
   * durable before any block's data is freed, so a crash in between leaves
   * the old overlay or the empty one.
   */
  reset(): Promise<void> {
    this.#checkWritable();
    return Promise.resolve(this.#exclusive.run(() => this.#reset()));
  }

  /**
   * Write every block the top holds (and every zeroed block) into the base,
   * flush the base, then reset. Needs a writable base. A crash in the middle
   * loses nothing: until the reset the top still holds every changed block
   * and masks the half-updated base, and committing again finishes the job.
   * Afterwards the base's content has changed: an identity that names its
   * content (rather than its name) must change with it.
   */
  commit(): Promise<void> {
    this.#checkWritable();
    if (this.#base.readOnly) {
      return Promise.reject(new StorageError(StorageErrorCode.ReadOnly, `overlay "${this.name}": its base is read-only; commit needs a base opened writable`));
    }
    return Promise.resolve(this.#exclusive.run(() => this.#commit()));
  }

  /**
   * The merged image as a stream of `pieceBytes`-sized chunks (each a fresh
   * buffer the reader may keep), read through the overlay as the guest would.
   */
  exportStream(pieceBytes = 1 << 20): ReadableStream<Uint8Array> {
    this.#open();
    let at = 0;
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        if (at >= this.size) return controller.close();
        const piece = new Uint8Array(Math.min(pieceBytes, this.size - at));
        await this.read(at, piece);
        at += piece.length;
        controller.enqueue(piece);
      },
    });
  }

  /** Flush (when writable), then close the top and the base. */
  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      if (!this.readOnly) await this.#exclusive.run(() => this.#flush());
      await this.#exclusive.idle();
    } finally {
      this.#closed = true;
      try {
        await this.#top.close();
      } finally {
        await this.#base.close();
      }
    }
  }

  #write(offset: number, src: Uint8Array): MaybePromise {
    const bs = this.blockSize;
    const end = offset + src.length;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    const dataOffset = this.#layout.dataOffset;
    // Overwriting blocks the top already holds: one write, nothing to copy up.
    if (this.#map.get(first) === BlockState.Top && this.#map.runEnd(first, last + 1) === last + 1) {
      return this.#top.write(dataOffset + offset, src);
    }
    const steps: Step[] = [];
    let wholeFirst = first;
    let wholeEnd = last + 1;
    if (offset !== this.#blockStart(first) || (first === last && end !== this.#blockEnd(first))) {
      const stop = Math.min(end, this.#blockEnd(first));
      steps.push(() => this.#patch(first, offset, src.subarray(0, stop - offset)));
      wholeFirst = first + 1;
    }
    if (last >= wholeFirst && end !== this.#blockEnd(last)) {
      const start = this.#blockStart(last);
      steps.push(() => this.#patch(last, start, src.subarray(start - offset)));
      wholeEnd = last;
    }
    if (wholeEnd > wholeFirst) {
      const start = this.#blockStart(wholeFirst);
      const stop = Math.min(end, this.#blockEnd(wholeEnd - 1));
      steps.push(
        () => this.#top.write(dataOffset + start, start === offset && stop === end ? src : src.subarray(start - offset, stop - offset)),
        () => this.#map.set(wholeFirst, wholeEnd - wholeFirst, BlockState.Top),
      );
    }
    return sequence(steps);
  }

  #zero(offset: number, length: number): MaybePromise {
    const bs = this.blockSize;
    const end = offset + length;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    const steps: Step[] = [];
    let wholeFirst = first;
    let wholeEnd = last + 1;
    if (offset !== this.#blockStart(first) || (first === last && end !== this.#blockEnd(first))) {
      steps.push(() => this.#patch(first, offset, null, Math.min(end, this.#blockEnd(first)) - offset));
      wholeFirst = first + 1;
    }
    if (last >= wholeFirst && end !== this.#blockEnd(last)) {
      const start = this.#blockStart(last);
      steps.push(() => this.#patch(last, start, null, end - start));
      wholeEnd = last;
    }
    if (wholeEnd > wholeFirst) this.#map.set(wholeFirst, wholeEnd - wholeFirst, BlockState.Zero);
    return sequence(steps);
  }

  /**
   * Change part of block `block` — `src`, or `zeroLength` zeroes when `src`
   * is null — starting at disk offset `at`, leaving the block in the top.
   * A block still in the base (or zeroed) is copied up merged with the
   * change: one base read and one top write of the whole block.
   */
  #patch(block: number, at: number, src: Uint8Array | null, zeroLength = 0): MaybePromise {
    const state = this.#map.get(block);
    const slot = this.#layout.dataOffset;
    const length = src ? src.length : zeroLength;
    if (state === BlockState.Top) return src ? this.#top.write(slot + at, src) : this.#top.writeZeroes(slot + at, length, false);
    if (state === BlockState.Zero && !src) return;
    const start = this.#blockStart(block);
    const scratch = this.#scratch.subarray(0, this.#blockEnd(block) - start);
    const merge = (): MaybePromise => {
      if (src) scratch.set(src, at - start);
      else scratch.fill(0, at - start, at - start + length);
      return this.#top.write(slot + start, scratch);
    };
    const steps: Step[] = [];
    if (state === BlockState.Zero) scratch.fill(0);
    else steps.push(() => this.#base.read(start, scratch));
    steps.push(merge, () => this.#map.set(block, 1, BlockState.Top));
    return sequence(steps);
  }

  #flush(): MaybePromise {
    if (!this.#map.dirty) return this.#top.flush();
    const runs = this.#map.takeDirtyPages();
    const bytes = this.#map.bytes;
    const steps: Step[] = [
      // (1) Every block the new map entries name is durable before any entry is written.
      () => this.#top.flush(),
      // (2) The changed map pages.
      () => all(runs.map(([page, count]) => this.#top.write(MAP_OFFSET + page * MAP_PAGE_BYTES, bytes.subarray(page * MAP_PAGE_BYTES, (page + count) * MAP_PAGE_BYTES)))),
      // (3) And those.
      () => this.#top.flush(),
    ];
    const failed = (err: unknown): never => {
      // Not known durable: write these pages again at the next FLUSH.
      this.#map.markDirty(runs);
      throw err;
    };
    try {
      const r = sequence(steps);
      return isPromise(r) ? r.catch(failed) : r;
    } catch (err) {
      return failed(err);
    }
  }

  async #reset(): Promise<void> {
    this.#map.set(0, this.#map.blocks, BlockState.Base);
    await this.#flush();
    // Only now is no map entry left that names a slot: free them.
    const { dataOffset } = this.#layout;
    if (this.#top.supportsDiscard && this.#top.size > dataOffset) await this.#top.discard(dataOffset, this.#top.size - dataOffset);
  }

  async #commit(): Promise<void> {
    const blocks = this.#map.blocks;
    const piece = new Uint8Array(Math.min(COMMIT_PIECE_BYTES, Math.max(this.blockSize, this.size)));
    for (let block = 0; block < blocks; ) {
      const runEnd = this.#map.runEnd(block, blocks);
      const state = this.#map.get(block);
      const start = this.#blockStart(block);
      const stop = this.#blockEnd(runEnd - 1);
      if (state === BlockState.Zero) {
        await this.#base.writeZeroes(start, stop - start, true);
      } else if (state === BlockState.Top) {
        for (let at = start; at < stop; at += piece.length) {
          const view = piece.subarray(0, Math.min(piece.length, stop - at));
          await this.#top.read(this.#layout.dataOffset + at, view);
          await this.#base.write(at, view);
        }
      }
      block = runEnd;
    }
    await this.#base.flush();
    await this.#reset();
  }

  #blockStart(block: number): number {
    return block * this.blockSize;
  }

  /** Where block `block` ends on the disk: the last block may be short. */
  #blockEnd(block: number): number {
    return Math.min(this.size, (block + 1) * this.blockSize);
  }

  #open(): void {
    if (this.#closed) throw new StorageError(StorageErrorCode.Closed, `overlay "${this.name}" is closed`);
  }

  #check(offset: number, length: number): void {
    this.#open();
    if (!(Number.isSafeInteger(offset) && offset >= 0 && length >= 0 && offset + length <= this.size)) {
      throw new StorageError(StorageErrorCode.OutOfRange, `range ${offset}+${length} outside disk of ${this.size} bytes`);
    }
  }

  #checkWritable(): void {
    this.#open();
    if (this.readOnly) throw new StorageError(StorageErrorCode.ReadOnly, `overlay "${this.name}" is open read-only`);
  }
}

/**
 * Make `top` a new, empty overlay of a base: size it, zero the map, make that
 * durable, and only then write the header (one sector) and flush again — so a
 * crash leaves no header (made again next time) or a whole, empty overlay.
 */
async function makeTop(top: BlockBackend, layout: OverlayLayout, identity: string, what: string): Promise<void> {
  const header = encodeHeader({ blockSize: layout.blockSize, baseSize: layout.baseSize, dataOffset: layout.dataOffset, identity });
  if (top.size < layout.topBytes) {
    if (!top.resize) {
      throw new StorageError(StorageErrorCode.OutOfRange, `${what}: its top has ${top.size} bytes and cannot grow to the ${layout.topBytes} it needs (overlayTopBytes)`);
    }
    await top.resize(layout.topBytes);
  }
  await top.writeZeroes(MAP_OFFSET, layout.mapBytes, false);
  await top.flush();
  await top.write(0, header);
  await top.flush();
}
