// Storage at its limits, through the whole device path (the guest harness:
// createDisk's worker host, the guest driver in a vCPU worker):
// - an 8 GiB sparse overlay — an 8 GiB OPFS base under an OPFS or an
//   IndexedDB top — written and read back at its first, middle and last
//   sectors, across a reload, with the base's sectors beside them intact
//   (OPFS and IndexedDB disks have the same test in opfs.spec.ts and
//   indexeddb.spec.ts);
// - quota exhaustion with CDP's Storage.overrideQuotaForOrigin. IndexedDB:
//   the guest gets IOERR (the write-back's QuotaExceededError, as a FLUSH or
//   a back-pressured write), the host a typed 'quota-exceeded' error, the
//   device keeps serving, and after a SIGKILL everything flushed before is
//   there. OPFS: a disk's file is allocated whole when it is made, so no
//   guest write inside it ever asks for quota (the test writes the disk
//   full under a quota it could not grow by); the quota is met by growing
//   the disk (Disk.resize) or making another, which fail with the typed
//   error and change nothing, and nothing flushed is lost.

import { expect, test } from './fixtures.ts';
import { openHarness, type Harness } from './harness.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SECTOR = 512;

async function attach(h: Harness, backend: object) {
  return h.call<{ capacitySectors: number }>('attach', { backend });
}

for (const top of ['opfs', 'indexeddb'] as const) {
  test(`an 8 GiB sparse overlay (OPFS base, ${top === 'opfs' ? 'OPFS' : 'IndexedDB'} top): the first, middle and last sectors`, async ({ page, profile }) => {
    const size = 8 * GiB;
    // An OPFS file counts its whole size against the quota (about usage + 10 GiB by default):
    // an 8 GiB base and an 8 GiB OPFS top need more, so the origin gets 32 GiB.
    let h = await openHarness(page, 'guest');
    const cdp = await profile.context.newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: new URL(page.url()).origin, quotaSize: 32 * GiB });
    const sectors = [0, size / 2 / SECTOR, size / SECTOR - 1];
    // The base: an 8 GiB OPFS disk with known sectors just after each of the overlay's.
    await attach(h, { kind: 'opfs', name: 'base8', directory: 'e2e', size });
    for (const [i, s] of sectors.entries()) {
      if (s + 1 < size / SECTOR) await h.call('writePattern', { sector: s + 1, bytes: SECTOR, seed: 300 + i });
    }
    await h.call('writePattern', { sector: sectors[2]! - 1, bytes: SECTOR, seed: 310 });
    await h.call('flush');
    await h.call('close');

    const overlay = {
      kind: 'overlay',
      base: { kind: 'opfs', name: 'base8', directory: 'e2e', readOnly: true },
      top: top === 'opfs' ? { kind: 'opfs', name: 'top8', directory: 'e2e' } : { kind: 'indexeddb', name: 'top8' },
    };
    expect((await attach(h, overlay)).capacitySectors).toBe(size / SECTOR);
    for (const [i, s] of sectors.entries()) await h.call('writePattern', { sector: s, bytes: SECTOR, seed: 320 + i });
    await h.call('flush');
    await h.call('close');

    await page.reload();
    h = await openHarness(page, 'guest');
    expect((await attach(h, overlay)).capacitySectors).toBe(size / SECTOR);
    for (const [i, s] of sectors.entries()) {
      expect(await h.call('checkPattern', { sector: s, bytes: SECTOR, seed: 320 + i })).toBe(-1);
      // The base's sectors beside them still read through (same 64 KiB overlay block: a copy-up kept them).
      if (s + 1 < size / SECTOR) expect(await h.call('checkPattern', { sector: s + 1, bytes: SECTOR, seed: 300 + i })).toBe(-1);
    }
    expect(await h.call('checkPattern', { sector: sectors[2]! - 1, bytes: SECTOR, seed: 310 })).toBe(-1);
    // A sector neither wrote is zero.
    const zero = await h.call<string>('readBase64', { sector: size / 4 / SECTOR, bytes: SECTOR });
    expect(Buffer.from(zero, 'base64').every((b) => b === 0)).toBe(true);
    await h.call('close');
  });
}

test('IndexedDB quota exhaustion through the device: IOERR for the guest, a typed error on the host, nothing flushed lost', async ({ page, profile }) => {
  let h = await openHarness(page, 'guest');
  // Set before the disk's database is opened (Chromium applies it to databases opened afterwards).
  const cdp = await profile.context.newCDPSession(page);
  const origin = new URL(page.url()).origin;
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 8 * MiB });
  await attach(h, { kind: 'indexeddb', name: 'quota', size: 256 * MiB });
  await h.call('writePattern', { sector: 0, bytes: MiB, seed: 80 });
  await h.call('flush');
  // Then 1 MiB writes, each followed by a FLUSH, until the guest sees an error.
  let flushed = 0;
  let failure: unknown = null;
  for (let k = 0; k < 64 && failure === null; k++) {
    const sector = (8 * MiB + k * MiB) / SECTOR;
    failure = (await h.attempt('writePattern', { sector, bytes: MiB, seed: 1000 + k })) ?? (await h.attempt('flush'));
    if (failure === null) flushed++;
  }
  // The guest's request completed with VIRTIO_BLK_S_IOERR (1) — a FLUSH, or a write waiting for write-back room.
  expect(failure).toMatchObject({ message: expect.stringMatching(/(flush|write) failed with status 1$/) });
  expect(flushed).toBeLessThan(64);
  // The device counts it (its stats reach the page after the batch), and the host got the typed error.
  await expect.poll(async () => (await h.call<{ ioErrors: number }>('stats')).ioErrors).toBeGreaterThan(0);
  expect(await h.call('storageErrors')).toContainEqual(expect.objectContaining({ name: 'StorageError', code: 'quota-exceeded' }));
  // The device keeps serving: what was flushed reads back now.
  expect(await h.call('checkPattern', { sector: 0, bytes: MiB, seed: 80 })).toBe(-1);
  expect(await h.call('needsReset')).toEqual([]);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin });

  h = await openHarness(await profile.crashAndRelaunch(), 'guest');
  await attach(h, { kind: 'indexeddb', name: 'quota' });
  expect(await h.call('checkPattern', { sector: 0, bytes: MiB, seed: 80 })).toBe(-1);
  for (let k = 0; k < flushed; k++) {
    expect(await h.call('checkPattern', { sector: (8 * MiB + k * MiB) / SECTOR, bytes: MiB, seed: 1000 + k })).toBe(-1);
  }
});

test('OPFS quota exhaustion: writes inside the disk never need quota; growing it or making another is the typed error, nothing flushed lost', async ({ page, profile }) => {
  let h = await openHarness(page, 'guest');
  await attach(h, { kind: 'opfs', name: 'quota', directory: 'e2e', size: 8 * MiB });
  await h.call('writePattern', { sector: 0, bytes: MiB, seed: 90 });
  await h.call('flush');
  const cdp = await profile.context.newCDPSession(page);
  const origin = new URL(page.url()).origin;
  const { usage } = await cdp.send('Storage.getUsageAndQuota', { origin });
  // Room for 4 MiB more than the origin uses now.
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: usage + 4 * MiB });
  // The whole disk written, then flushed: no request asks for quota.
  for (let k = 1; k < 8; k++) await h.call('writePattern', { sector: (k * MiB) / SECTOR, bytes: MiB, seed: 90 + k });
  await h.call('flush');
  expect((await h.call<{ ioErrors: number }>('stats')).ioErrors).toBe(0);
  // Growing by 64 MiB needs quota: the typed error, and the disk keeps its size.
  expect(await h.attempt('resize', { sizeBytes: 72 * MiB })).toMatchObject({ name: 'StorageError', code: 'quota-exceeded' });
  expect(await h.call('capacity')).toBe((8 * MiB) / SECTOR);
  expect(await h.call('checkPattern', { sector: (7 * MiB) / SECTOR, bytes: MiB, seed: 97 })).toBe(-1);
  await h.call('close');
  // A second disk larger than the room is the typed error too.
  expect(await h.attempt('attach', { backend: { kind: 'opfs', name: 'quota-2', directory: 'e2e', size: 64 * MiB } })).toMatchObject({ code: 'quota-exceeded' });
  await cdp.send('Storage.overrideQuotaForOrigin', { origin });

  h = await openHarness(await profile.crashAndRelaunch(), 'guest');
  expect((await attach(h, { kind: 'opfs', name: 'quota', directory: 'e2e' })).capacitySectors).toBe((8 * MiB) / SECTOR);
  for (let k = 0; k < 8; k++) expect(await h.call('checkPattern', { sector: (k * MiB) / SECTOR, bytes: MiB, seed: 90 + k })).toBe(-1);
});
