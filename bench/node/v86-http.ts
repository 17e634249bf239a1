// The HTTP rows of the `v86` bench section: Debian i386 boots in v86 to a
// shell with its root ext4 fetched over HTTP from one local server, from a
// cold cache, on three disks over the same image:
// - v86's IDE disk with its asynchronous HTTP image (`hda: {url, async: true,
//   size}`, ranges fetched on demand), the baseline;
// - this project's virtio-blk disk on the Range backend (`http-range`, the
//   same image file);
// - the same on the chunked backend (`http-chunked`), the image packed by
//   `node bin/virtio-blk-web.mjs pack IMAGE OUTDIR` (256 KiB chunks).
// Each boot gets a fresh browser profile (a new persistent context in a new
// temporary directory: empty HTTP cache, no OPFS), v86 on the page
// (bench/harness/v86-http-page.ts). The server (v86-http-server.ts) counts
// the requests and body bytes each boot made until the shell's first line.
// Issue 14 aims at this disk booting at least twice as fast as v86's HTTP
// disk; the table prints the ratio beside that aim. Nothing asserts.
//
// Trade-off: a fresh profile per boot costs a Chromium start (seconds) per
// row, outside the timed span (the clock starts at the page call), and is the
// only honest cold cache: v86's XHRs go through the HTTP cache, which a
// reused profile would have warm.

import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright';
import { chromiumArgs, chromiumExecutable } from '../../e2e/chromium.ts';
import type { HttpBootConfig, HttpBootResult, HttpDisk } from '../harness/v86-http-page.ts';
import { startCountingServer, type ServedCounts } from './v86-http-server.ts';
import { formatTable, num } from './table.ts';

export interface V86HttpRow extends ServedCounts {
  disk: HttpDisk;
  /** ms from the page call to /init and to the shell's first line (best of the rounds). */
  initMs: number;
  bootToShellMs: number;
  guestUptimeS: number;
  /** The project backend's own fetch count and bytes (virtio rows). */
  backendFetches: number | null;
  backendBytes: number | null;
  rounds: number;
}

export interface V86HttpResult {
  imageBytes: number;
  rows: V86HttpRow[];
  loadAverage: number[];
  seconds: number;
}

const DISKS: readonly HttpDisk[] = ['ide-http', 'http-range', 'http-chunked'];
const BOOT_TIMEOUT_MS = 300_000;
/** Issue 14: boot at least this many times as fast as v86's own HTTP disk. */
export const HTTP_BOOT_AIM = 2;

/** One boot in a fresh profile: the page's result and what the server counted. */
async function coldBoot(baseUrl: string, config: HttpBootConfig, countsAfter: () => ServedCounts, reset: () => void): Promise<{ r: HttpBootResult; served: ServedCounts }> {
  const profile = await mkdtemp(join(tmpdir(), 'virtio-blk-web-v86http-'));
  const context = await chromium.launchPersistentContext(profile, { headless: true, executablePath: chromiumExecutable(), args: chromiumArgs(), baseURL: baseUrl });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (err) => process.stderr.write(`[v86-http page error] ${err.stack ?? err.message}\n`));
    await page.goto('/bench/harness/v86-http.html');
    await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 120_000 });
    reset();
    const r = await page.evaluate((c) => window.v86HttpBench!.boot(c), config);
    return { r, served: countsAfter() };
  } finally {
    await context.close().catch(() => undefined);
    await rm(profile, { recursive: true, force: true });
  }
}

/** Pack the image, serve both forms, boot each disk `rounds` times (alternating order). */
export async function v86HttpRows(
  baseUrl: string,
  image: { path: string; sizeBytes: number },
  quick: boolean,
  log: (line: string) => void,
  loadAverage: () => number[],
): Promise<V86HttpResult> {
  const started = Date.now();
  const dir = await mkdtemp(join(tmpdir(), 'virtio-blk-web-v86http-srv-'));
  const server = await startCountingServer(dir);
  try {
    await symlink(resolve(image.path), join(dir, 'disk.img'));
    const pack = spawnSync(process.execPath, [resolve('bin/virtio-blk-web.mjs'), 'pack', image.path, join(dir, 'chunked'), '--quiet'], { encoding: 'utf8' });
    if (pack.status !== 0) throw new Error(`virtio-blk-web pack failed (${pack.status}): ${pack.stderr}`);
    const urls: Record<HttpDisk, string> = {
      'ide-http': `${server.origin}/disk.img`,
      'http-range': `${server.origin}/disk.img`,
      'http-chunked': `${server.origin}/chunked/manifest.json`,
    };
    const rounds = quick ? 1 : 2;
    const best = new Map<HttpDisk, V86HttpRow>();
    for (let round = 0; round < rounds; round++) {
      for (const disk of round % 2 === 0 ? DISKS : [...DISKS].reverse()) {
        const config: HttpBootConfig = { disk, url: urls[disk], size: image.sizeBytes, timeoutMs: BOOT_TIMEOUT_MS };
        const { r, served } = await coldBoot(baseUrl, config, server.counts, server.reset);
        if (r.shellMs === null) {
          log(`v86 http ${disk}: no shell within ${BOOT_TIMEOUT_MS / 1000} s\n${r.serialTail ?? ''}`);
          continue;
        }
        log(
          `v86 http ${disk}: shell at ${(r.shellMs / 1000).toFixed(1)} s (guest uptime ${r.guestUptimeS} s), ` +
            `${served.requests} requests + ${served.preflights} preflights, ${(served.bytes / 2 ** 20).toFixed(1)} MiB`,
        );
        const prev = best.get(disk);
        if (prev && prev.bootToShellMs <= r.shellMs) continue;
        best.set(disk, {
          disk,
          ...served,
          initMs: r.initMs ?? NaN,
          bootToShellMs: r.shellMs,
          guestUptimeS: r.guestUptimeS ?? NaN,
          backendFetches: r.backendStats?.fetches ?? null,
          backendBytes: r.backendStats?.bytesFetched ?? null,
          rounds: round + 1,
        });
      }
    }
    return { imageBytes: image.sizeBytes, rows: DISKS.flatMap((d) => best.get(d) ?? []), loadAverage: loadAverage(), seconds: (Date.now() - started) / 1000 };
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const LABELS: Record<HttpDisk, string> = {
  'ide-http': "v86's IDE, async HTTP (Range)",
  'http-range': 'virtio-blk-web, http-range',
  'http-chunked': 'virtio-blk-web, http-chunked',
};

export function v86HttpTable(r: V86HttpResult): string {
  const ide = r.rows.find((row) => row.disk === 'ide-http');
  const table = formatTable(
    ['v86 root disk (cold cache)', '/init s', 'shell s', 'shell − /init s', 'guest uptime s', 'requests', 'preflights', 'MiB fetched', 'boot speed vs IDE HTTP', 'aim'],
    r.rows.map((row) => [
      LABELS[row.disk],
      num(row.initMs / 1000, 1),
      num(row.bootToShellMs / 1000, 1),
      num((row.bootToShellMs - row.initMs) / 1000, 1),
      num(row.guestUptimeS, 1),
      String(row.requests),
      String(row.preflights),
      num(row.bytes / 2 ** 20, 1),
      ide ? num(ide.bootToShellMs / row.bootToShellMs, 2) : null,
      row.disk === 'ide-http' ? null : `≥ ${HTTP_BOOT_AIM}`,
    ]),
  );
  return (
    `v86 over HTTP: boot to a shell, ${r.imageBytes >> 20} MiB ext4 image from one local server (another origin), fresh profile per boot, v86 on the page; ` +
    `requests and bytes counted at the server up to the shell; best of the rounds; load average ${r.loadAverage.map((x) => x.toFixed(1)).join(' ')}; ${r.seconds.toFixed(0)} s\n${table}`
  );
}
