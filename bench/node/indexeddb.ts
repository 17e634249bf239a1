// The `indexeddb` section of `npm run bench`: an IndexedDB disk through the
// whole device path (vCPU worker → device worker → IndexedDbBackend) beside
// raw IndexedDB doing the same chunk gets and puts, batched the same way
// (bench/harness/idb-bench-worker.ts says exactly what the raw side does), in
// the same run, alternating row by row; and FLUSH latency against one
// 'strict' put of a chunk.
//
// The disk gets a small cache (CACHE_BYTES, an eighth of the disk), so that
// its reads go to IndexedDB as the raw side's all do: a random 4 KiB read
// then hits the cache about one time in eight, and a sequential pass over the
// disk never does (it is LRU). Write rows end with a FLUSH on both sides.
// The device runs QD8. The raw side runs one request at a time, because
// the backend serializes its calls (reads, writes, FLUSH: IndexedDbBackend's
// #serial), so that is the order in which its transactions really start;
// write-back transactions overlap on both sides. Rounds keep each side's
// best.
// Nothing asserts; the table prints each ratio beside its target (through
// the device ≥ 0.8 of raw at 1 MiB).

import type { Page } from 'playwright';
import type { IdbRequest, IdbRunResult } from '../harness/idb-bench-worker.ts';
import { Random } from '../../src/demo/workload.ts';
import { DEFAULT_INDEXEDDB_CHUNK_BYTES } from '../../src/backends/indexeddb.ts';
import { callPage } from './browser.ts';
import { formatTable, num } from './table.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const QUEUE_DEPTH = 8;
/** The backend runs one call at a time: so does the raw side. */
const RAW_QUEUE_DEPTH = 1;
/** The target the issue sets at 1 MiB (device / raw). */
const TARGET_1M = 0.8;

export interface IndexedDbRow {
  workload: string;
  queueDepth: number;
  rawQueueDepth: number;
  deviceMBps: number;
  rawMBps: number;
  deviceIops: number;
  rawIops: number;
  ratio: number;
  /** The printed target, when the row has one. */
  target: number | null;
  ioErrors: number;
}

export interface LatencyPair {
  medianUs: number;
  p99Us: number;
  samples: number;
}

export interface IndexedDbSectionResult {
  diskBytes: number;
  cacheBytes: number;
  chunkBytes: number;
  rows: IndexedDbRow[];
  flush: { device: LatencyPair; raw: LatencyPair };
  seconds: number;
}

const mbps = (r: IdbRunResult): number => r.bytes / 1e6 / r.seconds;

export async function indexedDbSection(page: Page, quick: boolean, log: (line: string) => void): Promise<IndexedDbSectionResult> {
  const started = Date.now();
  const diskBytes = (quick ? 64 : 256) * MiB;
  const cacheBytes = diskBytes / 8;
  const chunkBytes = DEFAULT_INDEXEDDB_CHUNK_BYTES;
  // Two rounds even when quick, the second with raw first: the order
  // matters here (one round, device then raw, had raw 1 MiB reads at 0.37
  // of the device's; alternating, best of each, gave 0.84). Why is not
  // established; the page cache left by the other side is a suspect.
  const rounds = quick ? 2 : 4;
  await page.goto('/bench/harness/idb-bench.html');
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 120_000 });
  await callPage(page, 'openDisk', { size: diskBytes, cacheBytes });
  const random = new Random(5);
  const seq: IdbRequest[] = Array.from({ length: diskBytes / MiB }, (_, i) => [i * MiB, MiB] as const);
  const rand = (count: number): IdbRequest[] => Array.from({ length: count }, () => [random.below(diskBytes / (4 * KiB)) * 4 * KiB, 4 * KiB] as const);
  // Writes first: the sequential pass also fills both sides, so the reads read data.
  const plan: Array<{ workload: string; requests: IdbRequest[]; write: boolean; target: number | null }> = [
    { workload: `1M seqwrite + FLUSH, ${diskBytes / MiB} MiB`, requests: seq, write: true, target: TARGET_1M },
    { workload: `1M seqread, ${diskBytes / MiB} MiB`, requests: seq, write: false, target: TARGET_1M },
    { workload: '4K randread', requests: rand(quick ? 2000 : 8000), write: false, target: null },
    { workload: '4K randwrite + FLUSH', requests: rand(quick ? 2000 : 8000), write: true, target: null },
  ];
  const rows: IndexedDbRow[] = [];
  try {
    for (const p of plan) {
      let dev: IdbRunResult | null = null;
      let raw: IdbRunResult | null = null;
      for (let r = 0; r < rounds; r++) {
        const device = () => callPage<IdbRunResult>(page, 'device', { requests: p.requests, write: p.write, queueDepth: QUEUE_DEPTH }, 600_000);
        const rawSide = () => callPage<IdbRunResult>(page, 'raw', { requests: p.requests, write: p.write, queueDepth: RAW_QUEUE_DEPTH, chunkBytes, cacheBytes }, 600_000);
        let d: IdbRunResult;
        let w: IdbRunResult;
        if (r % 2 === 0) {
          d = await device();
          w = await rawSide();
        } else {
          w = await rawSide();
          d = await device();
        }
        if (!dev || mbps(d) > mbps(dev)) dev = d;
        if (!raw || mbps(w) > mbps(raw)) raw = w;
      }
      const row: IndexedDbRow = {
        workload: p.workload,
        queueDepth: QUEUE_DEPTH,
        rawQueueDepth: RAW_QUEUE_DEPTH,
        deviceMBps: mbps(dev!),
        rawMBps: mbps(raw!),
        deviceIops: dev!.requests / dev!.seconds,
        rawIops: raw!.requests / raw!.seconds,
        ratio: mbps(dev!) / mbps(raw!),
        target: p.target,
        ioErrors: dev!.ioErrors + raw!.ioErrors,
      };
      rows.push(row);
      log(`indexeddb ${p.workload} QD${QUEUE_DEPTH}: device ${row.deviceMBps.toFixed(1)} MB/s, raw ${row.rawMBps.toFixed(1)} MB/s (${row.ratio.toFixed(2)})`);
    }
    const flush = await callPage<IndexedDbSectionResult['flush']>(page, 'flushLatency', { rounds: quick ? 30 : 100, spanBytes: diskBytes, chunkBytes }, 600_000);
    log(`indexeddb FLUSH after a 4 KiB write: device median ${(flush.device.medianUs / 1000).toFixed(1)} ms, raw strict put ${(flush.raw.medianUs / 1000).toFixed(1)} ms`);
    return { diskBytes, cacheBytes, chunkBytes, rows, flush, seconds: (Date.now() - started) / 1000 };
  } finally {
    await callPage(page, 'closeDisk');
  }
}

export function indexedDbTable(r: IndexedDbSectionResult): string {
  const table = formatTable(
    ['IndexedDB workload', 'QD', 'raw QD', 'device MB/s', 'raw MB/s', 'device IOPS', 'raw IOPS', 'device/raw', 'target', 'errors'],
    r.rows.map((row) => [
      row.workload,
      row.queueDepth,
      row.rawQueueDepth,
      num(row.deviceMBps, 1),
      num(row.rawMBps, 1),
      num(row.deviceIops),
      num(row.rawIops),
      num(row.ratio, 2),
      row.target === null ? null : `≥ ${row.target}${row.ratio >= row.target ? '' : ' (missed)'}`,
      row.ioErrors,
    ]),
  );
  const ms = (us: number) => num(us / 1000, 1);
  const flush = formatTable(
    ['FLUSH after a 4 KiB write', 'median ms', 'p99 ms', 'samples'],
    [
      ['device (FLUSH request)', ms(r.flush.device.medianUs), ms(r.flush.device.p99Us), r.flush.device.samples],
      ['raw (one strict put of a chunk)', ms(r.flush.raw.medianUs), ms(r.flush.raw.p99Us), r.flush.raw.samples],
    ],
  );
  return (
    `IndexedDB (disk ${r.diskBytes / MiB} MiB, ${r.chunkBytes / KiB} KiB chunks, cache ${r.cacheBytes / MiB} MiB; ` +
    `raw = the same chunk gets/puts and write-back batching on IndexedDB directly, bench/harness/idb-bench-worker.ts)\n${table}\n\n${flush}`
  );
}
