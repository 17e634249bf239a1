// The `overlay` section of `npm run bench`: reads (and writes) through a
// copy-on-write overlay against its top's raw speed, in the same run, on an
// OPFS base and an OPFS top (e2e/harness/overlay-bench.ts does the work in
// the overlay harness worker). The target printed beside the top-block rows:
// an overlay read of top blocks ≥ 0.8 of the same reads on the raw top.
// Base-block rows compare with the raw top too: the same file system, the
// same sizes, so the ratio is what merging costs on top of a base read.
// Nothing asserts.

import type { Page } from 'playwright';
import type { OverlayBenchRow } from '../../e2e/harness/overlay-bench.ts';
import { formatTable, num } from './table.ts';

const MiB = 1024 * 1024;

export interface OverlaySectionResult {
  diskBytes: number;
  rows: OverlayBenchRow[];
  seconds: number;
}

export async function overlaySection(page: Page, quick: boolean, log: (line: string) => void): Promise<OverlaySectionResult> {
  const started = Date.now();
  const diskBytes = (quick ? 64 : 256) * MiB;
  await page.goto('/e2e/harness/overlay.html');
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 120_000 });
  log(`overlay: ${diskBytes / MiB} MiB OPFS base under an OPFS top`);
  const rows = await page.evaluate((args) => window.harness!.call<OverlayBenchRow[]>('bench', args), {
    diskBytes,
    seconds: quick ? 0.02 : 0.05,
    rounds: quick ? 10 : 30,
  });
  for (const r of rows) {
    log(`overlay: ${r.workload}: ${num(r.overlayMBps)} MB/s against raw top ${num(r.rawMBps)} MB/s (median of ${r.pairs} pairs ${num(r.ratio, 2)}, best/best ${num(r.bestRatio, 2)})`);
  }
  return { diskBytes, rows, seconds: (Date.now() - started) / 1000 };
}

export function overlayTable(result: OverlaySectionResult): string {
  return [
    `Overlay (OPFS base + OPFS top, ${result.diskBytes / MiB} MiB; raw = the same top file read or written directly; MB/s best of rounds, ` +
      `overlay/raw the median over batch pairs of the two sides taking turns, same run)`,
    formatTable(
      ['workload', 'overlay MB/s', 'raw top MB/s', 'overlay/raw', 'pairs', 'best/best', 'target'],
      result.rows.map((r) => [
        r.workload,
        num(r.overlayMBps),
        num(r.rawMBps),
        num(r.ratio, 2),
        r.pairs,
        num(r.bestRatio, 2),
        r.target === null ? '—' : `≥ ${num(r.target, 1)}${r.ratio >= r.target ? '' : ' (missed)'}`,
      ]),
    ),
  ].join('\n');
}
