// The overlay against a model, under crashes, in Node.
//
// A random workload of writes, write-zeroes, discards, FLUSHes, reads, clean
// reopens and crashes runs against an overlay over a memory base, with a top
// that can "crash": it keeps what the last top FLUSH made durable and the
// writes since, and a crash keeps the durable image plus a random subset of
// those writes, sector by sector and in any order (what a disk's volatile
// cache may leave). A crash may also strike in the middle of an overlay
// call, after a random number of top calls — inside a FLUSH between its data
// flush, its map writes and its second flush, or inside a copy-up.
//
// After each crash the overlay is opened on what survived, and every sector
// must hold what it held at the last completed FLUSH or what one of the
// operations since then made it (never base data under a written or zeroed
// block, never a block pointing at data that was not written). Reads between
// crashes must equal the model exactly.

import { describe, expect, test } from 'vitest';
import type { BlockBackend } from '../src/backends/backend.ts';
import { MemoryBackend } from '../src/backends/memory.ts';
import { OverlayBackend } from '../src/backends/overlay.ts';
import { overlayLayout } from '../src/backends/overlay-header.ts';
import { xorshift32 } from '../e2e/harness/crash-model.ts';
import { pattern } from './contract/backend-contract.ts';

const SECTOR = 512;

class Crashed extends Error {}

/** A memory top with a volatile cache: see the header. */
class CrashableTop implements BlockBackend {
  readonly readOnly = false;
  readonly supportsDiscard = true;
  readonly supportsWriteZeroes = true;
  readonly #mem: MemoryBackend;
  #durable: Uint8Array;
  #pending: Array<{ offset: number; bytes: Uint8Array }> = [];
  /** Calls left before the crash strikes (then every call throws). */
  callsLeft = Infinity;

  constructor(image: Uint8Array) {
    this.#mem = new MemoryBackend(image.length, { data: image });
    this.#durable = image.slice();
  }

  get size(): number {
    return this.#mem.size;
  }

  read(offset: number, dst: Uint8Array): void {
    this.#step();
    this.#mem.read(offset, dst);
  }

  write(offset: number, src: Uint8Array): void {
    this.#step();
    this.#mem.write(offset, src);
    this.#pending.push({ offset, bytes: src.slice() });
  }

  writeZeroes(offset: number, length: number): void {
    this.#step();
    this.#mem.writeZeroes(offset, length);
    this.#pending.push({ offset, bytes: new Uint8Array(length) });
  }

  discard(offset: number, length: number): void {
    this.writeZeroes(offset, length);
  }

  flush(): void {
    this.#step();
    this.#durable = this.#mem.bytes.slice();
    this.#pending = [];
  }

  resize(newSize: number): void {
    this.#step();
    this.#mem.resize(newSize);
    const durable = new Uint8Array(newSize);
    durable.set(this.#durable.subarray(0, newSize));
    this.#durable = durable;
  }

  close(): void {}

  /** What a crash now leaves: the durable image and, sector by sector, a random subset of the writes since. */
  crashImage(random: () => number): Uint8Array {
    const image = this.#durable.slice();
    for (const { offset, bytes } of this.#pending) {
      for (let at = offset; at < offset + bytes.length; ) {
        const stop = Math.min(offset + bytes.length, (Math.floor(at / SECTOR) + 1) * SECTOR);
        if (random() < 0.5) image.set(bytes.subarray(at - offset, stop - offset), at);
        at = stop;
      }
    }
    return image;
  }

  #step(): void {
    if (this.callsLeft <= 0) throw new Crashed('the top crashed');
    this.callsLeft--;
  }
}

/** Uniform in [0, 1), from the crash trials' xorshift32. */
function uniform(seed: number): () => number {
  const next = xorshift32(seed >>> 0 || 1);
  return () => next() / 2 ** 32;
}

/** What the disk must read as: now, at the last FLUSH, and every sector content since. */
class Model {
  now: Uint8Array;
  flushed: Uint8Array;
  /** Sector index → contents it had after each operation since the last FLUSH. */
  since = new Map<number, Uint8Array[]>();

  constructor(initial: Uint8Array) {
    this.now = initial.slice();
    this.flushed = initial.slice();
  }

  apply(offset: number, bytes: Uint8Array | null, length: number): void {
    if (bytes) this.now.set(bytes, offset);
    else this.now.fill(0, offset, offset + length);
    for (let s = offset / SECTOR; s < (offset + length) / SECTOR; s++) {
      const list = this.since.get(s) ?? [];
      list.push(this.now.slice(s * SECTOR, (s + 1) * SECTOR));
      this.since.set(s, list);
    }
  }

  flushedNow(): void {
    this.flushed = this.now.slice();
    this.since.clear();
  }

  /** The first sector of `actual` that is neither its flushed content nor a later one, or -1. */
  badSector(actual: Uint8Array): number {
    const same = (a: Uint8Array, b: Uint8Array) => firstDifference(a, b) < 0;
    for (let s = 0; s < actual.length / SECTOR; s++) {
      const got = actual.subarray(s * SECTOR, (s + 1) * SECTOR);
      if (same(got, this.flushed.subarray(s * SECTOR, (s + 1) * SECTOR))) continue;
      if ((this.since.get(s) ?? []).some((c) => same(got, c))) continue;
      return s;
    }
    return -1;
  }

  /** After a crash: what survived is the new truth. */
  restart(actual: Uint8Array): void {
    this.now = actual.slice();
    this.flushedNow();
  }
}

/** Index of the first byte where `a` and `b` differ, or -1 (toEqual on megabytes is slow). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

async function readAll(b: BlockBackend): Promise<Uint8Array> {
  const out = new Uint8Array(b.size);
  await b.read(0, out);
  return out;
}

interface Tally {
  crashes: number;
  crashesInsideCalls: number;
  flushes: number;
  reopens: number;
  checks: number;
}

async function runWorkload(seed: number, blockSize: number, tally: Tally): Promise<void> {
  const random = uniform(seed);
  const int = (n: number) => Math.floor(random() * n);
  const diskBytes = 64 * blockSize + 3 * SECTOR; // a short last block
  const baseData = pattern(diskBytes, seed);
  const base = new MemoryBackend(diskBytes, { data: baseData, readOnly: true });
  let top = new CrashableTop(new Uint8Array(0));
  const open = () => OverlayBackend.open({ base, top, blockSize, baseIdentity: `seed-${seed}` });
  let overlay = await open();
  const model = new Model(baseData);
  const sectors = diskBytes / SECTOR;
  const range = (maxSectors: number) => {
    const first = int(sectors);
    const count = 1 + int(Math.min(maxSectors, sectors - first));
    return [first * SECTOR, count * SECTOR] as const;
  };
  const crash = async () => {
    top = new CrashableTop(top.crashImage(random));
    overlay = await open();
    const actual = await readAll(overlay);
    const bad = model.badSector(actual);
    if (bad >= 0) {
      const s = bad * SECTOR;
      throw new Error(
        `seed ${seed}: after a crash sector ${bad} (block ${Math.floor(s / blockSize)}) holds neither its flushed content nor a later one` +
          ` (base's? ${actual.subarray(s, s + SECTOR).every((x, i) => x === baseData[s + i])})`,
      );
    }
    model.restart(actual);
    tally.crashes++;
  };
  for (let step = 0; step < 250; step++) {
    const roll = random();
    if (roll < 0.35) {
      const [offset, length] = range((3 * blockSize) / SECTOR);
      const bytes = pattern(length, seed * 1000 + step);
      model.apply(offset, bytes, length);
      await overlay.write(offset, bytes);
    } else if (roll < 0.5) {
      const [offset, length] = range((4 * blockSize) / SECTOR);
      model.apply(offset, null, length);
      await (random() < 0.5 ? overlay.writeZeroes(offset, length, random() < 0.5) : overlay.discard(offset, length));
    } else if (roll < 0.65) {
      await overlay.flush();
      model.flushedNow();
      tally.flushes++;
    } else if (roll < 0.78) {
      const [offset, length] = range((5 * blockSize) / SECTOR);
      const got = new Uint8Array(length);
      await overlay.read(offset, got);
      expect(firstDifference(got, model.now.subarray(offset, offset + length))).toBe(-1);
      tally.checks++;
    } else if (roll < 0.83) {
      await overlay.close();
      overlay = await open();
      model.flushedNow(); // close flushes
      expect(firstDifference(await readAll(overlay), model.now)).toBe(-1);
      tally.reopens++;
    } else if (roll < 0.9) {
      await crash();
    } else {
      // Crash inside the next write, zeroing or FLUSH, after 0-5 top calls.
      top.callsLeft = int(6);
      const [offset, length] = range((2 * blockSize) / SECTOR);
      const kind = int(3);
      const bytes = pattern(length, seed * 1000 + step);
      if (kind === 0) model.apply(offset, bytes, length);
      if (kind === 1) model.apply(offset, null, length);
      try {
        if (kind === 0) await overlay.write(offset, bytes);
        else if (kind === 1) await overlay.writeZeroes(offset, length, false);
        else await overlay.flush();
        if (kind === 2) model.flushedNow();
      } catch (err) {
        if (!(err instanceof Crashed)) throw err;
        tally.crashesInsideCalls++;
      }
      await crash();
    }
  }
}

describe('overlay against a model, with crashes', () => {
  for (const blockSize of [4096, 16384]) {
    test(`random workloads, ${blockSize / 1024} KiB blocks: reads equal the model; after every crash each sector is flushed or later data`, async () => {
      const tally: Tally = { crashes: 0, crashesInsideCalls: 0, flushes: 0, reopens: 0, checks: 0 };
      for (let seed = 1; seed <= 12; seed++) await runWorkload(seed * 7919 + blockSize, blockSize, tally);
      // The workload reached what it claims to test.
      expect(tally.crashes).toBeGreaterThan(150);
      expect(tally.crashesInsideCalls).toBeGreaterThan(40);
      expect(tally.flushes).toBeGreaterThan(300);
      expect(tally.reopens).toBeGreaterThan(50);
      expect(tally.checks).toBeGreaterThan(300);
    }, 300_000); // 16 KiB blocks took 79 s at load 50 against the default 60 s
  }

  test('the crash check is not vacuous: a flushed sector that lost its data is caught', async () => {
    const base = new MemoryBackend(64 * 1024, { data: pattern(64 * 1024, 3), readOnly: true });
    const top = new CrashableTop(new Uint8Array(0));
    const overlay = await OverlayBackend.open({ base, top, blockSize: 4096, baseIdentity: 'x' });
    const model = new Model(base.bytes);
    const bytes = pattern(8192, 4);
    model.apply(4096, bytes, 8192);
    await overlay.write(4096, bytes);
    await overlay.flush();
    model.flushedNow();
    const image = top.crashImage(() => 0);
    // Lose the first written block's data, as a map written before its data could.
    const { dataOffset } = overlayLayout(64 * 1024, 4096);
    image.fill(0, dataOffset + 4096, dataOffset + 8192);
    const again = await OverlayBackend.open({ base, top: new CrashableTop(image), blockSize: 4096, baseIdentity: 'x' });
    expect(model.badSector(await readAll(again))).toBe(8);
  });
});
