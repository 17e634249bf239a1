// Streaming import and export (src/transfer) in Chromium, persistent profile
// (e2e/fixtures.ts): every source kind into OPFS and IndexedDB with content
// checked by hash; export round trips (stream and storage-backed file);
// cancel mid-way leaves nothing under the final name and releases the disk;
// typed errors for a short source, a failed fetch and an exhausted quota;
// and a 5 GiB sparse
// image (marks past 4 GiB) imported and exported on both backends, with the
// data stored (IndexedDB chunk count, bytes on disk in the profile) and the
// browser's memory while it runs measured from outside.

import { execFileSync } from 'node:child_process';
import { expect, test } from './fixtures.ts';
import { openHarness } from './harness.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

type Target = { kind: 'opfs'; name: string; directory?: string } | { kind: 'indexeddb'; name: string };
const targets = (name: string): Target[] => [
  { kind: 'opfs', name, directory: 'transfer' },
  { kind: 'indexeddb', name },
];

/** Bytes the profile directory really occupies on disk (allocated blocks, so holes cost nothing). */
function diskUsageBytes(dir: string): number {
  return Number(execFileSync('du', ['-s', '--block-size=1', dir], { encoding: 'utf8' }).split('\t')[0]);
}

/** Resident memory (KiB) of every process of this profile's browser, summed. */
function browserRssKiB(dir: string): number {
  const out = execFileSync('ps', ['-eo', 'rss=,args='], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((l) => l.includes(`--user-data-dir=${dir}`))
    .reduce((sum, l) => sum + Number.parseInt(l.trim(), 10), 0);
}

for (const target of targets('img')) {
  test.describe(`${target.kind}`, () => {
    for (const kind of ['file', 'blob', 'url', 'stream'] as const) {
      test(`import from a ${kind}: the disk holds the image (hash), rounded to sectors; progress is monotonic and reaches the total`, async ({ page }) => {
        const h = await openHarness(page, 'transfer');
        const spec = { size: 3 * MiB + 1000, seed: 11 };
        const r = await h.call<{ result: { diskBytes: number; imageBytes: number; dataBytes: number }; progress: number[]; last: { doneBytes: number; totalBytes: number } }>(
          'import',
          { kind, spec, target },
        );
        expect(r.result).toEqual({ diskBytes: 3 * MiB + 1024, imageBytes: spec.size, dataBytes: 3 * MiB + 1024 });
        expect(r.progress.length).toBeGreaterThanOrEqual(4);
        for (let i = 1; i < r.progress.length; i++) expect(r.progress[i]!).toBeGreaterThan(r.progress[i - 1]!);
        expect(r.last).toMatchObject({ doneBytes: spec.size, totalBytes: spec.size });
        // The disk, read through its backend, is the image plus a zero tail.
        const disk = await h.call<{ size: number; sha256: string }>('diskHash', { target });
        expect(disk.size).toBe(3 * MiB + 1024);
        expect(disk.sha256).toBe(await h.call<string>('imageHash', { spec, padTo: 3 * MiB + 1024 }));
        const exported = await h.call<{ mismatch: number; bytes: number; monotonic: boolean; last: number }>('checkExport', { target, spec });
        expect(exported).toMatchObject({ mismatch: -1, bytes: 3 * MiB + 1024, monotonic: true, last: 3 * MiB + 1024 });
        // Exported into a storage-backed file: the image, byte for byte up to its size.
        const file = await h.call<{ size: number; sha256: string }>('exportFile', { target, spec });
        expect(file.size).toBe(3 * MiB + 1024);
        expect(file.sha256).toBe(disk.sha256);
      });
    }

    test('an existing disk: import fails with exists; replace makes a new disk; overwrite keeps the size and zeroes the rest', async ({ page }) => {
      const h = await openHarness(page, 'transfer');
      const t = { ...target, name: 'exists' };
      await h.call('import', { kind: 'blob', spec: { size: 4 * MiB, seed: 1 }, target: t });
      const again = await h.call<{ error: { code: string; message: string } }>('importFailing', { kind: 'blob', spec: { size: MiB, seed: 2 }, target: t });
      expect(again.error).toMatchObject({ name: 'StorageError', code: 'exists' });
      expect(await h.call('diskHash', { target: t })).toMatchObject({ size: 4 * MiB });

      await h.call('import', { kind: 'blob', spec: { size: MiB, seed: 2 }, target: t, existing: 'replace' });
      expect(await h.call('diskHash', { target: t })).toEqual({ size: MiB, sha256: await h.call('imageHash', { spec: { size: MiB, seed: 2 } }) });

      await h.call('createAgain', { target: { ...t, name: 'big' }, size: 4 * MiB });
      await h.call('import', { kind: 'blob', spec: { size: 4 * MiB, seed: 3 }, target: { ...t, name: 'big' }, existing: 'replace' });
      await h.call('import', { kind: 'stream', spec: { size: 2 * MiB, seed: 4 }, target: { ...t, name: 'big' }, existing: 'overwrite' });
      const big = await h.call<{ size: number }>('diskHash', { target: { ...t, name: 'big' } });
      expect(big.size).toBe(4 * MiB);
      // First 2 MiB the new image, the rest zeroes (checked by an export against image + zero tail).
      const check = await h.call<{ mismatch: number }>('checkExport', { target: { ...t, name: 'big' }, spec: { size: 2 * MiB, seed: 4 } });
      expect(check.mismatch).toBe(-1);
    });

    test('cancel mid-way: a typed aborted error, nothing under the final name, and the disk can be created again', async ({ page }) => {
      const h = await openHarness(page, 'transfer');
      const t = { ...target, name: 'cancelled' };
      const r = await h.call<{ error: { code: string; cause: string }; progress: number[] }>('importFailing', {
        kind: 'stream',
        spec: { size: 64 * MiB, seed: 5 },
        declared: undefined,
        target: t,
        abortAfterBytes: 8 * MiB,
      });
      expect(r.error).toMatchObject({ name: 'StorageError', code: 'aborted', cause: 'cancelled by the test' });
      // It stopped promptly: within a block or two of the cancel.
      expect(r.progress.at(-1)!).toBeLessThanOrEqual(10 * MiB);
      expect(await h.call('visible', { target: t })).toEqual({ listed: false, hiddenLeftover: false });
      expect(await h.call('createAgain', { target: t, size: MiB })).toBe(MiB);
      // And an import under that name now works (a fresh one, after deleting what createAgain made).
      await h.call('import', { kind: 'blob', spec: { size: MiB, seed: 6 }, target: t, existing: 'replace' });
      expect(await h.call('diskHash', { target: t })).toEqual({ size: MiB, sha256: await h.call('imageHash', { spec: { size: MiB, seed: 6 } }) });
    });

    test('typed errors: a source shorter than declared, a failed fetch; neither leaves a disk', async ({ page }) => {
      const h = await openHarness(page, 'transfer');
      const t = { ...target, name: 'broken' };
      const short = await h.call<{ error: { code: string; message: string } }>('importFailing', { kind: 'stream', spec: { size: 2 * MiB + 5, seed: 7 }, declared: 3 * MiB, target: t });
      expect(short.error).toMatchObject({ name: 'StorageError', code: 'truncated' });
      expect(short.error.message).toContain('ended after 2097157 of the 3145728 bytes declared');
      expect(await h.call('visible', { target: t })).toEqual({ listed: false, hiddenLeftover: false });
      const fetchFailed = await h.call<{ error: { code: string; message: string; cause: string } }>('importFailing', { kind: 'refused-url', spec: { size: 0 }, declared: MiB, target: t });
      expect(fetchFailed.error).toMatchObject({ name: 'StorageError', code: 'io' });
      expect(fetchFailed.error.message).toMatch(/^fetch of http:\/\/127\.0\.0\.1:9\/disk\.img failed/);
      expect(fetchFailed.error.cause).toBeTruthy();
      expect(await h.call('visible', { target: t })).toEqual({ listed: false, hiddenLeftover: false });
    });

    test('quota exhausted during an import: a typed quota-exceeded error with the QuotaExceededError as cause, and no disk left', async ({ page, profile }) => {
      const h = await openHarness(page, 'transfer');
      const t = { ...target, name: 'over-quota' };
      // Set before any database or file is opened (see e2e/indexeddb.spec.ts).
      const cdp = await profile.context.newCDPSession(page);
      const origin = new URL(page.url()).origin;
      await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 8 * MiB });
      try {
        const r = await h.call<{ error: { name: string; code: string; causeName: string } | null }>('importFailing', { kind: 'blob', spec: { size: 48 * MiB, seed: 9 }, target: t });
        expect(r.error).toMatchObject({ name: 'StorageError', code: 'quota-exceeded', causeName: 'QuotaExceededError' });
      } finally {
        await cdp.send('Storage.overrideQuotaForOrigin', { origin });
      }
      expect(await h.call('visible', { target: t })).toEqual({ listed: false, hiddenLeftover: false });
      // With the quota back, the same import succeeds under that name.
      await h.call('import', { kind: 'blob', spec: { size: 2 * MiB, seed: 9 }, target: t });
      expect(await h.call('diskHash', { target: t })).toEqual({ size: 2 * MiB, sha256: await h.call('imageHash', { spec: { size: 2 * MiB, seed: 9 } }) });
    });

    {
      test('the browser killed mid-import: after relaunch there is no disk under the name, and the import can be run again', async ({ page, profile }) => {
        let h = await openHarness(page, 'transfer');
        const t = { ...target, name: 'killed' };
        // Not awaited: the browser dies under it.
        // A 1 GiB image whose source stops after 64 MiB: the import waits there, mid-way, when the browser dies.
        void h.call('import', { kind: 'stream', spec: { size: GiB, fillByte: 0x5a, stallAfter: 64 * MiB }, target: t }).catch(() => undefined);
        await expect.poll(() => h.call<number>('progressNow'), { timeout: 60_000 }).toBeGreaterThanOrEqual(63 * MiB);
        if (target.kind === 'opfs') {
          const during = await h.call<{ disks: Array<{ name: string }>; hidden: Array<{ name: string; size: number }> }>('listing', { directory: 'transfer' });
          // Mid-way: the disk is being built aside, at its full size, and nothing is under its name.
          expect(during).toEqual({ disks: [], hidden: [{ name: 'killed', size: GiB }] });
        } else {
          // Mid-way: chunks are stored under the name, but the disk is marked incomplete, so it is not listed.
          await expect.poll(() => h.call<number>('storedChunks', { name: 'killed' }), { timeout: 60_000 }).toBeGreaterThan(0);
          expect(await h.call('visible', { target: t })).toEqual({ listed: false, hiddenLeftover: false });
        }
        h = await openHarness(await profile.crashAndRelaunch(), 'transfer');
        expect(await h.call<{ listed: boolean }>('visible', { target: t })).toMatchObject({ listed: false });
        await h.call('import', { kind: 'blob', spec: { size: 2 * MiB, seed: 13 }, target: t });
        expect(await h.call('visible', { target: t })).toEqual({ listed: true, hiddenLeftover: false });
        expect(await h.call('diskHash', { target: t })).toEqual({ size: 2 * MiB, sha256: await h.call('imageHash', { spec: { size: 2 * MiB, seed: 13 } }) });
      });
    }

    test('a 5 GiB sparse image, marked past 4 GiB: imported and exported in bounded memory, storing almost nothing', async ({ page, profile }) => {
      // OPFS took 318 s of 600 beside other suites on 2 cores (load average 50 to 78).
      test.setTimeout(1_200_000);
      const h = await openHarness(page, 'transfer');
      const t = { ...target, name: 'huge' };
      const size = 5 * GiB;
      const marks = [0, 1 * GiB + 12 * 4096, 4 * GiB - 4096, 4 * GiB, 4 * GiB + 7 * MiB + 8192, size - 4096];
      const spec = { size, marks };
      const usedBefore = diskUsageBytes(profile.dir);
      const rssBefore = browserRssKiB(profile.dir);
      let rssPeak = rssBefore;
      const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, browserRssKiB(profile.dir))), 250);
      let imported: { result: { diskBytes: number; dataBytes: number }; seconds: number; last: { doneBytes: number } };
      let exported: { mismatch: number; bytes: number; dataBytes: number; monotonic: boolean; seconds: number };
      try {
        imported = await h.call('import', { kind: 'stream', spec, target: t });
        exported = await h.call('checkExport', { target: t, spec });
      } finally {
        clearInterval(sampler);
      }
      const stored = diskUsageBytes(profile.dir) - usedBefore;
      const file = await h.call<{ size: number; marksOk: boolean }>('exportFile', { target: t, spec });
      console.log(
        `[transfer] ${target.kind} 5 GiB sparse: import ${imported.seconds.toFixed(1)} s, export ${exported.seconds.toFixed(1)} s, ` +
          `stored ${(stored / MiB).toFixed(1)} MiB on disk, browser RSS ${(rssBefore / 1024).toFixed(0)} → peak ${(rssPeak / 1024).toFixed(0)} MiB`,
      );
      expect(imported.result).toEqual({ diskBytes: size, imageBytes: size, dataBytes: marks.length * 4096 });
      expect(imported.last.doneBytes).toBe(size);
      expect(exported).toMatchObject({ mismatch: -1, bytes: size, monotonic: true });
      expect(file).toEqual({ size, sha256: null, marksOk: true });
      if (target.kind === 'indexeddb') {
        // One chunk per mark (the 4 GiB - 4096 and 4 GiB marks sit in two chunks either side of 4 GiB).
        expect(await h.call('storedChunks', { name: 'huge' })).toBe(marks.length);
        // Holes were never read: only the chunks with marks.
        expect(exported.dataBytes).toBeLessThanOrEqual(marks.length * MiB);
      }
      // Stored: a few chunks, not gigabytes (profile files, journals and the export file's marks included).
      expect(stored).toBeLessThan(64 * MiB);
      // Memory: nothing like the image; a few blocks and the browser's own churn.
      expect((rssPeak - rssBefore) * KiB).toBeLessThan(1 * GiB);
    });
  });
}

test('IndexedDB allocatedRanges follows the cache: an unflushed write counts, a stored chunk zeroed in the cache does not; the export matches', async ({ page }) => {
  const h = await openHarness(page, 'transfer');
  const chunk = 256 * KiB;
  const r = await h.call<{ ranges: Array<[number, number]>; mismatch: number; bytes: number; dataBytes: number }>('exportUnflushed', { name: 'cached' });
  expect(r.ranges).toEqual([
    [5 * chunk, 6 * chunk],
    [9 * chunk, 10 * chunk],
  ]);
  expect(r).toMatchObject({ mismatch: -1, bytes: 64 * chunk, dataBytes: 2 * chunk });
});
