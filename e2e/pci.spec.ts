// The virtio-pci function end to end in Chromium (docs/pci.md): a disk made
// with createDisk({transport: 'pci'}) on the worker host (device in its
// worker over OPFS, the function decoding registers on the page) and on the
// same-thread host of a page without cross-origin isolation (with the
// doorbell deferred to a microtask, as the v86 adapter runs it). The page is
// the guest: the project's driver over PciTransport, woken only by the INTx
// line. Data is checked byte for byte; nothing here measures time.

import { BlkStatus } from '../src/block/constants.ts';
import type { PciRunArgs, PciRunResult } from './harness/pci-page.ts';
import { expect, test } from './fixtures.ts';

const MiB = 1 << 20;

async function runOn(page: import('@playwright/test').Page, query: string, args: PciRunArgs): Promise<PciRunResult> {
  await page.goto(`/e2e/harness/pci.html${query}`);
  await page.waitForFunction(() => document.body.dataset.ready === 'true');
  return page.evaluate((a) => window.pciHarness!.run(a), args);
}

function expectGuestSawADisk(result: PciRunResult, capacitySectors: number): void {
  expect(result).toMatchObject({
    dataMatches: true,
    zeroesMatch: true,
    discardStatus: BlkStatus.Ok,
    capacityBefore: capacitySectors,
    capacityAfter: capacitySectors + (2 * MiB) / 512,
    configChanges: 1,
    afterResetMatches: true,
  });
  expect(result.stats.ioErrors).toBe(0);
  expect(result.stats.writes).toBeGreaterThan(0);
  expect(result.stats.flushes).toBeGreaterThan(0);
  // The line rose, and every rise was lowered by an ISR read. How many rises
  // there are depends on timing: completions that land while the line is
  // still high (before the driver read ISR) share one rise, so only "some"
  // is a fact (a fresh-clone run saw 4).
  expect(result.rises).toBeGreaterThan(0);
  expect(result.falls).toBe(result.rises);
}

test('worker host: an OPFS disk as a PCI function, driven through BAR0 by the page, INTx from the worker', async ({ page }) => {
  const result = await runOn(page, '', {
    host: 'worker',
    backend: { kind: 'opfs', name: 'pci-disk', directory: 'e2e', size: 8 * MiB },
    barSize: 0x20000,
  });
  expect(result).toMatchObject({ host: 'worker', isolated: true, barSize: 0x20000 });
  expectGuestSawADisk(result, (8 * MiB) / 512);
});

test('same-thread host without isolation: the device runs in a microtask after each doorbell', async ({ page }) => {
  const result = await runOn(page, '?isolation=off', {
    host: 'same-thread',
    backend: { kind: 'memory', size: 4 * MiB },
    deferDoorbell: true,
  });
  expect(result).toMatchObject({ host: 'same-thread', isolated: false, barSize: 0x4000, lowAfterIsrRead: true });
  expectGuestSawADisk(result, (4 * MiB) / 512);
});
