// Real Linux in Chromium on this disk: Debian's i386 kernel boots under v86
// with a busybox initramfs that mounts the project's virtio-blk disk
// (attached with src/host/v86 as a virtio-pci function) and switch_roots
// into it, so every program after /init is read through the device. The
// image is ext4, built on the host with `mke2fs -d` (e2e/v86/image.ts).
//
// - OPFS, v86 in a dedicated worker (sync access handles exist only
//   there): the guest checks the host's files, writes a multi-MiB random
//   blob and its checksum, syncs, runs fstrim, reads the blob back with
//   O_DIRECT and remounts read-only; the test saves the disk the page
//   exports, checks the blob against the guest's checksum with debugfs and
//   runs `e2fsck -fn`. A reload boots again on the same OPFS disk and the
//   guest finds its files.
// - IndexedDB, v86 on the page (an asynchronous backend on v86's thread):
//   written in one boot, found after a reload.
// - An overlay, v86 in a worker: the image over HTTP (Range) under an OPFS
//   top; written in one boot (the host checks the merged disk as above),
//   found after a reload, the image itself untouched.
// - A read-only disk: the guest sees /sys/block/vda/ro = 1, mounts it
//   read-only, and every write is refused.
//
// Any failure prints the guest's serial console; a boot that timed out also
// prints where the disk's requests and interrupts stood (e2e/v86/stall.ts).

import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Download, Page } from '@playwright/test';
import type { BootConfig } from './harness/v86-guest.ts';
import type { Where } from './harness/v86-page.ts';
import { fsckProblems } from './linux/provision.ts';
import { test, expect } from './fixtures.ts';
import { GUEST_BLOB_MIB, buildRootImage, type RootImage } from './v86/image.ts';
import { provisionV86 } from './v86/provision.ts';

/**
 * A boot on this loaded 2-core machine took 80–110 s (20–30 s idle); the
 * guest's own timeout is below the test's. E2E_V86_BOOT_TIMEOUT_MS raises it
 * for runs on a machine loaded past that (at load 40 a boot reached /init
 * only after 130 s).
 */
const BOOT_TIMEOUT_MS = Number(process.env.E2E_V86_BOOT_TIMEOUT_MS ?? 200_000);

type Result = Awaited<ReturnType<NonNullable<Window['v86Harness']>['boot']>>;

let busybox = '';
let image: RootImage;
test.beforeAll(() => {
  busybox = provisionV86().busybox;
});

async function openHarness(page: Page): Promise<void> {
  await page.goto('/e2e/harness/v86.html');
  await page.waitForFunction(() => document.body.dataset.ready === 'true');
}

async function boot(page: Page, config: Omit<BootConfig, 'timeoutMs'>, where: Where): Promise<Result> {
  const full: BootConfig = { ...config, timeoutMs: BOOT_TIMEOUT_MS };
  return page.evaluate(([c, w]) => window.v86Harness!.boot(c, w), [full, where] as const);
}

/** The guest reached VBW-END with every `ok` check passed and none failed; else fail with its console. */
function expectGuest(result: Result, ok: string[]): void {
  const lines = result.marks.map((m) => m.line);
  const problems: string[] = [];
  if (result.error) problems.push(`harness error: ${result.error}`);
  if (!result.ended) problems.push('the guest never printed VBW-END');
  for (const l of lines) if (l.startsWith('VBW-BAD') || l.startsWith('VBW-FAIL')) problems.push(l);
  for (const name of ok) if (!lines.includes(`VBW-OK ${name}`)) problems.push(`missing VBW-OK ${name}`);
  if (problems.length > 0) {
    const stall = result.stall ? `\n${result.stall}` : '';
    throw new Error(`${problems.join('\n')}\n---- serial console (${result.where}) ----\n${result.serial.slice(-12_000)}${stall}`);
  }
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A file of an ext4 image, read on the host with debugfs. */
function debugfsCat(image: string, path: string): Buffer {
  return execFileSync('debugfs', ['-R', `cat ${path}`, image], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 << 20 });
}

/** The disk the page exported after a write boot: ext4 clean, and the guest's blob, checksum and note are there. */
async function checkExportedDisk(download: Download, first: Result): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vbw-v86-'));
  try {
    const saved = join(dir, 'disk.img');
    await download.saveAs(saved);
    expect(readFileSync(saved).length).toBe(image.sizeBytes);
    expect(fsckProblems(saved)).toBeNull();
    const blob = debugfsCat(saved, '/vbw/guest/blob.bin');
    expect(blob.length).toBe(GUEST_BLOB_MIB << 20);
    const sums = debugfsCat(saved, '/vbw/guest/SHA256SUMS').toString();
    expect(sums).toContain(`${sha256(blob)}  blob.bin`);
    const printed = first.marks.find((m) => m.line.startsWith('VBW-SUM '))!.line.slice('VBW-SUM '.length);
    expect(printed).toBe(sha256(blob));
    expect(debugfsCat(saved, '/vbw/guest/note.txt').toString()).toBe('written by the guest\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test.beforeEach(({}, testInfo) => {
  image = buildRootImage(`boot-${testInfo.testId}`, busybox, 64);
});
test.afterEach(() => rmSync(image.path, { force: true }));

test('OPFS root (v86 in a worker): host files, a random blob, fstrim and O_DIRECT; the host checks the disk; a reload finds the files', async ({ page }) => {
  test.setTimeout(2 * BOOT_TIMEOUT_MS + 60_000);
  await openHarness(page);
  const downloaded = page.waitForEvent('download', { timeout: BOOT_TIMEOUT_MS + 30_000 });
  const first = await boot(page, { disk: 'virtio', backend: { kind: 'opfs', name: 'root', fresh: true }, imageUrl: image.url, test: 'write', exportImage: true }, 'worker');
  expectGuest(first, ['host-files', 'fstrim', 'direct-read', 'direct-device-read', 'remount-ro']);
  expect(first.where).toBe('worker');
  // fstrim reached the device as DISCARD; reads filled guest RAM and told the JIT.
  expect(first.counters!.discards).toBeGreaterThan(0);
  expect(first.counters!.dirtyCalls).toBeGreaterThan(0);
  expect(first.exported).toBe(true);

  await checkExportedDisk(await downloaded, first);

  await page.reload();
  await openHarness(page);
  const second = await boot(page, { disk: 'virtio', backend: { kind: 'opfs', name: 'root', fresh: false }, imageUrl: image.url, test: 'persist' }, 'worker');
  expectGuest(second, ['host-files', 'guest-files']);
});

test('IndexedDB root (v86 on the page): written in one boot, found after a reload', async ({ page }) => {
  test.setTimeout(2 * BOOT_TIMEOUT_MS + 30_000);
  await openHarness(page);
  const first = await boot(page, { disk: 'virtio', backend: { kind: 'indexeddb', name: 'root', fresh: true }, imageUrl: image.url, test: 'write' }, 'page');
  expectGuest(first, ['host-files', 'direct-read', 'remount-ro']);
  expect(first.where).toBe('page');
  // How many asynchronous requests v86's growing memory made the adapter redo (none is fine too).
  console.log(`IndexedDB boot: ${first.counters!.reads} reads, ${first.counters!.redos} redone after guest RAM moved`);
  await page.reload();
  await openHarness(page);
  const second = await boot(page, { disk: 'virtio', backend: { kind: 'indexeddb', name: 'root', fresh: false }, imageUrl: image.url, test: 'persist' }, 'page');
  expectGuest(second, ['host-files', 'guest-files']);
});

test('a read-only disk is read-only in the guest: sysfs ro = 1, mounts read-only, every write refused', async ({ page }) => {
  test.setTimeout(BOOT_TIMEOUT_MS + 30_000);
  await openHarness(page);
  const result = await boot(page, { disk: 'virtio', backend: { kind: 'memory', readOnly: true }, imageUrl: image.url, test: 'ro', mount: 'ro' }, 'page');
  expectGuest(result, ['host-files', 'sysfs-ro', 'remount-rw-refused', 'file-write-refused', 'device-write-refused']);
  // The guest's kernel refused the writes itself: none reached the device.
  expect(result.counters!.writes).toBe(0);
});

test('overlay root (v86 in a worker): the image over HTTP under an OPFS top; written in one boot, found after a reload, the base untouched', async ({ page }) => {
  test.setTimeout(2 * BOOT_TIMEOUT_MS + 60_000);
  const before = sha256(readFileSync(image.path));
  await openHarness(page);
  const downloaded = page.waitForEvent('download', { timeout: BOOT_TIMEOUT_MS + 30_000 });
  const backend = { kind: 'overlay', name: 'root.top' } as const;
  const first = await boot(page, { disk: 'virtio', backend, imageUrl: image.url, test: 'write', exportImage: true }, 'worker');
  expectGuest(first, ['host-files', 'direct-read', 'remount-ro']);
  await checkExportedDisk(await downloaded, first);
  await page.reload();
  await openHarness(page);
  const second = await boot(page, { disk: 'virtio', backend, imageUrl: image.url, test: 'persist' }, 'worker');
  expectGuest(second, ['host-files', 'guest-files']);
  // Every write went to the top: the image the server sends is the one the host built.
  expect(sha256(readFileSync(image.path))).toBe(before);
});
