// Linux guest benchmark: `dd` with O_DIRECT on the raw /dev/vda, 1 MiB and
// 4 KiB blocks, write then read, through this project's device (vhost-user,
// served by the CLI in its own process) and through QEMU's built-in
// virtio-blk, on the same image in the same run. Both sit on modern
// virtio-mmio and use the host page cache (our file backend; QEMU's default
// cache=writeback), so the difference is the device and its transport path.
//
// Times are taken on the host from the arrival of marker lines the guest
// prints around each dd (busybox has no sub-second clock), so each case moves
// enough data to run for a good fraction of a second. Each configuration runs
// `--rounds` times, alternating; the best round per case is kept.
//
//   npx tsx e2e/linux/bench.ts [--rounds N] [--quick]
//
// --quick: one round, a quarter of the data (a smoke run, noisier numbers).
// Unknown flags are ignored (scripts/bench.mjs passes its own through).
//
// Prints a table and writes bench/results/linux.json.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { NodeFileBackend } from '../../src/backends/node-file.ts';
import { provision, repoRoot, type LinuxAssets } from './provision.ts';
import { boot, type Disk } from './qemu.ts';

interface Case {
  name: string;
  blockBytes: number;
  count: number;
  write: boolean;
}

const MiB = 1 << 20;
const { values: flags } = parseArgs({
  options: { rounds: { type: 'string', default: '2' }, quick: { type: 'boolean', default: false } },
  strict: false,
});
const QUICK = flags.quick === true;
const scale = QUICK ? 4 : 1;
const CASES: Case[] = [
  { name: 'write 1 MiB', blockBytes: MiB, count: 512 / scale, write: true },
  { name: 'read 1 MiB', blockBytes: MiB, count: 512 / scale, write: false },
  { name: 'write 4 KiB', blockBytes: 4096, count: 8192 / scale, write: true },
  { name: 'read 4 KiB', blockBytes: 4096, count: 8192 / scale, write: false },
];
const IMAGE_BYTES = 512 * MiB;

function guestScript(): string {
  const lines = ['set -e', 'fail() { echo "VBW-FAIL $*"; exit 1; }'];
  CASES.forEach((c, i) => {
    const dd = c.write
      ? `dd if=/dev/zero of=/dev/vda bs=${c.blockBytes} count=${c.count} oflag=direct`
      : `dd if=/dev/vda of=/dev/null bs=${c.blockBytes} count=${c.count} iflag=direct`;
    lines.push(`echo "VBW mark-start ${i}"`, `${dd} 2>/dev/null || fail "${c.name}"`, `echo "VBW mark-end ${i}"`);
  });
  return lines.join('\n') + '\n';
}

/** Seconds per case for one boot. */
async function runOnce(assets: LinuxAssets, disk: Disk): Promise<number[]> {
  const start = new Map<number, number>();
  const seconds: number[] = [];
  await boot({
    assets,
    disk,
    script: guestScript(),
    timeoutMs: 600_000,
    onLine: (line, at) => {
      const m = /^VBW mark-(start|end) (\d+)$/.exec(line);
      if (!m) return;
      const i = Number(m[2]);
      if (m[1] === 'start') start.set(i, at);
      else seconds[i] = (at - start.get(i)!) / 1000;
    },
  });
  if (seconds.length !== CASES.length) throw new Error('the guest did not finish every case');
  return seconds;
}

async function runOurs(assets: LinuxAssets, image: string, work: string): Promise<number[]> {
  const socket = join(work, 'bench.sock');
  const cli = spawn(
    process.execPath,
    [join(repoRoot, 'bin', 'virtio-blk-web.mjs'), 'vhost-user', '--socket', socket, '--image', image, '--once'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let errors = '';
  cli.stderr.on('data', (b: Buffer) => (errors += b.toString()));
  try {
    for (let i = 0; i < 600 && !existsSync(socket); i++) {
      if (cli.exitCode !== null) throw new Error(`the CLI exited: ${errors}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return await runOnce(assets, { kind: 'vhost-user-mmio', socket });
  } finally {
    if (cli.exitCode === null) {
      await new Promise<void>((resolve) => {
        cli.once('exit', () => resolve());
        cli.kill('SIGTERM');
      });
    }
  }
}

/**
 * Host side only, no guest: the file backend serving 512 KiB requests made of
 * 4 KiB segments (how Linux sends them), one pread per segment (what the
 * device does today) versus one preadv per request. Best of 3, MiB/s.
 */
function segmentBench(work: string): { perSegment: number; vectored: number } {
  const path = join(work, 'segments.img');
  writeFileSync(path, new Uint8Array(64 * MiB).fill(1));
  const disk = NodeFileBackend.open(path);
  const memory = new Uint8Array(512 * 1024);
  const views = Array.from({ length: 128 }, (_, i) => memory.subarray(i * 4096, (i + 1) * 4096));
  const requests = 256; // 128 MiB
  const best = { perSegment: 0, vectored: 0 };
  for (let round = 0; round < 3; round++) {
    let t = performance.now();
    for (let r = 0; r < requests; r++) {
      const base = (r % 128) * 512 * 1024;
      for (let i = 0; i < views.length; i++) disk.read(base + i * 4096, views[i]!);
    }
    best.perSegment = Math.max(best.perSegment, (128 * 1000) / (performance.now() - t));
    t = performance.now();
    for (let r = 0; r < requests; r++) disk.readv((r % 128) * 512 * 1024, views);
    best.vectored = Math.max(best.vectored, (128 * 1000) / (performance.now() - t));
  }
  disk.close();
  return { perSegment: Math.round(best.perSegment), vectored: Math.round(best.vectored) };
}

function qemuVersion(qemu: string): string {
  return spawnSync(qemu, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? '';
}

async function main(): Promise<void> {
  const rounds = QUICK ? 1 : Math.max(1, Number(flags.rounds) || 2);
  const assets = provision();
  const work = mkdtempSync(join(tmpdir(), 'vbw-bench-'));
  const image = join(work, 'bench.img');
  truncateSync(createEmpty(image), IMAGE_BYTES);
  const best = { ours: CASES.map(() => Infinity), qemu: CASES.map(() => Infinity) };
  let segments = { perSegment: 0, vectored: 0 };
  try {
    segments = segmentBench(work);
    for (let r = 0; r < rounds; r++) {
      // Alternate which goes first, so neither always gets the warmer cache.
      const order = r % 2 === 0 ? (['ours', 'qemu'] as const) : (['qemu', 'ours'] as const);
      for (const which of order) {
        const seconds =
          which === 'ours'
            ? await runOurs(assets, image, work)
            : await runOnce(assets, { kind: 'qemu-builtin', image });
        seconds.forEach((s, i) => (best[which][i] = Math.min(best[which][i]!, s)));
        process.stderr.write(`round ${r + 1} ${which}: ${seconds.map((s) => s.toFixed(3)).join(' ')} s\n`);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }

  const rows = CASES.map((c, i) => {
    const bytes = c.blockBytes * c.count;
    const measure = (s: number) => ({
      seconds: Number(s.toFixed(4)),
      mbPerSecond: Number((bytes / MiB / s).toFixed(1)),
      iops: Math.round(c.count / s),
    });
    const ours = measure(best.ours[i]!);
    const qemu = measure(best.qemu[i]!);
    return { case: c.name, blockBytes: c.blockBytes, totalBytes: bytes, ours, qemu, ratio: Number((best.qemu[i]! / best.ours[i]!).toFixed(2)) };
  });

  const header = ['case', 'virtio-blk-web (vhost-user)', 'QEMU virtio-blk', 'ours / QEMU'];
  const table = rows.map((r) => [
    r.case,
    `${r.ours.mbPerSecond} MiB/s, ${r.ours.iops} IOPS`,
    `${r.qemu.mbPerSecond} MiB/s, ${r.qemu.iops} IOPS`,
    `${r.ratio.toFixed(2)}×`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  process.stdout.write(
    `\nFile backend, 512 KiB requests of 4 KiB segments (host only): one pread per segment ` +
      `${segments.perSegment} MiB/s, one preadv per request ${segments.vectored} MiB/s ` +
      `(${(segments.vectored / segments.perSegment).toFixed(1)}×)\n`,
  );
  process.stdout.write(`\nLinux guest, dd O_DIRECT on /dev/vda (QEMU aarch64 TCG, best of ${rounds})\n`);
  process.stdout.write(`${line(header)}\n${line(widths.map((w) => '-'.repeat(w)))}\n`);
  for (const row of table) process.stdout.write(`${line(row)}\n`);

  const outDir = join(repoRoot, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const result = {
    date: new Date().toISOString(),
    kernel: assets.kernelVersion,
    qemu: qemuVersion(assets.qemu),
    rounds,
    quick: QUICK,
    imageBytes: IMAGE_BYTES,
    note: 'ratio = QEMU time / our time: above 1 means the project device is faster',
    rows,
    fileBackendSegmentsMiBPerSecond: segments,
  };
  writeFileSync(join(outDir, 'linux.json'), `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`\nwrote ${join(outDir, 'linux.json')}\n`);
}

function createEmpty(path: string): string {
  writeFileSync(path, new Uint8Array(0));
  return path;
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
