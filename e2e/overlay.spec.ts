// The copy-on-write overlay in Chromium (persistent profile, e2e/fixtures.ts):
// the shared backend contract over memory, OPFS and IndexedDB (base and top
// in the same storage, opened through the 'overlay' BackendSpec), then what
// only a browser can show — the top's data surviving a reload and a SIGKILL
// of the browser, a zeroed block that stays zero over a non-zero base, the
// typed base-mismatch error across the worker boundary, and reset.

import { backendContract } from '../test/contract/backend-contract.ts';
import { OVERLAY_CONFIGS, capabilityProbe } from './harness/overlay-configs.ts';
import { expect, test } from './fixtures.ts';
import { openHarness } from './harness.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 64 * KiB;

for (const config of OVERLAY_CONFIGS) {
  test.describe(`backend contract: overlay over ${config}`, () => {
    // Only the cases that apply are registered (no skips); the count is checked.
    const cases = backendContract.filter((c) => c.applies(capabilityProbe(config)));
    test('enough contract cases apply', () => expect(cases.length).toBeGreaterThanOrEqual(16));
    for (const c of cases) {
      test(c.name, async ({ page }) => {
        const harness = await openHarness(page, 'overlay');
        expect(await harness.attempt('contractRun', { config, name: c.name })).toBeNull();
      });
    }
  });
}

/** Base and top specs for storage `kind`: a 4 MiB base of pattern 7 and an overlay over it. */
function specs(kind: 'opfs' | 'indexeddb', tag: string, baseIdentity?: string) {
  const disk = (name: string, extra: object) => (kind === 'opfs' ? { kind, name, directory: 'e2e-overlay', ...extra } : { kind, name: `e2e-overlay-${name}`, ...extra });
  return {
    base: { ...disk(`${tag}-base`, { size: 4 * MiB }), size: 4 * MiB },
    overlay: { kind: 'overlay', base: disk(`${tag}-base`, { readOnly: true }), top: disk(`${tag}-top`, {}), ...(baseIdentity ? { baseIdentity } : {}) },
  };
}

for (const kind of ['opfs', 'indexeddb'] as const) {
  test(`overlay over ${kind}: the top's data and a zeroed block survive a reload and a SIGKILL; the base is untouched`, async ({ page, profile }) => {
    let harness = await openHarness(page, 'overlay');
    const { base, overlay } = specs(kind, 'persist');
    await harness.call('makeDisk', { spec: base, seed: 7 });
    expect(await harness.call('open', { name: 'o', spec: overlay })).toMatchObject({ size: 4 * MiB, readOnly: false, blockSize: BLOCK });
    // A partial write (copy-up), a whole block zeroed, a discard of two blocks.
    await harness.call('write', { name: 'o', offset: BLOCK + 512, length: 4096, seed: 8 });
    await harness.call('writeZeroes', { name: 'o', offset: 3 * BLOCK, length: BLOCK });
    await harness.call('discard', { name: 'o', offset: 10 * BLOCK, length: 2 * BLOCK });
    await harness.call('flush', { name: 'o' });
    expect(await harness.call('state', { name: 'o' })).toMatchObject({ topBlocks: 1, zeroBlocks: 3, mapDirty: false });

    const check = async () => {
      expect(await harness.call('mismatch', { name: 'o', offset: BLOCK + 512, length: 4096, seed: 8 })).toBe(-1);
      // The rest of the copied-up block is the base's.
      expect(await harness.call('mismatch', { name: 'o', offset: BLOCK, length: 512, seed: 7, from: BLOCK })).toBe(-1);
      expect(await harness.call('mismatch', { name: 'o', offset: 3 * BLOCK, length: BLOCK, seed: 0 })).toBe(-1);
      expect(await harness.call('mismatch', { name: 'o', offset: 10 * BLOCK, length: 2 * BLOCK, seed: 0 })).toBe(-1);
      expect(await harness.call('mismatch', { name: 'o', offset: 4 * BLOCK, length: 6 * BLOCK, seed: 7, from: 4 * BLOCK })).toBe(-1);
    };
    // A reload ends the worker without close(): only FLUSH made this durable.
    await page.reload();
    harness = await openHarness(page, 'overlay');
    await harness.call('open', { name: 'o', spec: overlay });
    await check();
    await harness.call('write', { name: 'o', offset: 20 * BLOCK, length: 3 * BLOCK, seed: 9 });
    await harness.call('flush', { name: 'o' });

    harness = await openHarness(await profile.crashAndRelaunch(), 'overlay');
    await harness.call('open', { name: 'o', spec: overlay });
    await check();
    expect(await harness.call('mismatch', { name: 'o', offset: 20 * BLOCK, length: 3 * BLOCK, seed: 9 })).toBe(-1);
    await harness.call('close', { name: 'o' });
    // The base itself never changed: an overlay reset shows it whole.
    await harness.call('open', { name: 'o', spec: overlay });
    await harness.call('reset', { name: 'o' });
    expect(await harness.call('mismatch', { name: 'o', offset: 0, length: 4 * MiB, seed: 7 })).toBe(-1);
  });

  test(`overlay over ${kind}: a top opened over a different base is the typed base-mismatch error naming both`, async ({ page }) => {
    const harness = await openHarness(page, 'overlay');
    const first = specs(kind, 'mismatch', 'image-v1');
    await harness.call('makeDisk', { spec: first.base, seed: 11 });
    await harness.call('open', { name: 'o', spec: first.overlay });
    await harness.call('write', { name: 'o', offset: 0, length: 4096, seed: 12 });
    await harness.call('close', { name: 'o' });
    const error = await harness.attempt('open', { name: 'o', spec: specs(kind, 'mismatch', 'image-v2').overlay });
    expect(error).toMatchObject({ name: 'StorageError', code: 'base-mismatch' });
    expect(error!.message).toContain('"image-v1"');
    expect(error!.message).toContain('"image-v2"');
    // The refused open released both disks and changed nothing.
    await harness.call('open', { name: 'o', spec: first.overlay });
    expect(await harness.call('mismatch', { name: 'o', offset: 0, length: 4096, seed: 12 })).toBe(-1);
  });
}
