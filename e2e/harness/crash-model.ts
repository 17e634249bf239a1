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

export const SECTOR = 512;

export type Op =
  | { kind: 'write'; sector: number; count: number }
  | { kind: 'zeroes'; sector: number; count: number }
  | { kind: 'flush' };

export interface WorkloadShape {
  seed: number;
  ops: number;
  /** Disk size in sectors. */
  sectors: number;
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
export function workloadOps({ seed, ops, sectors }: WorkloadShape): Op[] {
  const next = generator(seed * 7919 + 17);
  const out: Op[] = [];
  for (let i = 0; i < ops; i++) {
    const r = next() % 100;
    if (r < 14) {
      out.push({ kind: 'flush' });
      continue;
    }
    // Mostly small writes, some up to 256 sectors (128 KiB, across chunk edges).
    const count = r < 80 ? 1 + (next() % 16) : 1 + (next() % 256);
    const sector = next() % (sectors - count + 1);
    out.push({ kind: r < 95 ? 'write' : 'zeroes', sector, count });
  }
  return out;
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

/** Check `disk` (its first `sectors` sectors) against the workload, `lastFlush` the op index of the last known completed FLUSH (-1: none). */
export function checkDisk(shape: WorkloadShape, lastFlush: number, read: (sector: number) => Uint8Array): CheckResult {
  const ops = workloadOps(shape);
  // For each sector: the op that last stored it at or before lastFlush (-1: never, zeroes),
  // and the set of ops after lastFlush that store it (writes as op numbers, zeroes as -2 - op).
  const atFlush = new Int32Array(shape.sectors).fill(-1);
  const later = new Map<number, Set<number>>();
  ops.forEach((op, i) => {
    if (op.kind === 'flush') return;
    for (let s = op.sector; s < op.sector + op.count; s++) {
      const version = op.kind === 'write' ? i : -1;
      if (i <= lastFlush) atFlush[s] = version;
      else {
        let set = later.get(s);
        if (!set) later.set(s, (set = new Set()));
        set.add(version);
      }
    }
  });
  const result: CheckResult = { sectors: shape.sectors, lost: 0, torn: 0, examples: [] };
  const note = (what: string) => {
    if (result.examples.length < 5) result.examples.push(what);
  };
  for (let s = 0; s < shape.sectors; s++) {
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
