// The crash trials' model: a random write/FLUSH workload that a seed
// determines completely, sector contents that name the write that made them,
// and the check of a disk after a crash against what was flushed.
//
// Every sector a write stores is 512 bytes: the write's op number + 1, the
// sector number and the seed (three little-endian u32s), then bytes from a
// generator seeded by all three. So a sector read back either is all zeroes,
// or names exactly one write and must equal that write's bytes in full; any
// other content is a torn sector.
//
// After a crash, with L the last FLUSH the test runner knew had completed
// (the runner may have missed a later one, which only widens what is
// allowed): a sector must hold what it held at L, or what any op after L
// stored there. Anything older is a lost flushed write.
//
// Two variants add ops (WorkloadShape.variant):
// - 'resize': the disk is grown and shrunk (Disk.resize) between writes. A
//   shrink stores zeroes in the sectors it cuts off (a later grow must show
//   zeroes there, never the old data). The size is promised like a write:
//   after the crash the disk has the size it had at L or a size a resize
//   after L set (the one in progress included); any other size loses the
//   whole trial. Every sector inside the surviving size is checked as above.
// - 'close': Disk.close (which flushes, then releases the handle and the
//   lock) and a reopen that must not wait for any lock. A completed close
//   counts as a FLUSH: it is reported as one.
//
// An overlay over a known base (WorkloadShape.base): a sector never written
// holds the base's bytes (baseSectorBytes, named by a header op of
// 0xffffffff), not zeroes, and must keep them; write-zeroes stores zeroes.

export const SECTOR = 512;

/** The disks the trials crash: OPFS, IndexedDB, and an overlay over a memory base with its top in either. */
export type CrashBackend = 'opfs' | 'indexeddb' | 'overlay-opfs' | 'overlay-indexeddb';
export const CRASH_BACKENDS: readonly CrashBackend[] = ['opfs', 'indexeddb', 'overlay-opfs', 'overlay-indexeddb'];

export type Op =
  | { kind: 'write'; sector: number; count: number }
  | { kind: 'zeroes'; sector: number; count: number }
  | { kind: 'flush' }
  /** Change the size to `sectors`; `from` is the size before. */
  | { kind: 'resize'; sectors: number; from: number }
  /** Close the disk (flushing it) and open it again. */
  | { kind: 'close' };

export type WorkloadVariant = 'plain' | 'resize' | 'close';

export interface WorkloadShape {
  seed: number;
  ops: number;
  /** Disk size in sectors at the start. */
  sectors: number;
  /** Default 'plain': writes, write-zeroes and FLUSHes only. */
  variant?: WorkloadVariant;
  /** The disk is an overlay whose base holds baseSectorBytes: unwritten sectors read those, not zeroes. */
  base?: boolean;
}

/** The op number base sectors carry (their header's first u32 is this + 1 = 0xffffffff). */
const BASE_OP = 0xfffffffe;
/** The version of a sector that holds the base's bytes (-1 is zeroes, others are op numbers). */
const BASE_VERSION = -3;
const BASE_SEED = 0xba5e;

/** What sector `sector` of a crash trial's overlay base holds (the same in every trial). */
export function baseSectorBytes(sector: number): Uint8Array {
  return sectorBytes(BASE_SEED, BASE_OP, sector);
}

/** A whole base of `bytes` bytes (whole sectors). */
export function baseBytes(bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let s = 0; s < bytes / SECTOR; s++) out.set(baseSectorBytes(s), s * SECTOR);
  return out;
}

/** The most sectors a workload's disk can have (a 'resize' workload grows up to twice its start). */
export function maxSectors(shape: WorkloadShape): number {
  return shape.variant === 'resize' ? 2 * shape.sectors : shape.sectors;
}

function generator(seed: number): () => number {
  return xorshift32(seed >>> 0 || 0x9e3779b9);
}

/** Marsaglia's xorshift32 from a non-zero state: the one generator the crash trials use. */
export function xorshift32(state: number): () => number {
  let x = state;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** The ops of a workload, in order. */
export function workloadOps({ seed, ops, sectors, variant = 'plain' }: WorkloadShape): Op[] {
  // The 'plain' sequence is the one earlier runs used: other variants draw extra numbers only in their own branches.
  const next = generator(seed * 7919 + 17);
  const out: Op[] = [];
  let size = sectors;
  for (let i = 0; i < ops; i++) {
    const r = next() % 100;
    if (r < 14) {
      out.push({ kind: 'flush' });
      continue;
    }
    if (variant === 'close' && r < 26) {
      out.push({ kind: 'close' });
      continue;
    }
    if (variant === 'resize' && r < 24) {
      // A multiple of 8 sectors from 1/8 of the start to twice it: often not
      // on an IndexedDB chunk edge (512 sectors), so partial chunks are cut.
      const to = 8 * (sectors / 64 + (next() % ((2 * sectors - sectors / 8) / 8 + 1)));
      out.push({ kind: 'resize', sectors: to, from: size });
      size = to;
      continue;
    }
    // Mostly small writes, some up to 256 sectors (128 KiB, across chunk edges).
    const count = Math.min(size, r < 80 ? 1 + (next() % 16) : 1 + (next() % 256));
    const sector = next() % (size - count + 1);
    out.push({ kind: r < 95 ? 'write' : 'zeroes', sector, count });
  }
  return out;
}

/** The sectors a resize op cuts off (stored as zeroes in the model), or none. */
function cutOff(op: Op): { sector: number; count: number } | null {
  if (op.kind === 'resize') return op.sectors < op.from ? { sector: op.sectors, count: op.from - op.sectors } : null;
  return op.kind === 'write' || op.kind === 'zeroes' ? op : null;
}

/** The sizes (in sectors) a disk may have after a crash: its size at op `lastFlush`, or any a later resize set. */
export function allowedSizes(shape: WorkloadShape, lastFlush: number): Set<number> {
  let atFlush = shape.sectors;
  const allowed = new Set<number>();
  workloadOps(shape).forEach((op, i) => {
    if (op.kind !== 'resize') return;
    if (i <= lastFlush) atFlush = op.sectors;
    else allowed.add(op.sectors);
  });
  allowed.add(atFlush);
  return allowed;
}

/** The bytes write `op` stores in sector `sector`. */
export function sectorBytes(seed: number, op: number, sector: number): Uint8Array {
  const out = new Uint8Array(SECTOR);
  const view = new DataView(out.buffer);
  view.setUint32(0, op + 1, true);
  view.setUint32(4, sector, true);
  view.setUint32(8, seed, true);
  const next = generator((seed ^ Math.imul(op + 1, 0x85ebca6b) ^ Math.imul(sector + 1, 0xc2b2ae35)) >>> 0);
  for (let i = 12; i < SECTOR; i += 4) view.setUint32(i, next(), true);
  return out;
}

/** The bytes of a whole write. */
export function writeBytes(seed: number, op: number, sector: number, count: number): Uint8Array {
  const out = new Uint8Array(count * SECTOR);
  for (let i = 0; i < count; i++) out.set(sectorBytes(seed, op, sector + i), i * SECTOR);
  return out;
}

/** What a disk read back after a crash was found to be. */
export interface CheckResult {
  sectors: number;
  /** Sectors older than the last known completed FLUSH. */
  lost: number;
  /** Sectors that match no write whole (or name a write that never touched them). */
  torn: number;
  /** Up to a few descriptions, for a failure message. */
  examples: string[];
}

/**
 * Check a disk read back after a crash against the workload, `lastFlush` the
 * op index of the last known completed FLUSH (-1: none) and `size` the
 * disk's size in sectors now (default: the workload's start size). A size
 * the model does not allow counts every sector as lost.
 */
export function checkDisk(shape: WorkloadShape, lastFlush: number, read: (sector: number) => Uint8Array, size = shape.sectors): CheckResult {
  if (!allowedSizes(shape, lastFlush).has(size)) {
    const allowed = [...allowedSizes(shape, lastFlush)].sort((a, b) => a - b);
    return { sectors: size, lost: Math.max(size, 1), torn: 0, examples: [`size ${size} sectors; allowed: ${allowed.join(', ')}`] };
  }
  const ops = workloadOps(shape);
  // For each sector: the op that last stored it at or before lastFlush (-1: never, or zeroes),
  // and the set of ops after lastFlush that store it (writes as their op numbers, zeroes as -1).
  const atFlush = new Int32Array(maxSectors(shape)).fill(shape.base ? BASE_VERSION : -1);
  const later = new Map<number, Set<number>>();
  ops.forEach((op, i) => {
    const range = cutOff(op);
    if (!range) return;
    for (let s = range.sector; s < range.sector + range.count; s++) {
      const version = op.kind === 'write' ? i : -1;
      if (i <= lastFlush) atFlush[s] = version;
      else {
        let set = later.get(s);
        if (!set) later.set(s, (set = new Set()));
        set.add(version);
      }
    }
  });
  const result: CheckResult = { sectors: size, lost: 0, torn: 0, examples: [] };
  const note = (what: string) => {
    if (result.examples.length < 5) result.examples.push(what);
  };
  for (let s = 0; s < size; s++) {
    const bytes = read(s);
    const allowed = (v: number) => v === atFlush[s] || (later.get(s)?.has(v) ?? false);
    if (bytes.every((b) => b === 0)) {
      if (!allowed(-1)) {
        result.lost++;
        note(`sector ${s}: zeroes, flushed op ${atFlush[s]}`);
      }
      continue;
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, SECTOR);
    const op = view.getUint32(0, true) - 1;
    if (op === BASE_OP) {
      const whole = shape.base === true && baseSectorBytes(s).every((b, i) => b === bytes[i]);
      if (!whole) {
        result.torn++;
        note(`sector ${s}: base-like bytes that are not the base's`);
      } else if (!allowed(BASE_VERSION)) {
        result.lost++;
        note(`sector ${s}: the base's bytes, flushed op ${atFlush[s]}`);
      }
      continue;
    }
    const stored = ops[op];
    const wrote = stored !== undefined && stored.kind === 'write' && s >= stored.sector && s < stored.sector + stored.count;
    const whole = wrote && sectorBytes(shape.seed, op, s).every((b, i) => b === bytes[i]);
    if (!whole) {
      result.torn++;
      note(`sector ${s}: matches no write (header op ${op})`);
    } else if (!allowed(op)) {
      result.lost++;
      note(`sector ${s}: op ${op}, flushed op ${atFlush[s]}`);
    }
  }
  return result;
}

/** Size in bytes of creation-trial disk `index`: 1 to 64 MiB, from the seed. */
export function createdDiskBytes(seed: number, index: number): number {
  const next = generator(seed * 31 + index * 977 + 5);
  return (1 + (next() % 64)) * 1024 * 1024;
}
