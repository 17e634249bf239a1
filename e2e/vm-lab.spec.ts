// The VM page driven like a person: open it, wait for the shell prompt in
// the terminal, type a command that writes a file and syncs, reload the
// page, wait for the prompt again, `cat` the file and find its text on the
// screen. What the test reads is what a person sees: xterm's rows as the
// page renders them (its DOM renderer), not the serial bytes.
//
// The word written is random per run and the command that reads it back
// does not contain it, so the text can only be on the screen after the
// reload if the guest read it from the disk: the overlay's top in IndexedDB
// (the image under it never holds it). Then Export must download the whole
// disk, overlay merged, with the word in it. Screenshots: /tmp/vmlab-*.png.
//
// The lab image is built (and the v86 guest provisioned) before the test,
// as `npm start` does.

import { readFile } from 'node:fs/promises';
import type { Page } from '@playwright/test';
import { buildLabImage } from '../scripts/build-lab-image.ts';
import { expect, test } from './fixtures.ts';

/** Two Linux boots on a loaded 2-core machine (20–30 s each when idle). */
const BOOT_TIMEOUT_MS = 150_000;

test.beforeAll(async () => {
  test.setTimeout(600_000);
  await buildLabImage();
});

const screen = (page: Page) => page.locator('#terminal .xterm-rows');

async function waitForShell(page: Page): Promise<void> {
  try {
    // 'error' ends the wait at once: the page has said what went wrong.
    await expect
      .poll(() => page.locator('body').getAttribute('data-vm'), { timeout: BOOT_TIMEOUT_MS, intervals: [500] })
      .toMatch(/^(ready|error)$/);
    expect(await page.locator('body').getAttribute('data-vm')).toBe('ready');
  } catch (err) {
    // Fail loudly with what the page and the console said.
    const status = await page.locator('#status').textContent();
    const text = await screen(page).innerText().catch(() => '');
    throw new Error(`the shell never came up; status: ${status}\nconsole:\n${text}`, { cause: err });
  }
}

/** Type a line into the terminal as a person would: focus it, type, Enter. */
async function typeLine(page: Page, line: string): Promise<void> {
  await page.locator('#terminal').click();
  await page.keyboard.type(line, { delay: 10 });
  await page.keyboard.press('Enter');
}

test('a file written in the guest survives a reload of the page', async ({ page }) => {
  test.setTimeout(360_000);
  await page.setViewportSize({ width: 1280, height: 820 });
  await page.goto('/');
  await waitForShell(page);
  await expect(screen(page)).toContainText('Welcome to the virtio-blk-web lab');
  await page.screenshot({ path: '/tmp/vmlab-1-ready.png' });

  const word = `hello-${Math.floor(Math.random() * 1e9)}`;
  await typeLine(page, `echo ${word} > /root/note; sync; echo wrote-$((6 * 7))`);
  // 42 appears only once the shell ran the line (the typed line shows the expression).
  await expect(screen(page)).toContainText('wrote-42', { timeout: 30_000 });
  // The guest's writes and FLUSH reached the device.
  expect(Number(await page.locator('#stat-flushes').textContent())).toBeGreaterThan(0);
  await expect.poll(async () => Number(await page.locator('#stat-writes').textContent())).toBeGreaterThan(0);
  await page.screenshot({ path: '/tmp/vmlab-2-wrote.png' });
  await expect(page.locator('#last-error')).toBeEmpty();

  await page.reload();
  await waitForShell(page);
  await expect(screen(page)).not.toContainText(word);
  await typeLine(page, 'cat /root/note');
  await expect(screen(page)).toContainText(word, { timeout: 30_000 });
  await page.screenshot({ path: '/tmp/vmlab-3-after-reload.png' });
  // No request the guest sent failed in storage.
  await expect(page.locator('#last-error')).toBeEmpty();
  expect(await page.locator('#stat-errors').textContent()).toBe('0');

  // Export: the download is the whole disk, overlay merged, holding the file's text.
  const download = page.waitForEvent('download', { timeout: 60_000 });
  await page.locator('#export').click();
  const file = await (await download).path();
  const image = await readFile(file);
  expect(image.length).toBe(32 * 1024 * 1024);
  expect(image.includes(Buffer.from(`${word}\n`))).toBe(true);
  await expect(page.locator('#status')).toContainText('exported 32 MiB');
  await page.screenshot({ path: '/tmp/vmlab-4-exported.png' });
});
