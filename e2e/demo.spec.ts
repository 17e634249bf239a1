// The lab page driven like a person, checking what the page shows: it opens
// with a disk attached, a workload makes the numbers and charts move, failed
// requests show as failures, refused inputs say why and change nothing,
// every number is cleared when the disk changes, Stop says it stopped, an
// import asks before it overwrites, the storage panel reports the quota, and
// IndexedDB and overlay disks attach, show their state, import, export and
// cancel.
// Screenshots go to /tmp/lab-*.png for a person to look at.

import { readFile, rm, writeFile } from 'node:fs/promises';
import { expect, test } from './fixtures.ts';
import type { Page } from '@playwright/test';

// Twice the default: beside other suites on a 2-core machine (load average 50 to 78) these took up
// to 72 s, more than half of 120 s, though nothing in them waits on time.
test.describe.configure({ timeout: 240_000 });

const MiB = 1024 * 1024;
const RED = 'rgb(221, 51, 51)';

async function open(page: Page): Promise<void> {
  await page.setViewportSize({ width: 1000, height: 1100 });
  await page.goto('/lab.html');
  await expect(page.locator('body')).toHaveAttribute('data-ready', 'true');
}

async function runWorkload(page: Page, kind: string, seconds: number): Promise<string> {
  const before = await page.evaluate(() => Number(document.body.dataset.runs ?? 0));
  await page.selectOption('#kind', kind);
  await page.fill('#seconds', String(seconds));
  await page.click('#run');
  // The run is over when a new result is in (a short run may end before any
  // intermediate state could be observed).
  await expect.poll(() => page.evaluate(() => Number(document.body.dataset.runs ?? 0)), { timeout: 60_000 }).toBe(before + 1);
  await expect(page.locator('#run')).toBeEnabled();
  return (await page.locator('#result').textContent()) ?? '';
}

const number = async (page: Page, selector: string) => Number((await page.locator(selector).textContent())!.replace(/[^\d.]/g, ''));

test('opens on a working default; a run fills tiles and charts sized to the run, with units and p50/p99', async ({ page }) => {
  await open(page);
  await expect(page.locator('#status')).toContainText('attached: memory, 64 MiB');
  await expect(page.locator('#status')).toContainText('device on a worker');

  await page.fill('#qd', '16');
  const result = await runWorkload(page, 'randrw', 3);
  expect(result).toMatch(/^Ran \d+\.\d s\./);
  expect(result).not.toContain('FAILED');
  expect(result).toMatch(/[\d,]+ requests succeeded: [\d,]+ IOPS, [\d.]+ MB\/s; latency p50 [\d.]+ (µs|ms), p99 [\d.]+ (µs|ms)/);
  expect(await number(page, '#iops')).toBeGreaterThan(0);
  expect(await number(page, '#completed')).toBeGreaterThan(0);
  await expect(page.locator('#failed')).toHaveText('0');
  await expect(page.locator('#latency')).toHaveText(/^[\d.]+ (µs|ms) \/ [\d.]+ (µs|ms)$/);
  // One chart per quantity, each with its own axis and unit, the x axis the run's length.
  await expect(page.locator('#chart-iops')).toHaveAttribute('aria-label', /^IOPS against time: x axis time 0 to 3 s, y axis IOPS 0 to \S+; [1-9]\d* samples$/);
  await expect(page.locator('#chart-mbps')).toHaveAttribute('aria-label', /y axis MB\/s 0 to /);
  await expect(page.locator('#chart-latency')).toHaveAttribute('aria-label', /y axis latency \(ms\) 0 to /);
  expect(Number(await page.locator('#chart-iops').getAttribute('data-y-max'))).toBeGreaterThanOrEqual(await number(page, '#iops'));
  await page.screenshot({ path: '/tmp/lab-run.png', fullPage: true });

  const verify = await runWorkload(page, 'verify', 2);
  expect(verify).toContain('Verify: mismatches 0, final read-back mismatches 0.');

  // An IOPS limit, set while attached, holds the device back (the device counts throttled requests).
  await page.fill('#limit', '500');
  await page.dispatchEvent('#limit', 'change');
  await page.fill('#qd', '4');
  const limited = await runWorkload(page, 'randread', 2);
  expect(limited).not.toContain('FAILED');
  expect(Number(/held back by the rate limit in this run: ([\d,]+)/.exec(limited)?.[1]?.replace(/,/g, ''))).toBeGreaterThan(0);
  // ~500 IOPS over 2 s, not the unlimited rate.
  expect(Number(/succeeded: ([\d,]+) IOPS/.exec(limited)?.[1]?.replace(/,/g, ''))).toBeLessThan(800);
});

test('writes to a read-only disk are shown as failures, in red, with the first one described', async ({ page }) => {
  await open(page);
  await page.check('#readonly');
  await page.click('#attach');
  await expect(page.locator('#status')).toContainText('attached: memory, 64 MiB, read-only');
  const result = await runWorkload(page, 'randwrite', 2);
  const failed = /FAILED: ([\d,]+) of ([\d,]+) requests failed/.exec(result);
  expect(failed).not.toBeNull();
  expect(failed![1]).toBe(failed![2]);
  expect(result).toMatch(/First failure: write of 8 sector\(s\) at sector \d+ answered IOERR\. The disk is read-only/);
  expect(result).toContain('0 requests succeeded: 0 IOPS, 0.0 MB/s');
  await expect(page.locator('#result')).toHaveCSS('color', RED);
  await expect(page.locator('#failed')).toHaveText(failed![1]!);
  await expect(page.locator('#failed')).toHaveCSS('color', RED);
  await expect(page.locator('#iops')).toHaveText('0');
  await page.screenshot({ path: '/tmp/lab-readonly.png', fullPage: true });
});

test('every input out of range is refused with its reason, nothing clamped, the attached disk kept', async ({ page }) => {
  await open(page);
  for (const [size, reason] of [
    ['0', 'Size: at least 1 MiB'],
    ['65536', "Size: at most 2,048 MiB: a memory disk lives in the device worker's memory"],
    ['1.5', 'Size: "1.5" is not a whole number'],
  ] as const) {
    await page.fill('#size', size);
    await page.click('#attach');
    await expect(page.locator('#size-error')).toHaveText(reason);
    await expect(page.locator('#size')).toHaveValue(size);
    await expect(page.locator('#status')).toHaveText('attach refused: correct the field marked in red; the attached disk is unchanged');
    // The disk that was attached is still there and still runs.
    await expect(page.locator('body')).toHaveAttribute('data-attached', 'memory');
  }
  await page.fill('#size', '64');
  await expect(page.locator('#size-error')).toHaveText('');

  await page.fill('#qd', '500');
  await expect(page.locator('#qd-error')).toHaveText('Queue depth: at most 256 (the queue size)');
  await page.click('#run');
  await expect(page.locator('#result')).toHaveText('not started: correct the field marked in red');
  await expect(page.locator('#qd')).toHaveValue('500');
  await page.selectOption('#block', '262144');
  await page.fill('#qd', '100');
  await expect(page.locator('#qd-error')).toHaveText("Queue depth: at most 64 with 256 KiB blocks (the guest's 16 MiB data area)");
  await page.fill('#qd', '64');
  await expect(page.locator('#qd-error')).toHaveText('');
  await page.fill('#seconds', '0');
  await expect(page.locator('#seconds-error')).toHaveText('Seconds: at least 1 s');
  await page.fill('#seconds', '2');
  await page.fill('#limit', '-5');
  await page.dispatchEvent('#limit', 'change');
  await expect(page.locator('#limit-error')).toHaveText('IOPS limit: at least 0');
  await page.screenshot({ path: '/tmp/lab-invalid.png', fullPage: true });
  await page.fill('#limit', '0');
  await page.dispatchEvent('#limit', 'change');
  await expect(page.locator('#limit-error')).toHaveText('');
  expect(await runWorkload(page, 'seqread', 1)).toMatch(/requests succeeded/);
});

test('numbers are cleared when the disk changes; Stop says the run stopped', async ({ page }) => {
  await open(page);
  await page.fill('#seconds', '60');
  await page.click('#run');
  await expect.poll(() => number(page, '#completed'), { timeout: 30_000 }).toBeGreaterThan(0);
  await page.click('#stop');
  await expect(page.locator('#result')).toContainText(/^Stopped by Stop after \d+\.\d s\./, { timeout: 30_000 });
  await expect(page.locator('#chart-iops')).toHaveAttribute('aria-label', /0 to 60 s/);

  await page.click('#detach');
  await expect(page.locator('#status')).toHaveText('detached: no disk is attached');
  for (const tile of ['#iops', '#mbps', '#latency', '#completed', '#failed']) await expect(page.locator(tile)).toHaveText('–');
  await expect(page.locator('#result')).toHaveText('');
  await expect(page.locator('#chart-iops')).toHaveAttribute('aria-label', / 0 samples$/);

  await page.click('#attach');
  await expect(page.locator('#status')).toContainText('attached: memory');
  expect(await runWorkload(page, 'randread', 1)).toContain('held back by the rate limit in this run: 0');
  // A failed attach leaves nothing from the disk before it.
  await page.selectOption('#backend', 'opfs');
  await page.fill('#name', 'held');
  await page.fill('#size', '4');
  const other = await page.context().newPage();
  await other.goto('/lab.html');
  await other.selectOption('#backend', 'opfs');
  await other.fill('#name', 'held');
  await other.fill('#size', '4');
  await other.click('#attach');
  await expect(other.locator('#status')).toContainText('attached: opfs "held"');
  await page.click('#attach');
  await expect(page.locator('#status')).toContainText(/^attach failed: .*in-use.*\. No disk is attached\.$/, { timeout: 30_000 });
  await expect(page.locator('#status')).toHaveCSS('color', RED);
  await expect(page.locator('#completed')).toHaveText('–');
  await expect(page.locator('#run')).toBeDisabled();
});

test('an OPFS disk is exported as a download of its full size; with no disk, export says so', async ({ page }) => {
  await open(page);
  await page.fill('#name', 'nothing-here');
  await page.click('#export');
  await expect(page.locator('#image-status')).toHaveText('there is no OPFS disk "nothing-here" to export: attach or import one with that name first');

  await page.selectOption('#backend', 'opfs');
  await page.fill('#size', '8');
  await page.fill('#name', 'exported');
  await page.click('#attach');
  await expect(page.locator('#status')).toContainText('attached: opfs "exported", 8 MiB');
  expect(await runWorkload(page, 'seqwrite', 1)).not.toContain('FAILED');

  const download = page.waitForEvent('download');
  await page.click('#export');
  const file = await (await download).path();
  expect((await readFile(file)).length).toBe(8 * MiB);
  await expect(page.locator('#image-status')).toContainText('exported "exported"');
  // Exporting detached the disk for a moment and attached it again.
  await expect(page.locator('#status')).toContainText('attached: opfs "exported"');
});

test('an imported image streams into OPFS, exports unchanged, and a second import asks before replacing it', async ({ page }) => {
  await open(page);
  await page.fill('#name', 'imported');
  const image = Buffer.alloc(MiB + 100);
  for (let i = 0; i < image.length; i++) image[i] = (i * 7 + (i >> 9)) & 0xff;
  await page.setInputFiles('#import', { name: 'disk.img', mimeType: 'application/octet-stream', buffer: image });
  await expect(page.locator('#image-status')).toContainText('imported disk.img');
  await expect(page.locator('#status')).toContainText('attached: opfs "imported"');
  expect(await page.locator('#import-progress').evaluate((p: HTMLProgressElement) => p.value)).toBe(1);

  const download = page.waitForEvent('download');
  await page.click('#export');
  const bytes = await readFile(await (await download).path());
  // Rounded up to whole sectors, the tail zero.
  expect(bytes.length).toBe(MiB + 512);
  expect(bytes.subarray(0, image.length).equals(image)).toBe(true);
  expect(bytes.subarray(image.length).every((b) => b === 0)).toBe(true);

  // The same name again: the page asks; "Cancel" leaves the disk as it was.
  const other = Buffer.alloc(2 * MiB, 0x5a);
  const asked: string[] = [];
  page.once('dialog', (d) => {
    asked.push(d.message());
    void d.dismiss();
  });
  await page.setInputFiles('#import', { name: 'other.img', mimeType: 'application/octet-stream', buffer: other });
  await expect(page.locator('#image-status')).toHaveText('import cancelled: OPFS disk "imported" is unchanged');
  expect(asked).toEqual(['Replace the OPFS disk "imported" (1 MiB) with other.img (2 MiB)? Its contents will be lost.']);
  await expect(page.locator('#status')).toContainText('attached: opfs "imported", 1 MiB');
  // "OK" replaces it.
  page.once('dialog', (d) => void d.accept());
  await page.setInputFiles('#import', { name: 'other.img', mimeType: 'application/octet-stream', buffer: other });
  await expect(page.locator('#image-status')).toContainText('imported other.img as OPFS disk "imported"');
  await expect(page.locator('#status')).toContainText('attached: opfs "imported", 2 MiB');
});

test('the storage panel shows quota used and free, and asks for persistent storage', async ({ page }) => {
  // Every estimate the page gets from the browser, kept for the check below. A fresh estimate taken
  // by the test would be another moment's: Chromium grants an origin its usage plus about 10 GiB (or
  // less when the disk is fuller), so the quota moves with whatever is written meanwhile.
  await page.addInitScript(() => {
    const estimate = StorageManager.prototype.estimate;
    const seen: StorageEstimate[] = [];
    Object.assign(window, { estimatesSeen: seen });
    StorageManager.prototype.estimate = async function (this: StorageManager) {
      const e = await estimate.call(this);
      seen.push(e);
      return e;
    };
  });
  await open(page);
  const usage = page.locator('#storage-usage');
  await expect(usage).toHaveText(/^used [\d,.]+ MiB of [\d,.]+ MiB quota; [\d,.]+ MiB free$/);
  const { text, seen } = await page.evaluate(() => ({
    text: document.getElementById('storage-usage')!.textContent!,
    seen: (window as unknown as { estimatesSeen: StorageEstimate[] }).estimatesSeen.map((e) => ({ usage: e.usage!, quota: e.quota! })),
  }));
  // The text is one of the browser's estimates, in MiB.
  const inMiB = (bytes: number) => `${(bytes / MiB).toLocaleString('en-US', { maximumFractionDigits: 1 })} MiB`;
  expect(seen.map((e) => `used ${inMiB(e.usage)} of ${inMiB(e.quota)} quota; ${inMiB(e.quota - e.usage)} free`)).toContain(text);
  expect(seen.every((e) => e.quota > 0)).toBe(true);
  await expect(page.locator('#persist-status')).toHaveText(/^best-effort|^persistent/);
  await page.click('#persist');
  // The answer is on screen once persist() has settled; persisted() asked any earlier can still say "not yet".
  await expect(page.locator('#persist-status')).toHaveText(/^persistent: the browser will not evict|^the browser declined/);
  const granted = await page.evaluate(() => navigator.storage.persisted());
  await expect(page.locator('#persist-status')).toHaveText(
    granted ? /^persistent: the browser will not evict/ : 'the browser declined to make storage persistent; it stays best-effort',
  );
  await page.screenshot({ path: '/tmp/lab-storage.png', fullPage: true });
});

test('an IndexedDB disk shows its chunks; an image imports into it with progress, exports back, a big import cancels; an overlay sits over it', async ({ page }) => {
  // 150 s in that loaded run (a 384 MiB file written and imported, three workloads, four transfers).
  test.setTimeout(480_000);
  await open(page);
  await page.selectOption('#backend', 'indexeddb');
  await page.fill('#name', 'idb-lab');
  await page.fill('#size', '16');
  await page.click('#attach');
  await expect(page.locator('#status')).toContainText('attached: indexeddb "idb-lab", 16 MiB; device on a worker');
  const verify = await runWorkload(page, 'verify', 2);
  expect(verify).toContain('Verify: mismatches 0, final read-back mismatches 0.');
  // The verify workload flushes: chunks reach the database, and the panel counts them.
  await expect.poll(() => page.evaluate(() => Number(document.body.dataset.storedChunks ?? 0))).toBeGreaterThan(0);
  await expect(page.locator('#disk-state')).toContainText(/IndexedDB "idb-lab": [\d,]+ chunks stored/);
  await expect(page.locator('#disk-state')).toContainText(/device cache: [\d,]+ chunks, [\d,]+ dirty, [\d,]+ write-back transactions in flight/);
  await expect(page.locator('#disk-state')).toContainText(/origin storage: [\d,.]+ MiB used of [\d,.]+ MiB quota/);

  // Import over it (the page asks first): 1 MiB of data, 2 MiB of zeroes that are not stored.
  const image = Buffer.alloc(3 * MiB);
  for (let i = 0; i < MiB; i++) image[i] = (i * 13 + (i >> 11)) & 0xff | 1;
  const asked: string[] = [];
  page.once('dialog', (d) => {
    asked.push(d.message());
    void d.accept();
  });
  await page.setInputFiles('#import', { name: 'disk.img', mimeType: 'application/octet-stream', buffer: image });
  await expect(page.locator('#image-status')).toHaveText(
    'imported disk.img as IndexedDB disk "idb-lab" (3,145,728 bytes; 1,048,576 bytes of data stored, zero blocks skipped)',
  );
  expect(asked).toEqual(['Replace the IndexedDB disk "idb-lab" (16 MiB) with disk.img (3 MiB)? Its contents will be lost.']);
  await expect(page.locator('#transfer-progress')).toHaveText('imported 3 MiB of 3 MiB; 1 MiB of data, 2 MiB zero blocks skipped');
  expect(await page.locator('#import-progress').evaluate((p: HTMLProgressElement) => p.value)).toBe(1);
  await expect(page.locator('#status')).toContainText('attached: indexeddb "idb-lab", 3 MiB');
  // 1 MiB of data is four 256 KiB chunks; the zeroes cost nothing.
  await expect.poll(() => page.evaluate(() => Number(document.body.dataset.storedChunks ?? -1))).toBe(4);

  const download = page.waitForEvent('download');
  await page.click('#export');
  const exported = await readFile(await (await download).path());
  expect(exported.equals(image)).toBe(true);
  await expect(page.locator('#image-status')).toHaveText('exported "idb-lab" (3,145,728 bytes)');
  await expect(page.locator('#status')).toContainText('attached: indexeddb "idb-lab", 3 MiB');

  // A big import, cancelled part-way: nothing is left under its name.
  // This test's own file: another run of the suite on the machine may be writing or removing its own.
  const big = test.info().outputPath('lab-big.img');
  await writeFile(big, Buffer.alloc(384 * MiB, 0x5a));
  try {
    await page.fill('#name', 'idb-big');
    await page.setInputFiles('#import', big);
    // This import's progress: the bar still shows the export before it (full) until this one reports.
    await expect(page.locator('#transfer-progress')).toHaveText(/^imported [\d.]+ MiB of 384 MiB;/);
    await expect.poll(() => page.locator('#import-progress').evaluate((p: HTMLProgressElement) => p.value)).toBeGreaterThan(0);
    await page.click('#transfer-cancel');
    await expect(page.locator('#image-status')).toHaveText(/^import failed: StorageError \[aborted\]: .*cancelled.*; no IndexedDB disk "idb-big" was made$/);
    const names = await page.evaluate(async () => (await indexedDB.databases()).map((d) => d.name));
    expect(names).not.toContain('virtio-blk-web:idb-big');
    expect(names).toContain('virtio-blk-web:idb-lab');
    await expect(page.locator('#transfer-cancel')).toBeDisabled();
  } finally {
    await rm(big, { force: true });
  }

  // An overlay over the imported disk, its top in OPFS: the guest's writes land in the top.
  await page.selectOption('#backend', 'overlay');
  await expect(page.locator('#overlay-row')).toBeVisible();
  await page.selectOption('#overlay-base', 'indexeddb:idb-lab');
  await page.selectOption('#overlay-top', 'opfs');
  await page.fill('#name', 'ovl');
  await page.click('#attach');
  await expect(page.locator('#status')).toContainText('attached: overlay "ovl", 3 MiB');
  expect(await runWorkload(page, 'verify', 2)).toContain('Verify: mismatches 0, final read-back mismatches 0.');
  await expect.poll(() => page.evaluate(() => Number(document.body.dataset.topBlocks ?? 0))).toBeGreaterThan(0);
  await expect(page.locator('#disk-state')).toContainText(/overlay "ovl": [\d,]+ blocks read from the base, [\d,]+ in the top, [\d,]+ zeroed/);
  await page.screenshot({ path: '/tmp/transfer-lab-overlay.png', fullPage: true });
  const overlayDownload = page.waitForEvent('download');
  await page.click('#export');
  expect((await readFile(await (await overlayDownload).path())).length).toBe(3 * MiB);
  await expect(page.locator('#image-status')).toHaveText('exported "ovl" (3,145,728 bytes)');
  // The base is unchanged by the overlay's writes.
  await page.selectOption('#backend', 'indexeddb');
  await page.fill('#name', 'idb-lab');
  const baseDownload = page.waitForEvent('download');
  await page.click('#export');
  expect((await readFile(await (await baseDownload).path())).equals(image)).toBe(true);
  await expect(page.locator('#transfer-progress')).toHaveText('exported 3 MiB of 3 MiB; 1 MiB of data, 2 MiB in holes, not read');
  await expect(page.locator('#overlay-row')).toBeHidden();
  // Exporting detached the base for a moment; it is attached again, its state on screen.
  await expect(page.locator('#status')).toContainText('attached: indexeddb "idb-lab", 3 MiB');
  await expect(page.locator('#disk-state')).toContainText('IndexedDB "idb-lab": 4 chunks stored');
  await page.screenshot({ path: '/tmp/transfer-lab.png', fullPage: true });
});

test('an image imports from a URL (fetched, streamed) into an OPFS disk and attaches', async ({ page }) => {
  await open(page);
  const served = await readFile('public/favicon.svg');
  await page.fill('#name', 'from-url');
  await page.fill('#import-url', '/favicon.svg');
  await page.click('#import-url-go');
  const diskBytes = Math.ceil(served.length / 512) * 512;
  await expect(page.locator('#image-status')).toHaveText(
    `imported /favicon.svg as OPFS disk "from-url" (${diskBytes.toLocaleString('en-US')} bytes; ${diskBytes.toLocaleString('en-US')} bytes of data stored, zero blocks skipped)`,
  );
  await expect(page.locator('#status')).toContainText('attached: opfs "from-url"');
  const download = page.waitForEvent('download');
  await page.click('#export');
  const bytes = await readFile(await (await download).path());
  expect(bytes.length).toBe(diskBytes);
  expect(bytes.subarray(0, served.length).equals(served)).toBe(true);
  // A URL that does not answer: a typed error, no disk.
  await page.fill('#name', 'no-such');
  await page.fill('#import-url', 'http://127.0.0.1:9/disk.img');
  await page.click('#import-url-go');
  await expect(page.locator('#image-status')).toHaveText(/^import failed: StorageError \[io\]: fetch of http:\/\/127\.0\.0\.1:9\/disk\.img failed/);
});
