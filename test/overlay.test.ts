// The copy-on-write overlay in Node over memory backends: the shared backend
// contract (base data from the case, an empty top), then what only an overlay
// promises — reads merged in runs, copy-up, zeroed blocks that never read the
// base again, the base-mismatch error, reset, commit and export. The model
// and crash tests are test/overlay-model.test.ts; the Chromium runs over
// OPFS and IndexedDB are e2e/overlay.spec.ts.

import { describe, expect, test } from 'vitest';
import { StorageError, type BlockBackend } from '../src/backends/backend.ts';
import { MemoryBackend } from '../src/backends/memory.ts';
import { OverlayBackend } from '../src/backends/overlay.ts';
import { overlayLayout } from '../src/backends/overlay-header.ts';
import { openBackend } from '../src/host/browser/open-backend.ts';
import { exportStream } from '../src/transfer/export.ts';
import { memoryOverlayFactory } from '../e2e/harness/overlay-factories.ts';
import { backendContract, pattern } from './contract/backend-contract.ts';

const KiB = 1024;

for (const blockSize of [4 * KiB, 64 * KiB]) {
  describe(`backend contract: overlay over memory, ${blockSize / KiB} KiB blocks`, () => {
    const factory = memoryOverlayFactory(blockSize);
    test('every contract case is either run or declared not applicable', () => {
      expect(backendContract.filter((c) => c.applies(factory)).length).toBeGreaterThanOrEqual(16);
    });
    for (const c of backendContract) {
      if (c.applies(factory)) test(c.name, () => c.run(factory));
    }
  });
}

/** A base that counts its reads, to see runs merged. */
class CountingBase extends MemoryBackend {
  reads: Array<[number, number]> = [];
  override read(offset: number, dst: Uint8Array): void {
    this.reads.push([offset, dst.length]);
    super.read(offset, dst);
  }
}

async function bytes(b: BlockBackend, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await b.read(offset, out);
  return out;
}

/** The top's bytes as they are now, as a new disk: what a crash at this moment would leave of a memory top. */
function copyOf(top: MemoryBackend): MemoryBackend {
  return new MemoryBackend(top.size, { data: top.bytes });
}

async function overlayOf(base: BlockBackend, top = new MemoryBackend(0), identity = 'base-v1') {
  const overlay = await OverlayBackend.open({ base, top, blockSize: 4 * KiB, baseIdentity: identity });
  return { overlay, top };
}

describe('overlay behaviour', () => {
  test('a read spanning base, top and zero blocks makes one call per run, not per block', async () => {
    const data = pattern(64 * KiB, 1);
    const base = new CountingBase(64 * KiB, { data, readOnly: true });
    const { overlay } = await overlayOf(base);
    await overlay.write(4 * 4 * KiB, pattern(2 * 4 * KiB, 2)); // blocks 4-5 in the top
    await overlay.writeZeroes(8 * 4 * KiB, 4 * KiB, false); // block 8 zero
    base.reads = [];
    const got = await bytes(overlay, 0, 64 * KiB);
    const expected = data.slice();
    expected.set(pattern(8 * KiB, 2), 16 * KiB);
    expected.fill(0, 32 * KiB, 36 * KiB);
    expect(got).toEqual(expected);
    // Blocks 0-3 and 6-7 and 9-15: three base runs.
    expect(base.reads).toEqual([
      [0, 16 * KiB],
      [24 * KiB, 8 * KiB],
      [36 * KiB, 28 * KiB],
    ]);
    expect(overlay.state).toMatchObject({ blocks: 16, baseBlocks: 13, topBlocks: 2, zeroBlocks: 1 });
  });

  test('a read over a run of top blocks is one top read of the whole run, wherever it starts and ends', async () => {
    const data = pattern(64 * KiB, 5);
    const base = new CountingBase(64 * KiB, { data, readOnly: true });
    const top = new CountingBase(0);
    const { overlay } = await overlayOf(base, top);
    await overlay.write(0, pattern(40 * KiB, 6)); // blocks 0-9 in the top
    await overlay.write(48 * KiB, pattern(16 * KiB, 7)); // blocks 12-15
    base.reads = [];
    top.reads = [];
    const got = await bytes(overlay, 2 * KiB, 60 * KiB);
    const expected = data.slice();
    expected.set(pattern(40 * KiB, 6), 0);
    expected.set(pattern(16 * KiB, 7), 48 * KiB);
    expect(got).toEqual(expected.subarray(2 * KiB, 62 * KiB));
    const slot = overlayLayout(64 * KiB, 4 * KiB).dataOffset;
    // Blocks 0-9 (from 2 KiB in), 12-15 (up to 62 KiB): two top reads, one base read between.
    expect(top.reads).toEqual([
      [slot + 2 * KiB, 38 * KiB],
      [slot + 48 * KiB, 14 * KiB],
    ]);
    expect(base.reads).toEqual([[40 * KiB, 8 * KiB]]);
  });

  test('a partial write copies its block up from the base; the base is never written', async () => {
    const data = pattern(32 * KiB, 3);
    const base = new MemoryBackend(32 * KiB, { data, readOnly: true });
    const { overlay } = await overlayOf(base);
    await overlay.write(4 * KiB + 1000, pattern(100, 4));
    const expected = data.slice();
    expected.set(pattern(100, 4), 4 * KiB + 1000);
    expect(await bytes(overlay, 0, 32 * KiB)).toEqual(expected);
    expect(base.bytes).toEqual(data);
    expect(overlay.state.topBlocks).toBe(1);
  });

  test('a zeroed block never reads base data again, also after a partial write into it and a reopen', async () => {
    const data = pattern(32 * KiB, 5);
    const base = new MemoryBackend(32 * KiB, { data, readOnly: true });
    const { overlay, top } = await overlayOf(base);
    await overlay.discard(8 * KiB, 8 * KiB); // blocks 2-3
    await overlay.write(8 * KiB + 512, pattern(512, 6)); // part of block 2
    await overlay.close();
    const again = await OverlayBackend.open({ base, top, baseIdentity: 'base-v1' });
    const expected = data.slice();
    expected.fill(0, 8 * KiB, 16 * KiB);
    expected.set(pattern(512, 6), 8 * KiB + 512);
    expect(await bytes(again, 0, 32 * KiB)).toEqual(expected);
    expect(again.state).toMatchObject({ topBlocks: 1, zeroBlocks: 1 });
  });

  test('unflushed map changes are not on disk; flushed ones are', async () => {
    const base = new MemoryBackend(32 * KiB, { data: pattern(32 * KiB, 7), readOnly: true });
    const { overlay, top } = await overlayOf(base);
    await overlay.write(0, pattern(4 * KiB, 8));
    expect(overlay.state.mapDirty).toBe(true);
    // The top as a crash would leave it before FLUSH: the map still says "base".
    const before = await OverlayBackend.open({ base, top: copyOf(top), baseIdentity: 'base-v1' });
    expect(await bytes(before, 0, 4 * KiB)).toEqual(pattern(4 * KiB, 7));
    await overlay.flush();
    expect(overlay.state.mapDirty).toBe(false);
    const after = await OverlayBackend.open({ base, top: copyOf(top), baseIdentity: 'base-v1' });
    expect(await bytes(after, 0, 4 * KiB)).toEqual(pattern(4 * KiB, 8));
  });

  test('opening a top over a different base is a base-mismatch error naming both identities and sizes', async () => {
    const base = new MemoryBackend(32 * KiB, { data: pattern(32 * KiB, 9), readOnly: true });
    const { overlay, top } = await overlayOf(base, new MemoryBackend(0), 'image-etag-"abc"');
    await overlay.write(0, pattern(4 * KiB, 10));
    await overlay.close();
    const other = await OverlayBackend.open({ base, top, baseIdentity: 'image-etag-"def"' }).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(StorageError);
    expect(other).toMatchObject({ code: 'base-mismatch' });
    expect((other as Error).message).toContain('image-etag-"abc"');
    expect((other as Error).message).toContain('image-etag-"def"');
    const bigger = new MemoryBackend(64 * KiB, { readOnly: true });
    const sized = await OverlayBackend.open({ base: bigger, top, baseIdentity: 'image-etag-"abc"' }).catch((e: unknown) => e);
    expect(sized).toMatchObject({ code: 'base-mismatch' });
    expect((sized as Error).message).toMatch(/32768 bytes.*65536 bytes/);
    // The top was not touched by the refused opens.
    const same = await OverlayBackend.open({ base, top, baseIdentity: 'image-etag-"abc"' });
    expect(await bytes(same, 0, 4 * KiB)).toEqual(pattern(4 * KiB, 10));
  });

  test("a base's own identity is used (HTTP validators), and a base without one needs baseIdentity", async () => {
    const base = Object.assign(new MemoryBackend(16 * KiB, { readOnly: true }), {
      identity: { size: 16 * KiB, etag: '"v1"', lastModified: null },
    });
    const top = new MemoryBackend(0);
    const overlay = await OverlayBackend.open({ base, top });
    expect(overlay.baseIdentity).toBe('etag "v1"');
    await overlay.close();
    const moved = Object.assign(new MemoryBackend(16 * KiB, { readOnly: true }), {
      identity: { size: 16 * KiB, etag: '"v2"', lastModified: null },
    });
    await expect(OverlayBackend.open({ base: moved, top })).rejects.toMatchObject({ code: 'base-mismatch' });
    await expect(OverlayBackend.open({ base: new MemoryBackend(16 * KiB), top: new MemoryBackend(0) })).rejects.toMatchObject({
      code: 'unsupported',
    });
  });

  test('a top that is some other disk is corrupt, not silently reused', async () => {
    const base = new MemoryBackend(16 * KiB, { readOnly: true });
    const stranger = new MemoryBackend(1 << 20, { data: pattern(4096, 11) });
    await expect(OverlayBackend.open({ base, top: stranger, baseIdentity: 'x' })).rejects.toMatchObject({ code: 'corrupt' });
  });

  test('reset drops the top: the base shows through again, durably', async () => {
    const data = pattern(32 * KiB, 12);
    const base = new MemoryBackend(32 * KiB, { data, readOnly: true });
    const { overlay, top } = await overlayOf(base);
    await overlay.write(0, pattern(20 * KiB, 13));
    await overlay.writeZeroes(24 * KiB, 8 * KiB, true);
    await overlay.flush();
    await overlay.reset();
    expect(await bytes(overlay, 0, 32 * KiB)).toEqual(data);
    expect(overlay.state).toMatchObject({ baseBlocks: 8, topBlocks: 0, zeroBlocks: 0, mapDirty: false });
    const crashed = await OverlayBackend.open({ base, top: copyOf(top), baseIdentity: 'base-v1' });
    expect(await bytes(crashed, 0, 32 * KiB)).toEqual(data);
  });

  test('commit writes the merged image into a writable base, then resets; a read-only base refuses', async () => {
    const data = pattern(40 * KiB + 512, 14);
    const base = new MemoryBackend(data.length, { data });
    const { overlay } = await overlayOf(base);
    await overlay.write(1000, pattern(9000, 15));
    await overlay.writeZeroes(20 * KiB, 12 * KiB, false);
    await overlay.write(data.length - 300, pattern(300, 16));
    const merged = await bytes(overlay, 0, data.length);
    await overlay.commit();
    expect(base.bytes).toEqual(merged);
    expect(overlay.state).toMatchObject({ topBlocks: 0, zeroBlocks: 0 });
    expect(await bytes(overlay, 0, data.length)).toEqual(merged);

    const ro = await overlayOf(new MemoryBackend(16 * KiB, { readOnly: true }));
    await expect(ro.overlay.commit()).rejects.toMatchObject({ code: 'read-only' });
  });

  test('export streams the merged image', async () => {
    const data = pattern(100 * KiB + 512, 17);
    const base = new MemoryBackend(data.length, { data, readOnly: true });
    const { overlay } = await overlayOf(base);
    await overlay.write(50 * KiB, pattern(30 * KiB, 18));
    await overlay.discard(0, 8 * KiB);
    const expected = await bytes(overlay, 0, data.length);
    const parts: Uint8Array[] = [];
    for await (const part of overlay.exportStream(16 * KiB) as unknown as AsyncIterable<Uint8Array>) parts.push(part);
    expect(parts.length).toBe(Math.ceil(data.length / (16 * KiB)));
    const joined = new Uint8Array(data.length);
    let at = 0;
    for (const p of parts) {
      joined.set(p, at);
      at += p.length;
    }
    expect(at).toBe(data.length);
    expect(joined).toEqual(expected);
  });

  test('allocated ranges: top blocks, what the base reports for base blocks, never zeroed blocks', async () => {
    const base = Object.assign(new MemoryBackend(64 * KiB, { data: pattern(64 * KiB, 21), readOnly: true }), {
      // A base that knows it holds data only in [8 KiB, 24 KiB).
      allocatedRanges: (offset: number, length: number): Array<[number, number]> => {
        const s = Math.max(offset, 8 * KiB);
        const e = Math.min(offset + length, 24 * KiB);
        return s < e ? [[s, e]] : [];
      },
    });
    const { overlay } = await overlayOf(base);
    await overlay.write(40 * KiB, pattern(8 * KiB, 22)); // blocks 10-11 in the top
    await overlay.writeZeroes(16 * KiB, 4 * KiB, false); // block 4 zero, inside the base's data
    expect(await overlay.allocatedRanges(0, 64 * KiB)).toEqual([
      [8 * KiB, 16 * KiB],
      [20 * KiB, 24 * KiB],
      [40 * KiB, 48 * KiB],
    ]);
    expect(await overlay.allocatedRanges(42 * KiB, 1000)).toEqual([[42 * KiB, 42 * KiB + 1000]]);
    // A base that cannot tell counts as allocated everywhere it shows through.
    const plain = await overlayOf(new MemoryBackend(16 * KiB, { readOnly: true }));
    await plain.overlay.discard(0, 4 * KiB);
    expect(await plain.overlay.allocatedRanges(0, 16 * KiB)).toEqual([[4 * KiB, 16 * KiB]]);
  });

  test("the generic exporter (src/transfer) streams an overlay's merged image, skipping its zeroed blocks unread", async () => {
    const data = pattern(3 * 1024 * KiB, 23);
    const base = new MemoryBackend(data.length, { data, readOnly: true });
    const { overlay } = await overlayOf(base);
    await overlay.write(100 * KiB, pattern(50 * KiB, 24));
    await overlay.discard(1024 * KiB, 1024 * KiB);
    const expected = await bytes(overlay, 0, data.length);
    const reads: Array<[number, number]> = [];
    const read = overlay.read.bind(overlay);
    overlay.read = (offset, dst) => (reads.push([offset, dst.length]), read(offset, dst));
    const joined = new Uint8Array(data.length);
    let at = 0;
    for await (const part of exportStream(overlay) as unknown as AsyncIterable<Uint8Array>) {
      joined.set(part, at);
      at += part.length;
    }
    expect(at).toBe(data.length);
    // Buffer.equals: toEqual walks 3 MiB element by element, which takes a minute on a loaded machine.
    expect(Buffer.from(joined).equals(Buffer.from(expected))).toBe(true);
    // The discarded second MiB was not read at all (allocatedRanges said so); the rest was.
    expect(reads.some(([offset, length]) => offset < 2048 * KiB && offset + length > 1024 * KiB)).toBe(false);
    expect(reads.reduce((n, [, length]) => n + length, 0)).toBe(2048 * KiB);
  });

  test('the overlay spec opens through openBackend, and a memory base is pinned by its content', async () => {
    const data = pattern(64 * KiB, 19);
    const overlay = (await openBackend({ kind: 'overlay', base: { kind: 'memory', size: 64 * KiB, data, readOnly: true }, top: { kind: 'memory', size: 0 } })) as OverlayBackend;
    expect(overlay).toBeInstanceOf(OverlayBackend);
    expect(overlay.baseIdentity).toMatch(/^memory:sha256:[0-9a-f]{64}$/);
    expect(overlay.size).toBe(64 * KiB);
    await overlay.write(0, pattern(512, 20));
    expect((await bytes(overlay, 0, 1024)).subarray(512)).toEqual(data.subarray(512, 1024));
  });
});
