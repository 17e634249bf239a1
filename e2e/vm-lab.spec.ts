// The VM page driven like a person: open it, wait for the shell prompt in
// the terminal, type a command that writes a file and syncs, reload the
// page, wait for the prompt again, `cat` the file and find its text on the
// screen. What the test reads is what a person sees: xterm's rows as the
// page renders them (its DOM renderer), not the serial bytes.
//
// The word written is random per run and the command that reads it back
// does not contain it, so the text can only be on the screen after the
// reload if the guest read it from the disk: the overlay's top in IndexedDB
// (the image under it never holds it). The reload lands while the guest's
// next `sync` is writing back, so the new page must wait for the old one's
// lock and find a consistent disk. Then Export must download the whole
// disk, overlay merged, with the word in it.
//
// The second test clicks the buttons the way an impatient person does:
// Export while Linux is still booting, Reset straight after it, Restart,
// and Reset twice in one go. Every action must run alone (the page records
// each one in `data-action`; an observer logs them with the buttons' states)
// and in click order. Screenshots: /tmp/vmlab-*.png.
//
// No sleeps: every wait is on the page's state, the prompt or a panel
// counter, with timeouts sized for Linux booting on a loaded 2-core machine.
// The lab image is built (and the v86 guest provisioned) before the test,
// as `npm start` does.

import { readFile } from 'node:fs/promises';
import type { Page } from '@playwright/test';
import { buildLabImage } from '../scripts/build-lab-image.ts';
import { expect, test } from './fixtures.ts';

/**
 * One Linux boot to a shell: 20–30 s on an idle machine, 280–330 s seen at
 * load average 40–50, and more than 360 s with two of these tests at once at
 * load average 64.
 */
const BOOT_TIMEOUT_MS = 600_000;
/** A command in the running shell, or an export of the 32 MiB disk. */
const STEP_TIMEOUT_MS = 60_000;
const DISK_BYTES = 32 * 1024 * 1024;

test.beforeAll(async () => {
  test.setTimeout(600_000);
  await buildLabImage();
});

const screen = (page: Page) => page.locator('#terminal .xterm-rows');
const body = (page: Page) => page.locator('body');
const counter = async (page: Page, id: string): Promise<number> => Number(await page.locator(`#stat-${id}`).textContent());

async function failWithConsole(page: Page, what: string, err: unknown): Promise<never> {
  const status = await page.locator('#status').textContent();
  const text = await screen(page).innerText().catch(() => '');
  // The panel tells a slow boot (reads still climbing) from a stuck one.
  const disk = (await page.locator('#panel').innerText().catch(() => '')).replace(/\s*\n\s*/g, ' ');
  throw new Error(`${what}; status: ${status}\ndisk panel: ${disk}\nconsole:\n${text}`, { cause: err });
}

async function waitForShell(page: Page): Promise<void> {
  try {
    // 'error' ends the wait at once: the page has said what went wrong.
    await expect(body(page)).toHaveAttribute('data-vm', /^(ready|error)$/, { timeout: BOOT_TIMEOUT_MS });
    await expect(body(page)).toHaveAttribute('data-vm', 'ready', { timeout: 1 });
  } catch (err) {
    await failWithConsole(page, 'the shell never came up', err);
  }
  // A person sees the boot and the shell, never the initramfs's lines for programs.
  await expect(screen(page)).not.toContainText('VBW-');
  const marks = (await body(page).getAttribute('data-marks')) ?? '';
  expect(marks.split('\n')).toContain(`VBW-DISK vda ro=0 sectors=${DISK_BYTES / 512}`);
}

/** Type a line into the terminal as a person would: focus it, type, Enter. */
async function typeLine(page: Page, line: string): Promise<void> {
  await page.locator('#terminal').click();
  await page.keyboard.type(line, { delay: 10 });
  await page.keyboard.press('Enter');
}

/** Run a command and wait for its marker: `echo done-$((n * 7))` shows `done-<7n>` only once the shell ran it. */
async function runCommand(page: Page, command: string, n: number): Promise<void> {
  await typeLine(page, `${command}; echo done-$((${n} * 7))`);
  await expect(screen(page)).toContainText(`done-${n * 7}`, { timeout: STEP_TIMEOUT_MS });
}

test('a file written in the guest survives a reload of the page, even one during a sync', async ({ page }) => {
  test.setTimeout(2 * BOOT_TIMEOUT_MS + 4 * STEP_TIMEOUT_MS);
  await page.setViewportSize({ width: 1280, height: 820 });
  await page.goto('/');
  await waitForShell(page);
  await expect(screen(page)).toContainText('Welcome to the virtio-blk-web lab');
  await page.screenshot({ path: '/tmp/vmlab-1-ready.png' });

  const word = `hello-${Math.floor(Math.random() * 1e9)}`;
  await runCommand(page, `echo ${word} > /root/note; sync`, 6);
  // The guest's writes and FLUSH reached the device.
  expect(await counter(page, 'flushes')).toBeGreaterThan(0);
  await expect.poll(() => counter(page, 'writes')).toBeGreaterThan(0);
  await page.screenshot({ path: '/tmp/vmlab-2-wrote.png' });
  await expect(page.locator('#last-error')).toBeEmpty();

  // Reload while the guest writes 4 MiB back and flushes: as soon as the
  // write count moves, the sync is under way.
  const writesBefore = await counter(page, 'writes');
  await typeLine(page, 'dd if=/dev/urandom of=/root/fill bs=64k count=64 2>/dev/null; sync');
  await expect.poll(() => counter(page, 'writes'), { timeout: STEP_TIMEOUT_MS, intervals: [100] }).toBeGreaterThan(writesBefore + 2);
  await page.reload();
  await waitForShell(page);
  await expect(screen(page)).not.toContainText(word);
  await typeLine(page, 'cat /root/note');
  await expect(screen(page)).toContainText(word, { timeout: STEP_TIMEOUT_MS });
  await page.screenshot({ path: '/tmp/vmlab-3-after-reload.png' });
  // No request the guest sent failed in storage.
  await expect(page.locator('#last-error')).toBeEmpty();
  expect(await page.locator('#stat-errors').textContent()).toBe('0');

  // Export: the download is the whole disk, overlay merged, holding the file's text.
  const download = page.waitForEvent('download', { timeout: STEP_TIMEOUT_MS });
  await page.locator('#export').click();
  const image = await readFile(await (await download).path());
  expect(image.length).toBe(DISK_BYTES);
  expect(image.includes(Buffer.from(`${word}\n`))).toBe(true);
  await expect(page.locator('#action')).toContainText('exported 32 MiB');
  await page.screenshot({ path: '/tmp/vmlab-4-exported.png' });
});

interface ActionSeen {
  action: string | null;
  /** Whether each button was disabled, seen when the change was the latest (null: a later one came first). */
  buttons: { export: boolean; restart: boolean; reset: boolean } | null;
}

/** Log every change of body[data-action], with the buttons' states (window.actionLog). */
function recordActions(): void {
  const log: ActionSeen[] = [];
  (window as unknown as { actionLog: ActionSeen[] }).actionLog = log;
  const button = (id: string) => (document.getElementById(id) as HTMLButtonElement).disabled;
  // From the document itself: the page's own boot starts before DOMContentLoaded.
  new MutationObserver((records) => {
    const changes = records.filter((r) => r.target === document.body);
    // Changes delivered together: each one's value is the next one's old value.
    changes.forEach((_, i) => {
      const last = i === changes.length - 1;
      const action = last ? (document.body.dataset.action ?? null) : changes[i + 1]!.oldValue;
      log.push({ action, buttons: last ? { export: button('export'), restart: button('restart'), reset: button('reset') } : null });
    });
  }).observe(document, { subtree: true, attributes: true, attributeOldValue: true, attributeFilter: ['data-action'] });
}

const actionLog = (page: Page) => page.evaluate(() => (window as unknown as { actionLog: ActionSeen[] }).actionLog);
const started = (log: ActionSeen[]) => log.map((e) => e.action).filter((a) => a !== null);

test('export, restart and reset clicked during other actions run one at a time, in click order', async ({ page }) => {
  test.setTimeout(2 * BOOT_TIMEOUT_MS + 6 * STEP_TIMEOUT_MS);
  await page.setViewportSize({ width: 1280, height: 820 });
  await page.addInitScript(recordActions);
  const dialogs: string[] = [];
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    void dialog.accept();
  });
  await page.goto('/');

  // Export while Linux boots, and Reset clicked straight after it: the reset
  // must wait for the export (its button is disabled until then), so the
  // export reads an open disk to the end.
  await expect(body(page)).toHaveAttribute('data-vm', 'booting', { timeout: BOOT_TIMEOUT_MS });
  const download = page.waitForEvent('download', { timeout: STEP_TIMEOUT_MS });
  await page.locator('#export').click();
  await page.locator('#reset').click();
  const image = await readFile(await (await download).path());
  expect(image.length).toBe(DISK_BYTES);
  // The shipped image's motd, read through the overlay.
  expect(image.includes(Buffer.from('Welcome to the virtio-blk-web lab.'))).toBe(true);
  await expect(page.locator('#action')).not.toContainText('failed');
  await expect.poll(() => dialogs.length).toBe(1);
  await waitForShell(page);
  await expect(page.locator('#disk-info')).toContainText('under a new overlay');
  await page.screenshot({ path: '/tmp/vmlab-5-after-reset.png' });
  let log = await actionLog(page);
  expect(started(log)).toEqual(['boot', 'export', 'reset']);
  // While any action ran, no button could start another.
  const seenRunning = log.filter((e) => e.action !== null && e.buttons !== null);
  expect(seenRunning.length).toBeGreaterThan(0);
  for (const seen of seenRunning) {
    expect(seen.buttons, `buttons while ${seen.action} ran`).toEqual({ export: true, restart: true, reset: true });
  }

  // Restart keeps the disk: a synced file is there after it.
  const word = `kept-${Math.floor(Math.random() * 1e9)}`;
  await runCommand(page, `echo ${word} > /root/kept; sync`, 3);
  await page.locator('#restart').click();
  await expect(page.locator('#export')).toBeDisabled();
  await waitForShell(page);
  await expect(screen(page)).not.toContainText(word);
  await typeLine(page, 'cat /root/kept');
  await expect(screen(page)).toContainText(word, { timeout: STEP_TIMEOUT_MS });
  await expect(page.locator('#disk-info')).toContainText('under its overlay');

  // Reset clicked twice in one task (a double click at its fastest): one
  // confirmation, one reset.
  await page.evaluate(() => {
    const reset = document.getElementById('reset') as HTMLButtonElement;
    reset.click();
    reset.click();
  });
  await expect(body(page)).toHaveAttribute('data-vm', 'booting', { timeout: STEP_TIMEOUT_MS });
  await expect.poll(() => page.evaluate(() => document.body.dataset.action ?? null), { timeout: STEP_TIMEOUT_MS }).toBeNull();
  expect(dialogs).toHaveLength(2);
  log = await actionLog(page);
  expect(started(log)).toEqual(['boot', 'export', 'reset', 'restart', 'reset']);
  await expect(page.locator('#disk-info')).toContainText('under a new overlay');
  // The panel starts again from the new machine's counters, not the old one's.
  await expect(page.locator('#last-error')).toBeEmpty();
});
