// The copy-on-write overlay's block map: for every block of the disk, where
// its bytes live — still in the read-only base, in the writable top, or
// nowhere because the guest zeroed or discarded it.
//
// Two bits per block, four blocks per byte, lowest bits first: the in-memory
// array is byte for byte the persisted form, so persisting the map is writing
// its dirty pages back, with no encoding step. At 64 KiB blocks an 8 GiB disk
// needs 32 KiB of map and a 1 TiB disk 4 MiB; one 4 KiB page covers 1 GiB.
//
// Every block's entry sits inside one byte, so any prefix of a page write
// that reaches the disk leaves each entry wholly old or wholly new (a torn
// page mixes entries, never bits of one). The overlay's ordering (data before
// map, overlay.ts) makes every such mix safe.

import { StorageError, StorageErrorCode } from './backend.ts';

/** Where a block's bytes are. */
export const BlockState = {
  /** Not written through the overlay: the base's bytes. */
  Base: 0,
  /** Written: the top holds the whole block. */
  Top: 1,
  /** Zeroed or discarded: reads as zeroes, never the base's bytes again. */
  Zero: 2,
} as const;
export type BlockState = (typeof BlockState)[keyof typeof BlockState];

/** The unit the map is persisted in. */
export const MAP_PAGE_BYTES = 4096;

/** Bytes of persisted map for `blocks` blocks: whole pages. */
export function mapBytesFor(blocks: number): number {
  return Math.max(1, Math.ceil(Math.ceil(blocks / 4) / MAP_PAGE_BYTES)) * MAP_PAGE_BYTES;
}

export class BlockMap {
  readonly blocks: number;
  /** The persisted form itself (see the header). */
  readonly bytes: Uint8Array;
  /** Pages changed since they were last handed to `takeDirtyPages`. */
  readonly #dirtyPages = new Set<number>();

  /** A map of `blocks` blocks, all Base, or read from `bytes` (checked: 3 is no state). */
  constructor(blocks: number, bytes?: Uint8Array) {
    this.blocks = blocks;
    this.bytes = new Uint8Array(mapBytesFor(blocks));
    if (bytes) {
      this.bytes.set(bytes.subarray(0, this.bytes.length));
      for (let i = 0; i < blocks; i++) {
        if (this.get(i) === 3) throw new StorageError(StorageErrorCode.Corrupt, `overlay map: block ${i} has no valid state`);
      }
    }
  }

  get(block: number): BlockState | 3 {
    return ((this.bytes[block >>> 2]! >>> ((block & 3) << 1)) & 3) as BlockState | 3;
  }

  /** Set blocks [first, first + count) to `state`. */
  set(first: number, count: number, state: BlockState): void {
    const end = first + count;
    for (let i = first; i < end; i++) {
      const byte = i >>> 2;
      const shift = (i & 3) << 1;
      const old = this.bytes[byte]!;
      const next = (old & ~(3 << shift)) | (state << shift);
      if (next !== old) {
        this.bytes[byte] = next;
        this.#dirtyPages.add(Math.floor(byte / MAP_PAGE_BYTES));
      }
    }
  }

  /** The first block after `block`, up to `end`, whose state differs from `block`'s. */
  runEnd(block: number, end: number): number {
    const state = this.get(block);
    let i = block + 1;
    while (i < end && this.get(i) === state) i++;
    return i;
  }

  /** How many blocks are in each state. */
  counts(): { base: number; top: number; zero: number } {
    const n = [0, 0, 0, 0];
    for (let i = 0; i < this.blocks; i++) n[this.get(i)]!++;
    return { base: n[0]!, top: n[1]!, zero: n[2]! };
  }

  get dirty(): boolean {
    return this.#dirtyPages.size > 0;
  }

  /** The dirty pages as runs [firstPage, pageCount], in order; they count as clean from now on. */
  takeDirtyPages(): Array<[number, number]> {
    const pages = [...this.#dirtyPages].sort((a, b) => a - b);
    this.#dirtyPages.clear();
    const runs: Array<[number, number]> = [];
    for (const p of pages) {
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === p) last[1]++;
      else runs.push([p, 1]);
    }
    return runs;
  }

  /** Mark pages dirty again (their write failed). */
  markDirty(runs: Array<[number, number]>): void {
    for (const [first, count] of runs) for (let p = first; p < first + count; p++) this.#dirtyPages.add(p);
  }
}
