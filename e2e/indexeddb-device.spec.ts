// An IndexedDB disk behind the device, through the public createDisk() with a
// BackendSpec of kind 'indexeddb': the guest-side driver runs a model-checked
// random workload (reads checked against what was written, FLUSHes among
// them) on the worker host and on the same-thread host, and flushed data
// survives a SIGKILL of the browser.

import { expect, test } from './fixtures.ts';
import { openHarness, type Harness } from './harness.ts';

const MiB = 1024 * 1024;
const SECTOR = 512;

async function workload(h: Harness, queueDepth: number, spanSectors: number, seed: number) {
  const ops = 800;
  const result = await h.call('workload', { kind: 'verify', queueDepth, blockBytes: 64 * 1024, ops, seed, flushEvery: 24, spanSectors });
  expect(result).toMatchObject({ completed: ops, mismatches: 0, ioErrors: 0, finalMismatches: 0 });
  expect(result).toMatchObject({ reads: expect.any(Number), writes: expect.any(Number), flushes: expect.any(Number) });
  const { reads, writes, flushes } = result as { reads: number; writes: number; flushes: number };
  expect(Math.min(reads, writes, flushes)).toBeGreaterThan(0);
}

for (const host of ['worker', 'same-thread'] as const) {
  test(`${host} host: a model-checked workload at queue depths 1, 16 and 64 on an IndexedDB disk`, async ({ page }) => {
    // 58 s of the default 120 s beside other suites on 2 cores (load average 50 to 78): twice that.
    test.setTimeout(240_000);
    const h = await openHarness(page, 'guest', host === 'same-thread' ? '?isolation=off' : '');
    const spec = { kind: 'indexeddb', name: `device-${host}`, size: 16 * MiB, cacheBytes: 2 * MiB };
    const info = await h.call('attach', { backend: spec, host });
    expect(info).toMatchObject({ host, capacitySectors: (16 * MiB) / SECTOR, readOnly: false });
    for (const qd of [1, 16, 64]) await workload(h, qd, (16 * MiB) / SECTOR, qd + 3);
    expect(await h.call('storageErrors')).toEqual([]);
    await h.call('close');
  });
}

test('worker host: an IndexedDB disk keeps flushed data across a SIGKILL of the browser', async ({ page, profile }) => {
  let h = await openHarness(page, 'guest');
  const spec = { kind: 'indexeddb', name: 'device-crash', size: 8 * MiB };
  await h.call('attach', { backend: spec });
  await h.call('writePattern', { sector: 2048 + 3, bytes: 192 * 1024, seed: 91 });
  await h.call('flush');
  h = await openHarness(await profile.crashAndRelaunch(), 'guest');
  const info = await h.call('attach', { backend: { kind: 'indexeddb', name: 'device-crash', lockWaitMs: 10_000 } });
  expect(info).toMatchObject({ capacitySectors: (8 * MiB) / SECTOR });
  expect(await h.call('checkPattern', { sector: 2048 + 3, bytes: 192 * 1024, seed: 91 })).toBe(-1);
});
