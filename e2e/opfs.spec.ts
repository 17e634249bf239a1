// The OPFS backend in Chromium: the shared backend contract, then what only a
// browser can show — persistence across a reload and a browser restart, the
// typed in-use error in a second tab, read-only sharing, a sparse disk over
// 4 GiB, and zeroes after write-zeroes and discard.

import { backendContract } from '../test/contract/backend-contract.ts';
import { expect, test } from './fixtures.ts';
import { openHarness } from './harness.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

test.describe('backend contract: OPFS', () => {
  for (const c of backendContract) {
    test(c.name, async ({ page }) => {
      const harness = await openHarness(page, 'opfs');
      const cases = await harness.call<Array<{ name: string; applies: boolean }>>('contractCases');
      test.skip(!cases.find((x) => x.name === c.name)?.applies, 'not applicable to OPFS');
      expect(await harness.attempt('contractRun', { name: c.name })).toBeNull();
    });
  }
});

test('the harness page is cross-origin isolated', async ({ page }) => {
  const harness = await openHarness(page, 'opfs');
  expect(await harness.call('isolated')).toBe(true);
});

test('written and flushed data survives a reload and a browser restart', async ({ page, profile }) => {
  let harness = await openHarness(page, 'opfs');
  await harness.call('open', { name: 'persist', size: 8 * MiB });
  await harness.call('write', { name: 'persist', offset: 3 * MiB + 512, length: 256 * 1024, seed: 41 });
  await harness.call('flush', { name: 'persist' });

  // A reload ends the worker without close(): only flush made the data durable.
  await page.reload();
  harness = await openHarness(page, 'opfs');
  expect(await harness.call('open', { name: 'persist' })).toEqual({ size: 8 * MiB, readOnly: false });
  expect(await harness.call('mismatch', { name: 'persist', offset: 3 * MiB + 512, length: 256 * 1024, seed: 41 })).toBe(-1);
  await harness.call('write', { name: 'persist', offset: 0, length: 4096, seed: 42 });
  await harness.call('flush', { name: 'persist' });

  harness = await openHarness(await profile.relaunch(), 'opfs');
  await harness.call('open', { name: 'persist' });
  expect(await harness.call('mismatch', { name: 'persist', offset: 0, length: 4096, seed: 42 })).toBe(-1);
  expect(await harness.call('mismatch', { name: 'persist', offset: 3 * MiB + 512, length: 256 * 1024, seed: 41 })).toBe(-1);
});

test('a second tab gets the typed in-use error, and the disk once the first closes it', async ({ page, profile }) => {
  const first = await openHarness(page, 'opfs');
  await first.call('open', { name: 'shared', size: 1 * MiB });
  await first.call('write', { name: 'shared', offset: 0, length: 4096, seed: 43 });

  const second = await openHarness(await profile.newPage(), 'opfs');
  const writer = await second.attempt('open', { name: 'shared' });
  expect(writer).toMatchObject({ name: 'StorageError', code: 'in-use' });
  expect(writer!.message).toContain('in use by another tab or worker');
  const reader = await second.attempt('open', { name: 'shared', readOnly: true });
  expect(reader).toMatchObject({ name: 'StorageError', code: 'in-use' });
  // Deleting a disk in use is refused the same way.
  expect(await second.attempt('delete', { name: 'shared' })).toMatchObject({ code: 'in-use' });
  // The first tab's data is intact after the refused attempts.
  expect(await first.call('mismatch', { name: 'shared', offset: 0, length: 4096, seed: 43 })).toBe(-1);

  await first.call('close', { name: 'shared' });
  await second.call('open', { name: 'shared' });
  expect(await second.call('mismatch', { name: 'shared', offset: 0, length: 4096, seed: 43 })).toBe(-1);
});

test('read-only opens share a disk across tabs and keep writers out', async ({ page, profile }) => {
  const first = await openHarness(page, 'opfs');
  await first.call('open', { name: 'image', size: 1 * MiB });
  await first.call('write', { name: 'image', offset: 8192, length: 8192, seed: 44 });
  await first.call('close', { name: 'image' });
  expect(await first.call('open', { name: 'image', readOnly: true })).toEqual({ size: 1 * MiB, readOnly: true });

  const second = await openHarness(await profile.newPage(), 'opfs');
  expect(await second.call('open', { name: 'image', readOnly: true })).toEqual({ size: 1 * MiB, readOnly: true });
  expect(await second.call('mismatch', { name: 'image', offset: 8192, length: 8192, seed: 44 })).toBe(-1);
  expect(await second.attempt('write', { name: 'image', offset: 0, length: 512, seed: 1 })).toMatchObject({ code: 'read-only' });

  const third = await openHarness(await profile.newPage(), 'opfs');
  expect(await third.attempt('open', { name: 'image' })).toMatchObject({ code: 'in-use' });
});

test('a sparse 6 GiB disk reads and writes beyond 4 GiB and keeps it across a reload', async ({ page }) => {
  let harness = await openHarness(page, 'opfs');
  await harness.call('open', { name: 'huge', size: 6 * GiB });
  const high = 5 * GiB + 4096 * 3;
  await harness.call('write', { name: 'huge', offset: high, length: 1 * MiB, seed: 45 });
  await harness.call('write', { name: 'huge', offset: 6 * GiB - 512, length: 512, seed: 46 });
  await harness.call('flush', { name: 'huge' });
  // No 32-bit wrap: the same offset modulo 4 GiB is still zero.
  expect(await harness.call('mismatch', { name: 'huge', offset: high - 4 * GiB, length: 1 * MiB, seed: 0 })).toBe(-1);

  await page.reload();
  harness = await openHarness(page, 'opfs');
  expect(await harness.call('open', { name: 'huge' })).toEqual({ size: 6 * GiB, readOnly: false });
  expect(await harness.call('mismatch', { name: 'huge', offset: high, length: 1 * MiB, seed: 45 })).toBe(-1);
  expect(await harness.call('mismatch', { name: 'huge', offset: 6 * GiB - 512, length: 512, seed: 46 })).toBe(-1);
});

test('write-zeroes and discard read back zeroes, also after a reload', async ({ page }) => {
  let harness = await openHarness(page, 'opfs');
  await harness.call('open', { name: 'zeroes', size: 16 * MiB });
  await harness.call('write', { name: 'zeroes', offset: 0, length: 16 * MiB, seed: 47 });
  await harness.call('writeZeroes', { name: 'zeroes', offset: 1 * MiB, length: 5 * MiB + 512, mayUnmap: false });
  await harness.call('discard', { name: 'zeroes', offset: 8 * MiB, length: 1 * MiB });
  // Unmapping the tail truncates the file and extends it again.
  await harness.call('writeZeroes', { name: 'zeroes', offset: 12 * MiB, length: 4 * MiB, mayUnmap: true });
  await harness.call('flush', { name: 'zeroes' });

  for (const reopen of [false, true]) {
    if (reopen) {
      await page.reload();
      harness = await openHarness(page, 'opfs');
      expect(await harness.call('open', { name: 'zeroes' })).toEqual({ size: 16 * MiB, readOnly: false });
    }
    expect(await harness.call('mismatch', { name: 'zeroes', offset: 1 * MiB, length: 5 * MiB + 512, seed: 0 })).toBe(-1);
    expect(await harness.call('mismatch', { name: 'zeroes', offset: 8 * MiB, length: 1 * MiB, seed: 0 })).toBe(-1);
    expect(await harness.call('mismatch', { name: 'zeroes', offset: 12 * MiB, length: 4 * MiB, seed: 0 })).toBe(-1);
    // The bytes around the zeroed ranges still hold the pattern.
    expect(await harness.call('mismatch', { name: 'zeroes', offset: 0, length: 1 * MiB, seed: 47 })).toBe(-1);
  }
});

test('an empty file left by a crash during creation is no disk: it is not-found, and replaced when created', async ({ page, profile }) => {
  let harness = await openHarness(page, 'opfs');
  // What the old creation code left when the browser died between creating
  // the file and sizing it: an empty file under the disk's name. Beside it,
  // a half-sized temporary file from a crash during the new creation.
  await harness.call('plantFile', { file: 'leftover', length: 0, seed: 0 });
  await harness.call('plantFile', { file: 'leftover.vbw-creating', length: 3000, seed: 61 });
  expect(await harness.call('files')).toEqual([
    { name: 'leftover', size: 0 },
    { name: 'leftover.vbw-creating', size: 3000 },
  ]);
  expect(await harness.attempt('open', { name: 'leftover' })).toMatchObject({ name: 'StorageError', code: 'not-found' });
  expect(await harness.attempt('open', { name: 'leftover', readOnly: true })).toMatchObject({ code: 'not-found' });
  // Neither leftover is listed as a disk... (the empty one is, with size 0, as any file is)
  expect(await harness.call('list')).toEqual([{ name: 'leftover', size: 0 }]);
  // ...and creating the disk gives it its full size (it used to open as 0 sectors forever),
  // with none of the temporary file's bytes in it.
  expect(await harness.call('open', { name: 'leftover', size: 4 * MiB })).toEqual({ size: 4 * MiB, readOnly: false });
  expect(await harness.call('mismatch', { name: 'leftover', offset: 0, length: 4 * MiB, seed: 0 })).toBe(-1);
  expect(await harness.call('files')).toEqual([{ name: 'leftover', size: 4 * MiB }]);
  await harness.call('write', { name: 'leftover', offset: 512, length: 4096, seed: 62 });
  await harness.call('flush', { name: 'leftover' });

  // A full-size disk is a disk: after a crash it opens with or without a size, keeping its data.
  harness = await openHarness(await profile.crashAndRelaunch(), 'opfs');
  expect(await harness.call('open', { name: 'leftover', size: 1 * MiB })).toEqual({ size: 4 * MiB, readOnly: false });
  expect(await harness.call('mismatch', { name: 'leftover', offset: 512, length: 4096, seed: 62 })).toBe(-1);
});

test('an 8 GiB sparse disk: the first, middle and last sectors', async ({ page }) => {
  let harness = await openHarness(page, 'opfs');
  const size = 8 * GiB;
  const sectors = [0, size / 2, size - 512];
  await harness.call('open', { name: 'eight', size });
  for (const [i, offset] of sectors.entries()) await harness.call('write', { name: 'eight', offset, length: 512, seed: 70 + i });
  await harness.call('flush', { name: 'eight' });
  await page.reload();
  harness = await openHarness(page, 'opfs');
  expect(await harness.call('open', { name: 'eight' })).toEqual({ size, readOnly: false });
  for (const [i, offset] of sectors.entries()) {
    expect(await harness.call('mismatch', { name: 'eight', offset, length: 512, seed: 70 + i })).toBe(-1);
  }
  // Their neighbours were never written.
  expect(await harness.call('mismatch', { name: 'eight', offset: size / 2 - 512, length: 512, seed: 0 })).toBe(-1);
});

test('disks are listed and deleted; a missing disk without a size is a typed not-found error', async ({ page }) => {
  const harness = await openHarness(page, 'opfs');
  expect(await harness.attempt('open', { name: 'nothing-here' })).toMatchObject({ name: 'StorageError', code: 'not-found' });
  expect(await harness.call('list')).toEqual([]);
  await harness.call('open', { name: 'b', size: 2 * MiB });
  await harness.call('open', { name: 'a', size: 1 * MiB });
  await harness.call('close', { name: 'a' });
  await harness.call('close', { name: 'b' });
  expect(await harness.call('list')).toEqual([
    { name: 'a', size: 1 * MiB },
    { name: 'b', size: 2 * MiB },
  ]);
  await harness.call('delete', { name: 'a' });
  expect(await harness.call('list')).toEqual([{ name: 'b', size: 2 * MiB }]);
  expect(await harness.attempt('open', { name: 'a' })).toMatchObject({ code: 'not-found' });
  expect(await harness.attempt('delete', { name: 'a' })).toMatchObject({ code: 'not-found' });
});

test('a disk larger than the quota is a typed quota-exceeded error and leaves nothing behind', async ({ page }) => {
  const harness = await openHarness(page, 'opfs');
  // Chromium grants an origin its usage plus about 10 GiB (DESIGN.md).
  const error = await harness.attempt('open', { name: 'too-big', size: 256 * GiB });
  expect(error).toMatchObject({ name: 'StorageError', code: 'quota-exceeded' });
  expect(await harness.call('list')).toEqual([]);
  // The quota error left no lock behind either: the name is free again.
  await harness.call('open', { name: 'too-big', size: MiB });
});
