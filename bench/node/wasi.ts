// The `wasi` section of `npm run bench`: a WASI program's fd_pread/fd_pwrite
// through the adapter (src/wasi) against the backend called directly, in the
// same run, alternating path by path (e2e/harness/wasi-bench-worker.ts says
// what each path does). OPFS: the adapter calls the backend in the program's
// worker. IndexedDB: the adapter goes through the synchronous facade to a
// backend worker; `direct` awaits an IndexedDbBackend in the program's worker.
// Both IndexedDB disks get the same small cache (an eighth of the disk, as
// the indexeddb section), so reads mostly reach IndexedDB on both sides.
//
// Requests run one at a time (a WASI program blocks on each). Write rows end
// with fd_sync / flush. Rounds alternate the paths' order and keep each
// path's best. Nothing asserts; the
// table prints each ratio beside the target (adapter ≥ 0.8 of direct at 1 MiB).
// WASI_BENCH_BACKENDS=indexeddb (or opfs) runs one backend's rows only;
// WASI_BENCH_ROWS=1M only the rows whose workload starts so (the 1 MiB write
// row still fills the disk before the read row).

import type { Page } from 'playwright';
import type { WasiBenchResult } from '../../e2e/harness/wasi-bench-worker.ts';
import { Random } from '../../src/demo/workload.ts';
import { callPage } from './browser.ts';
import { formatTable, num } from './table.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const TARGET_1M = 0.8;
const PATHS = ['direct', 'shim', 'iovec'] as const;

export interface WasiRow {
  backend: string;
  workload: string;
  /** MB/s by path. */
  mbps: Record<(typeof PATHS)[number], number>;
  /** Requests per second by path. */
  iops: Record<(typeof PATHS)[number], number>;
  errors: number;
  target: number | null;
}

export interface WasiSectionResult {
  diskBytes: number;
  rows: WasiRow[];
  seconds: number;
}

export async function wasiSection(page: Page, quick: boolean, log: (line: string) => void): Promise<WasiSectionResult> {
  const started = Date.now();
  const diskBytes = (quick ? 64 : 128) * MiB;
  const rounds = quick ? 2 : 3;
  await page.goto('/e2e/harness/wasi-bench.html');
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 120_000 });
  const random = new Random(7);
  const seq: Array<[number, number]> = Array.from({ length: diskBytes / MiB }, (_, i) => [i * MiB, MiB]);
  const rand = (count: number): Array<[number, number]> => Array.from({ length: count }, () => [random.below(diskBytes / (4 * KiB)) * 4 * KiB, 4 * KiB]);
  const rows: WasiRow[] = [];
  const wanted = process.env.WASI_BENCH_BACKENDS?.split(',').map((b) => b.trim());
  for (const backend of ['opfs', 'indexeddb'] as const) {
    if (wanted && !wanted.includes(backend)) continue;
    await callPage(page, 'open', { backend, size: diskBytes, cacheBytes: diskBytes / 8 }, 300_000);
    // Writes first: the sequential pass fills the disks, so the reads read data.
    const plan = [
      { workload: '1M seq fd_pwrite + fd_sync', requests: seq, write: true, target: TARGET_1M },
      { workload: '1M seq fd_pread', requests: seq, write: false, target: TARGET_1M },
      { workload: '4K random fd_pread', requests: rand(backend === 'opfs' ? 20_000 : 3000), write: false, target: null },
      { workload: '4K random fd_pwrite + fd_sync', requests: rand(backend === 'opfs' ? 10_000 : 3000), write: true, target: null },
    ];
    const rowPrefix = process.env.WASI_BENCH_ROWS;
    try {
      for (const p of plan.filter((x) => !rowPrefix || x.workload.startsWith(rowPrefix))) {
        const best = {} as Record<(typeof PATHS)[number], WasiBenchResult>;
        let errors = 0;
        for (let r = 0; r < rounds; r++) {
          // Alternate the order, so no path always runs after the shim's allocations.
          for (const path of r % 2 === 0 ? PATHS : [...PATHS].reverse()) {
            const result = await callPage<WasiBenchResult>(page, 'run', { path, requests: p.requests, write: p.write }, 600_000);
            errors += result.errors;
            if (!best[path] || result.bytes / result.seconds > best[path].bytes / best[path].seconds) best[path] = result;
          }
        }
        const mbps = Object.fromEntries(PATHS.map((x) => [x, best[x].bytes / 1e6 / best[x].seconds])) as WasiRow['mbps'];
        const iops = Object.fromEntries(PATHS.map((x) => [x, best[x].requests / best[x].seconds])) as WasiRow['iops'];
        rows.push({ backend, workload: p.workload, mbps, iops, errors, target: p.target });
        log(`wasi ${backend} ${p.workload}: direct ${mbps.direct.toFixed(0)} MB/s, shim ${(mbps.shim / mbps.direct).toFixed(2)}, iovec ${(mbps.iovec / mbps.direct).toFixed(2)}`);
      }
    } finally {
      await callPage(page, 'close', undefined, 300_000);
    }
  }
  return { diskBytes, rows, seconds: (Date.now() - started) / 1000 };
}

export function wasiTable(r: WasiSectionResult): string {
  const ratio = (row: WasiRow, path: 'shim' | 'iovec'): number => row.mbps[path] / row.mbps.direct;
  const table = formatTable(
    ['WASI backend', 'workload', 'direct IOPS', 'shim Fd IOPS', 'iovec IOPS', 'direct MB/s', 'shim/direct', 'iovec/direct', 'target', 'errors'],
    r.rows.map((row) => [
      row.backend === 'opfs' ? 'OPFS' : 'IndexedDB (facade)',
      row.workload,
      num(row.iops.direct),
      num(row.iops.shim),
      num(row.iops.iovec),
      num(row.mbps.direct, 1),
      num(ratio(row, 'shim'), 2),
      num(ratio(row, 'iovec'), 2),
      row.target === null ? null : `≥ ${row.target}${Math.max(ratio(row, 'shim'), ratio(row, 'iovec')) >= row.target ? '' : ' (missed)'}`,
      row.errors,
    ]),
  );
  return `WASI adapter (disk ${r.diskBytes / MiB} MiB, one request at a time; shim = stock browser_wasi_shim imports over OpenDiskFile, iovec = with directDiskIo; e2e/harness/wasi-bench-worker.ts)\n${table}`;
}
