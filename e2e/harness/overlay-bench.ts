// Measurements for the `overlay` bench section (bench/node/overlay.ts), run in
// the overlay harness worker: an overlay over an OPFS base with an OPFS top,
// against the same top read and written raw (the same OpfsBackend, at the
// slots the overlay uses), alternating side by side in the same run, each
// side's best of `rounds` kept. The base's first half stays in the base; the
// second half is written through the overlay first, so its blocks are top
// blocks. Reads are synchronous on OPFS, so each row is a tight loop, run
// in short slices that alternate between the two sides.

import { OpfsBackend, deleteOpfsDisk } from '../../src/backends/opfs.ts';
import { overlayLayout } from '../../src/backends/overlay-header.ts';
import { DEFAULT_OVERLAY_BLOCK_BYTES, OverlayBackend, overlayTopBytes } from '../../src/backends/overlay.ts';
import { pattern } from '../../test/contract/backend-contract.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const DIRECTORY = 'overlay-bench';

export interface OverlayBenchRow {
  workload: string;
  overlayMBps: number;
  rawMBps: number;
  /** overlay / raw top. */
  ratio: number;
  /** The printed target (top-block reads: 0.8 of raw top), when the row has one. */
  target: number | null;
}

type Io = (offset: number, bytes: Uint8Array) => unknown;

/** MB/s of `io` over `offsets` of `length` bytes each, repeated for about `seconds`. */
function rate(io: Io, offsets: number[], length: number, seconds: number): number {
  const buffer = new Uint8Array(length).fill(1);
  let bytes = 0;
  const started = performance.now();
  do {
    for (const offset of offsets) io(offset, buffer);
    bytes += offsets.length * length;
  } while (performance.now() - started < seconds * 1000);
  return bytes / 1e6 / ((performance.now() - started) / 1000);
}

export async function overlayBench({ diskBytes, seconds, rounds }: { diskBytes: number; seconds: number; rounds: number }): Promise<OverlayBenchRow[]> {
  for (const name of ['base', 'top']) await deleteOpfsDisk(name, DIRECTORY).catch(() => undefined);
  const base = await OpfsBackend.open({ name: 'base', directory: DIRECTORY, size: diskBytes });
  for (let at = 0; at < diskBytes; at += MiB) base.write(at, pattern(MiB, at / MiB + 1));
  base.flush();
  const top = await OpfsBackend.open({ name: 'top', directory: DIRECTORY, size: overlayTopBytes(diskBytes) });
  const overlay = await OverlayBackend.open({ base, top, baseIdentity: 'bench-base' });
  const half = diskBytes / 2;
  for (let at = half; at < diskBytes; at += MiB) overlay.write(at, pattern(MiB, at / MiB + 7));
  overlay.flush();
  const slot = overlayLayout(diskBytes, DEFAULT_OVERLAY_BLOCK_BYTES).dataOffset;
  const overlayRead: Io = (o, b) => overlay.read(o, b);
  const overlayWrite: Io = (o, b) => overlay.write(o, b);
  const rawTopRead: Io = (o, b) => top.read(slot + o, b);
  const rawTopWrite: Io = (o, b) => top.write(slot + o, b);
  let seed = 12345;
  const random = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const random4k = (from: number) => Array.from({ length: 4096 }, () => from + random(half / (4 * KiB)) * 4 * KiB);
  const sequential1m = (from: number) => Array.from({ length: half / MiB }, (_, i) => from + i * MiB);
  const plan: Array<{ workload: string; overlay: Io; raw: Io; offsets: number[]; length: number; target: number | null }> = [
    { workload: '4K randread, top blocks', overlay: overlayRead, raw: rawTopRead, offsets: random4k(half), length: 4 * KiB, target: 0.8 },
    { workload: '1M seqread, top blocks', overlay: overlayRead, raw: rawTopRead, offsets: sequential1m(half), length: MiB, target: 0.8 },
    { workload: '4K randread, base blocks', overlay: overlayRead, raw: rawTopRead, offsets: random4k(0), length: 4 * KiB, target: null },
    { workload: '1M seqread, base blocks', overlay: overlayRead, raw: rawTopRead, offsets: sequential1m(0), length: MiB, target: null },
    { workload: '4K randwrite, top blocks', overlay: overlayWrite, raw: rawTopWrite, offsets: random4k(half), length: 4 * KiB, target: null },
  ];
  const rows: OverlayBenchRow[] = [];
  for (const p of plan) {
    // Short slices, alternating, best of each side: on a loaded 2-core
    // machine a long run of one side measures the machine, not the code.
    const slices = Math.max(1, Math.ceil((p.offsets.length * p.length) / (16 * MiB)));
    const best = { overlay: 0, raw: 0 };
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < slices; i++) {
        const part = p.offsets.filter((_, k) => k % slices === i);
        // Each side goes first every other slice, so neither gains from its place.
        const sides = (r + i) % 2 === 0 ? (['overlay', 'raw'] as const) : (['raw', 'overlay'] as const);
        for (const side of sides) best[side] = Math.max(best[side], rate(p[side], part, p.length, seconds));
      }
    }
    rows.push({ workload: p.workload, overlayMBps: best.overlay, rawMBps: best.raw, ratio: best.overlay / best.raw, target: p.target });
  }
  // Copy-up: the first 4 KiB write into each base block (one pass: a block copies up once).
  const blocks = Array.from({ length: half / DEFAULT_OVERLAY_BLOCK_BYTES }, (_, i) => i * DEFAULT_OVERLAY_BLOCK_BYTES);
  const buffer = new Uint8Array(4 * KiB).fill(2);
  let started = performance.now();
  for (const offset of blocks) overlay.write(offset, buffer);
  const copyUp = (blocks.length * 4 * KiB) / 1e6 / ((performance.now() - started) / 1000);
  started = performance.now();
  for (const offset of blocks) top.write(slot + offset, buffer);
  const raw = (blocks.length * 4 * KiB) / 1e6 / ((performance.now() - started) / 1000);
  rows.push({ workload: '4K write into base blocks (copy-up), one pass', overlayMBps: copyUp, rawMBps: raw, ratio: copyUp / raw, target: null });
  await overlay.close();
  return rows;
}
