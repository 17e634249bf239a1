// The IndexedDB backend in Chromium (persistent profile, e2e/fixtures.ts):
// the shared backend contract, then what only a browser can show — flushed
// data surviving a SIGKILL of the browser, sparse chunks and what the store
// really holds, the bounded write-back cache, the typed in-use error and
// read-only sharing across tabs, creation that a crash cannot half-do, an
// 8 GiB sparse disk, and quota exhaustion.

import { backendContract } from '../test/contract/backend-contract.ts';
import { expect, test } from './fixtures.ts';
import { openHarness } from './harness.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const CHUNK = 256 * KiB;

test.describe('backend contract: IndexedDB', () => {
  for (const c of backendContract) {
    test(c.name, async ({ page }) => {
      const harness = await openHarness(page, 'idb');
      const cases = await harness.call<Array<{ name: string; applies: boolean }>>('contractCases');
      test.skip(!cases.find((x) => x.name === c.name)?.applies, 'not applicable to IndexedDB');
      expect(await harness.attempt('contractRun', { name: c.name })).toBeNull();
    });
  }
});

test('flushed data survives a reload and a SIGKILL of the browser', async ({ page, profile }) => {
  let harness = await openHarness(page, 'idb');
  expect(await harness.call('open', { name: 'persist', size: 8 * MiB })).toEqual({ size: 8 * MiB, readOnly: false, chunkBytes: CHUNK });
  await harness.call('write', { name: 'persist', offset: 3 * MiB + 512, length: 300 * KiB, seed: 41 });
  await harness.call('flush', { name: 'persist' });

  await page.reload();
  harness = await openHarness(page, 'idb');
  expect(await harness.call('open', { name: 'persist' })).toMatchObject({ size: 8 * MiB });
  expect(await harness.call('mismatch', { name: 'persist', offset: 3 * MiB + 512, length: 300 * KiB, seed: 41 })).toBe(-1);
  await harness.call('write', { name: 'persist', offset: 0, length: 4096, seed: 42 });
  await harness.call('flush', { name: 'persist' });

  harness = await openHarness(await profile.crashAndRelaunch(), 'idb');
  await harness.call('open', { name: 'persist' });
  expect(await harness.call('mismatch', { name: 'persist', offset: 0, length: 4096, seed: 42 })).toBe(-1);
  expect(await harness.call('mismatch', { name: 'persist', offset: 3 * MiB + 512, length: 300 * KiB, seed: 41 })).toBe(-1);
});

test('sparse: only written chunks are stored, as exact-size ArrayBuffers; whole zeroed chunks are deleted, partial ones zeroed in place', async ({ page }) => {
  const harness = await openHarness(page, 'idb');
  await harness.call('open', { name: 'sparse', size: 16 * MiB });
  // Chunks 1-3 from a plain buffer, chunk 10 from a view on shared memory (guest RAM).
  await harness.call('write', { name: 'sparse', offset: CHUNK, length: 3 * CHUNK, seed: 50 });
  await harness.call('writeShared', { name: 'sparse', offset: 10 * CHUNK + 1024, length: 4096, seed: 51 });
  await harness.call('flush', { name: 'sparse' });
  const exact = { type: '[object ArrayBuffer]', bytes: CHUNK };
  expect(await harness.call('stored', { name: 'sparse' })).toEqual([
    { key: 1, ...exact },
    { key: 2, ...exact },
    { key: 3, ...exact },
    { key: 10, ...exact },
    { key: 'meta', type: '[object Object]', bytes: -1 },
  ]);

  // Write-zeroes over all of chunk 2 and half of chunk 3; discard all of chunk 10.
  await harness.call('writeZeroes', { name: 'sparse', offset: 2 * CHUNK, length: CHUNK + CHUNK / 2, mayUnmap: false });
  await harness.call('discard', { name: 'sparse', offset: 10 * CHUNK, length: CHUNK });
  await harness.call('flush', { name: 'sparse' });
  expect((await harness.call<Array<{ key: unknown }>>('stored', { name: 'sparse' })).map((s) => s.key)).toEqual([1, 3, 'meta']);
  // What is left reads back right after a reopen (no cache).
  await harness.call('close', { name: 'sparse' });
  await harness.call('open', { name: 'sparse' });
  expect(await harness.call('mismatch', { name: 'sparse', offset: CHUNK, length: CHUNK, seed: 50 })).toBe(-1);
  expect(await harness.call('mismatch', { name: 'sparse', offset: 2 * CHUNK, length: CHUNK + CHUNK / 2, seed: 0 })).toBe(-1);
  expect(await harness.call('mismatch', { name: 'sparse', offset: 10 * CHUNK, length: CHUNK, seed: 0 })).toBe(-1);
  // The untouched half of chunk 3 is the pattern's last half.
  expect(
    await harness.call('mismatch', { name: 'sparse', offset: 3 * CHUNK + CHUNK / 2, length: CHUNK / 2, seed: 50, from: 2 * CHUNK + CHUNK / 2 }),
  ).toBe(-1);
});

test('the write-back cache is bounded: writes beyond it wait for write-back, and everything flushed survives a crash', async ({ page, profile }) => {
  let harness = await openHarness(page, 'idb');
  // A cache of 4 chunks; 40 chunks written without a FLUSH.
  await harness.call('open', { name: 'bounded', size: 64 * MiB, cacheBytes: 4 * CHUNK });
  let maxDirty = 0;
  for (let i = 0; i < 40; i++) {
    await harness.call('write', { name: 'bounded', offset: i * CHUNK, length: CHUNK, seed: 100 + i });
    const state = await harness.call<{ dirtyChunks: number }>('cacheState', { name: 'bounded' });
    maxDirty = Math.max(maxDirty, state.dirtyChunks);
  }
  expect(maxDirty).toBeLessThanOrEqual(4);
  // Back-pressure put most of them in the store before any FLUSH.
  const before = (await harness.call<Array<{ key: unknown }>>('stored', { name: 'bounded' })).filter((s) => typeof s.key === 'number');
  expect(before.length).toBeGreaterThanOrEqual(36);
  // A partial write merges into a chunk that was written back and evicted.
  await harness.call('write', { name: 'bounded', offset: 5 * CHUNK + 4096, length: 512, seed: 200 });
  await harness.call('flush', { name: 'bounded' });
  expect(await harness.call('cacheState', { name: 'bounded' })).toMatchObject({ dirtyChunks: 0, inFlightTransactions: 0 });

  harness = await openHarness(await profile.crashAndRelaunch(), 'idb');
  await harness.call('open', { name: 'bounded' });
  for (let i = 0; i < 40; i++) {
    if (i === 5) continue;
    expect(await harness.call('mismatch', { name: 'bounded', offset: i * CHUNK, length: CHUNK, seed: 100 + i })).toBe(-1);
  }
  expect(await harness.call('mismatch', { name: 'bounded', offset: 5 * CHUNK, length: 4096, seed: 105 })).toBe(-1);
  expect(await harness.call('mismatch', { name: 'bounded', offset: 5 * CHUNK + 4096, length: 512, seed: 200 })).toBe(-1);
});

test('a read larger than the cache reads every chunk (none evicted before it is copied)', async ({ page }) => {
  const harness = await openHarness(page, 'idb');
  await harness.call('open', { name: 'wide', size: 8 * MiB, cacheBytes: 4 * CHUNK });
  await harness.call('write', { name: 'wide', offset: 512, length: 16 * CHUNK, seed: 300 });
  await harness.call('flush', { name: 'wide' });
  await harness.call('close', { name: 'wide' });
  await harness.call('open', { name: 'wide', cacheBytes: 4 * CHUNK });
  expect(await harness.call('mismatch', { name: 'wide', offset: 512, length: 16 * CHUNK, seed: 300 })).toBe(-1);
  // And again, now that some chunks are cached and others are not.
  expect(await harness.call('mismatch', { name: 'wide', offset: 512, length: 16 * CHUNK, seed: 300 })).toBe(-1);
});

test('a second tab gets the typed in-use error; read-only opens share a disk and keep writers out', async ({ page, profile }) => {
  const first = await openHarness(page, 'idb');
  await first.call('open', { name: 'shared', size: 1 * MiB });
  await first.call('write', { name: 'shared', offset: 0, length: 4096, seed: 43 });

  const second = await openHarness(await profile.newPage(), 'idb');
  const writer = await second.attempt('open', { name: 'shared' });
  expect(writer).toMatchObject({ name: 'StorageError', code: 'in-use' });
  expect(writer!.message).toContain('in use by another tab or worker');
  expect(await second.attempt('open', { name: 'shared', readOnly: true })).toMatchObject({ code: 'in-use' });
  expect(await second.attempt('delete', { name: 'shared' })).toMatchObject({ code: 'in-use' });

  // close() flushes: the second tab sees the write.
  await first.call('close', { name: 'shared' });
  expect(await first.call('open', { name: 'shared', readOnly: true })).toMatchObject({ readOnly: true });
  expect(await second.call('open', { name: 'shared', readOnly: true })).toMatchObject({ size: 1 * MiB, readOnly: true });
  expect(await second.call('mismatch', { name: 'shared', offset: 0, length: 4096, seed: 43 })).toBe(-1);
  expect(await second.attempt('write', { name: 'shared', offset: 0, length: 512, seed: 1 })).toMatchObject({ code: 'read-only' });
  const third = await openHarness(await profile.newPage(), 'idb');
  expect(await third.attempt('open', { name: 'shared' })).toMatchObject({ code: 'in-use' });
});

test('a database left by a crash during creation is no disk: not-found, unlisted, and reused when created', async ({ page }) => {
  const harness = await openHarness(page, 'idb');
  await harness.call('plantEmptyDatabase', { name: 'half-made' });
  expect(await harness.attempt('open', { name: 'half-made' })).toMatchObject({ name: 'StorageError', code: 'not-found' });
  expect(await harness.attempt('open', { name: 'half-made', readOnly: true })).toMatchObject({ code: 'not-found' });
  expect(await harness.call('list')).toEqual([]);
  expect(await harness.call('open', { name: 'half-made', size: 4 * MiB })).toMatchObject({ size: 4 * MiB });
  await harness.call('close', { name: 'half-made' });
  expect(await harness.call('list')).toEqual([{ name: 'half-made', size: 4 * MiB, chunkBytes: CHUNK }]);
  await harness.call('delete', { name: 'half-made' });
  expect(await harness.call('list')).toEqual([]);
  expect(await harness.attempt('delete', { name: 'half-made' })).toMatchObject({ code: 'not-found' });
});

test('an 8 GiB sparse disk: the first, middle and last sectors', async ({ page }) => {
  let harness = await openHarness(page, 'idb');
  const size = 8 * GiB;
  const sectors = [0, size / 2, size - 512];
  await harness.call('open', { name: 'eight', size });
  for (const [i, offset] of sectors.entries()) await harness.call('write', { name: 'eight', offset, length: 512, seed: 70 + i });
  await harness.call('flush', { name: 'eight' });
  expect((await harness.call<unknown[]>('stored', { name: 'eight' })).length).toBe(4);
  await page.reload();
  harness = await openHarness(page, 'idb');
  expect(await harness.call('open', { name: 'eight' })).toMatchObject({ size });
  for (const [i, offset] of sectors.entries()) {
    expect(await harness.call('mismatch', { name: 'eight', offset, length: 512, seed: 70 + i })).toBe(-1);
  }
  expect(await harness.call('mismatch', { name: 'eight', offset: size / 2 - 512, length: 512, seed: 0 })).toBe(-1);
});

test('quota exhaustion: the request fails with quota-exceeded (cause QuotaExceededError), and everything flushed before survives', async ({ page, profile }) => {
  let harness = await openHarness(page, 'idb');
  // A quota of 8 MiB for the origin. (Set before the database is opened:
  // Chromium applied it to no database already open in this test.)
  const cdp = await profile.context.newCDPSession(page);
  const origin = new URL(page.url()).origin;
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 8 * MiB });
  await harness.call('open', { name: 'quota', size: 256 * MiB });
  await harness.call('write', { name: 'quota', offset: 0, length: 1 * MiB, seed: 80 });
  await harness.call('flush', { name: 'quota' });
  const result = await harness.call<{ flushedBytes: number; error: { name: string; code: string; cause: string } | null }>('writeUntilError', {
    name: 'quota',
    offset: 8 * MiB,
    step: 1 * MiB,
    limit: 64 * MiB,
  });
  expect(result.error).toEqual(expect.objectContaining({ name: 'StorageError', code: 'quota-exceeded', cause: 'QuotaExceededError' }));
  expect(result.flushedBytes).toBeLessThan(64 * MiB);
  // The next FLUSH still fails while the quota is short: nothing pretends to be durable.
  expect(await harness.attempt('flush', { name: 'quota' })).toMatchObject({ code: 'quota-exceeded' });
  await cdp.send('Storage.overrideQuotaForOrigin', { origin });

  harness = await openHarness(await profile.crashAndRelaunch(), 'idb');
  await harness.call('open', { name: 'quota' });
  expect(await harness.call('mismatch', { name: 'quota', offset: 0, length: 1 * MiB, seed: 80 })).toBe(-1);
  for (let done = 0; done < result.flushedBytes; done += MiB) {
    expect(await harness.call('mismatch', { name: 'quota', offset: 8 * MiB + done, length: MiB, seed: done / MiB + 1000 })).toBe(-1);
  }
});
