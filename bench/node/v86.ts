// The `v86` section of `npm run bench`: Debian's i386 kernel under v86 in
// headless Chromium, root ext4 on this project's virtio-blk disk against
// v86's own IDE disk holding the same image (both from memory), in the same
// run, alternating. One boot per row and round measures both:
// - boot to a shell: page call → the first line of the disk's /vbw/init.sh
//   (kernel, /init, module loads, the disk's probe and mount, switch_root),
//   and the kernel's own uptime at that line;
// - guest `dd if=/dev/DISK of=/dev/null bs=1M count=32 iflag=direct`,
//   timed between the guest's markers as they reach the page.
// The virtio disk runs with v86 in a dedicated worker (where an OPFS disk
// must run) and on the page, which is the "where does the device run"
// measurement docs/v86.md reports. Each round keeps every row's best. Nothing
// asserts. After these rows, the HTTP rows (v86-http.ts): the same image
// over HTTP from one local server, cold cache, v86's async HTTP disk against
// this project's HTTP backends.

import type { Page } from 'playwright';
import type { BootConfig } from '../../e2e/harness/v86-guest.ts';
import type { Where } from '../../e2e/harness/v86-page.ts';
import { buildRootImage } from '../../e2e/v86/image.ts';
import { provisionV86 } from '../../e2e/v86/provision.ts';
import { formatTable, num } from './table.ts';
import { v86HttpRows, v86HttpTable, type V86HttpResult } from './v86-http.ts';

const DD_MIB = 32;

export interface V86Row {
  disk: 'virtio' | 'ide';
  where: Where;
  /** Best of the rounds: ms from the page call to the shell's first line. */
  bootToShellMs: number;
  /** The guest kernel's uptime at that line (seconds). */
  guestUptimeS: number;
  /** ms from the page call to /init. */
  initMs: number;
  ddMBps: number;
  /** dd's own last line (busybox prints the record counts, not a rate). */
  ddReport: string;
  rounds: number;
}

export interface V86SectionResult {
  rows: V86Row[];
  loadAverage: number[];
  seconds: number;
  /** The cold-cache HTTP boots (v86-http.ts). */
  http?: V86HttpResult;
}

type BootResult = Awaited<ReturnType<NonNullable<Window['v86Harness']>['boot']>>;

const CASES: ReadonlyArray<{ disk: 'virtio' | 'ide'; where: Where }> = [
  { disk: 'ide', where: 'worker' },
  { disk: 'virtio', where: 'worker' },
  { disk: 'virtio', where: 'page' },
];

function markMs(r: BootResult, prefix: string): number | undefined {
  return r.marks.find((m) => m.line.startsWith(prefix))?.ms;
}

export async function v86Section(page: Page, quick: boolean, log: (line: string) => void, loadAverage: () => number[]): Promise<V86SectionResult> {
  const started = Date.now();
  const image = buildRootImage('bench', provisionV86().busybox, 64);
  await page.goto('/e2e/harness/v86.html');
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 120_000 });
  const rounds = quick ? 1 : 2;
  const best = new Map<string, V86Row>();
  for (let round = 0; round < rounds; round++) {
    for (const c of round % 2 === 0 ? CASES : [...CASES].reverse()) {
      const config: BootConfig = { disk: c.disk, backend: { kind: 'memory' }, imageUrl: image.url, test: 'dd', timeoutMs: 300_000 };
      const r = await page.evaluate(([cfg, w]) => window.v86Harness!.boot(cfg, w), [config, c.where] as const);
      const shell = markMs(r, 'VBW-SHELL');
      const start = markMs(r, 'VBW-DD-START');
      const end = r.marks.find((m) => m.line.startsWith('VBW-DD-END'));
      if (!r.ended || shell === undefined || start === undefined || !end) {
        log(`v86 ${c.disk}/${c.where}: the guest did not finish\n${r.serial.slice(-4000)}`);
        continue;
      }
      const row: V86Row = {
        disk: c.disk,
        where: c.where,
        bootToShellMs: shell,
        guestUptimeS: Number(/uptime=([\d.]+)/.exec(r.marks.find((m) => m.line.startsWith('VBW-SHELL'))!.line)?.[1] ?? NaN),
        initMs: markMs(r, 'VBW-INIT') ?? NaN,
        ddMBps: (DD_MIB * 1.048576) / ((end.ms - start) / 1000),
        ddReport: end.line.slice('VBW-DD-END '.length),
        rounds: round + 1,
      };
      log(`v86 ${c.disk}/${c.where}: shell at ${(shell / 1000).toFixed(1)} s (guest uptime ${row.guestUptimeS} s), dd ${row.ddMBps.toFixed(1)} MB/s (${row.ddReport})`);
      const key = `${c.disk}/${c.where}`;
      const prev = best.get(key);
      best.set(key, {
        ...row,
        bootToShellMs: Math.min(row.bootToShellMs, prev?.bootToShellMs ?? Infinity),
        guestUptimeS: Math.min(row.guestUptimeS, prev?.guestUptimeS ?? Infinity),
        initMs: Math.min(row.initMs, prev?.initMs ?? Infinity),
        ddMBps: Math.max(row.ddMBps, prev?.ddMBps ?? 0),
      });
    }
  }
  const memoryLoad = loadAverage();
  const http = await v86HttpRows(new URL(page.url()).origin, image, quick, log, loadAverage);
  return { rows: [...best.values()], loadAverage: memoryLoad, seconds: (Date.now() - started) / 1000, http };
}

export function v86Table(r: V86SectionResult): string {
  const ide = r.rows.find((row) => row.disk === 'ide');
  const table = formatTable(
    ['v86 root disk', 'v86 runs on', '/init s', 'shell s', 'guest uptime s', 'boot speed vs IDE', `dd ${DD_MIB} MiB O_DIRECT MB/s`, 'dd vs IDE'],
    r.rows.map((row) => [
      row.disk === 'ide' ? "v86's IDE" : 'virtio-blk-web',
      row.where,
      num(row.initMs / 1000, 1),
      num(row.bootToShellMs / 1000, 1),
      num(row.guestUptimeS, 1),
      ide ? num(ide.bootToShellMs / row.bootToShellMs, 2) : null,
      num(row.ddMBps, 1),
      ide ? num(row.ddMBps / ide.ddMBps, 2) : null,
    ]),
  );
  return `v86: Debian i386 boots with root ext4 on the disk (64 MiB image from memory; best of the rounds; load average ${r.loadAverage.map((x) => x.toFixed(1)).join(' ')}; e2e/harness/v86-guest.ts)\n${table}${r.http ? `\n\n${v86HttpTable(r.http)}` : ''}`;
}
