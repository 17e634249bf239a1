// The lab page driven like a person: it opens with a disk attached, a
// workload makes the numbers move, verify finds no mismatch, an OPFS disk is
// exported as a download, and an imported image comes back out unchanged.

import { readFile } from 'node:fs/promises';
import { expect, test } from './fixtures.ts';
import type { Page } from '@playwright/test';

const MiB = 1024 * 1024;

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

test('opens on a working default, runs a workload and shows the numbers moving', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('body')).toHaveAttribute('data-ready', 'true');
  await expect(page.locator('#status')).toContainText('attached: memory');
  await expect(page.locator('#status')).toContainText('device on a worker');

  await page.fill('#qd', '16');
  await page.selectOption('#kind', 'randrw');
  await page.fill('#seconds', '4');
  await page.click('#run');
  await expect.poll(async () => Number((await page.locator('#iops').textContent())!.replace(/\D/g, '')), { timeout: 30_000 }).toBeGreaterThan(0);
  await expect.poll(async () => Number((await page.locator('#completed').textContent())!.replace(/\D/g, ''))).toBeGreaterThan(0);
  await expect(page.locator('#run')).toBeEnabled({ timeout: 60_000 });
  await expect(page.locator('#result')).toContainText('I/O errors 0');

  const verify = await runWorkload(page, 'verify', 2);
  expect(verify).toContain('mismatches 0, final read-back mismatches 0');

  // An IOPS limit, set while attached, holds the device back (the device counts throttled requests).
  await page.fill('#limit', '500');
  await page.dispatchEvent('#limit', 'change');
  await page.fill('#qd', '4');
  const limited = await runWorkload(page, 'randread', 2);
  expect(limited).toContain('I/O errors 0');
  expect(Number(/held back by the rate limit so far: (\d+)/.exec(limited)?.[1])).toBeGreaterThan(0);
});

test('an OPFS disk is exported as a download of its full size', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('body')).toHaveAttribute('data-ready', 'true');
  await page.selectOption('#backend', 'opfs');
  await page.fill('#size', '8');
  await page.fill('#name', 'exported');
  await page.click('#attach');
  await expect(page.locator('#status')).toContainText('attached: opfs "exported", 8 MiB');
  expect(await runWorkload(page, 'seqwrite', 1)).toContain('I/O errors 0');

  const download = page.waitForEvent('download');
  await page.click('#export');
  const file = await (await download).path();
  expect((await readFile(file)).length).toBe(8 * MiB);
  await expect(page.locator('#image-status')).toContainText('exported "exported"');
  // Exporting detached the disk for a moment and attached it again.
  await expect(page.locator('#status')).toContainText('attached: opfs "exported"');
});

test('an imported image streams into OPFS and exports unchanged', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('body')).toHaveAttribute('data-ready', 'true');
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
});
