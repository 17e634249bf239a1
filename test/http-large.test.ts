// Images over 4 GiB through both HTTP forms: offsets past 2^32 must survive
// every step — Range headers and Content-Range parsing, the block index, the
// chunk index, and the device's sector arithmetic. The image is sparse
// (SparseBytes: zeroes except a few extents, one of them straddling the
// 4 GiB line), served by the fault server; its chunked form is packed by the
// real pack core, which stores no all-zero chunk.

import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HttpChunkedBackend } from '../src/backends/http-chunked.ts';
import { HttpRangeBackend } from '../src/backends/http-range.ts';
import type { HttpImageBackend } from '../src/backends/http-image.ts';
import type { ChunkedManifest } from '../src/pack/manifest.ts';
import { pattern } from './contract/backend-contract.ts';
import { read, same } from './support/http-assert.ts';
import { FaultServer, SparseBytes } from './support/http-server.ts';
import { makeRig } from './support/rig.ts';

const MiB = 1024 * 1024;
const FOUR_GIB = 2 ** 32;
const SIZE = FOUR_GIB + 40 * MiB;
const CHUNK = 1 * MiB;
const FAST = { retries: 2, backoffMs: 1, requestTimeoutMs: 10_000, readAheadBytes: 0 };

/** Where the image has data: the start, across the 4 GiB line, past it at odd offsets, and its last bytes. */
const extents = [
  { offset: 0, bytes: pattern(64 * 1024, 1) },
  { offset: FOUR_GIB - 3000, bytes: pattern(70 * 1024, 2) },
  { offset: FOUR_GIB + 17 * MiB + 123, bytes: pattern(10 * 1024, 3) },
  { offset: SIZE - 5000, bytes: pattern(5000, 4) },
];
const image = new SparseBytes(SIZE, extents);

/** Reads that check each extent with a margin of zeroes around it, plus a hole past 4 GiB. */
const probes: Array<[offset: number, length: number]> = [
  [FOUR_GIB - 8192, 80 * 1024],
  [FOUR_GIB, 4096],
  [FOUR_GIB + 17 * MiB, 16 * 1024],
  [FOUR_GIB + 30 * MiB, 64 * 1024],
  [SIZE - 8192, 8192],
];

let server: FaultServer;
let manifest: ChunkedManifest;

beforeAll(async () => {
  server = await FaultServer.start();
  server.putImage('large', image);
  manifest = await server.putChunked('large', image, { chunkSize: CHUNK });
}, 120_000);
afterAll(() => server.close());

async function checkProbes(backend: HttpImageBackend): Promise<void> {
  expect(backend.size).toBe(SIZE);
  for (const [offset, length] of probes) same(await read(backend, offset, length), image.subarray(offset, offset + length));
}

describe('images over 4 GiB', () => {
  test('Range form: the size comes from Content-Range; reads past 4 GiB ask for and get the right bytes', async () => {
    const backend = await HttpRangeBackend.open(server.imageUrl('large'), FAST);
    const from = server.log.length;
    await checkProbes(backend);
    const ranges = server.log.slice(from).map((r) => r.range!);
    // e.g. bytes=4294967296-4295032831: the offsets went out whole, not wrapped at 2^32.
    expect(ranges.some((r) => Number(/^bytes=(\d+)-/.exec(r)![1]) > FOUR_GIB)).toBe(true);
    expect(ranges.every((r) => /^bytes=\d+-\d+$/.test(r))).toBe(true);
    backend.close();
  });

  test('chunked form: zero chunks are not stored or fetched; chunks past 4 GiB read right', async () => {
    expect(manifest.chunks).toHaveLength(Math.ceil(SIZE / CHUNK));
    const stored = manifest.chunks.flatMap((c, i) => (c === null ? [] : [i]));
    // 0, the two either side of the 4 GiB line, one at 4 GiB + 17 MiB, and the last.
    expect(stored).toEqual([0, 4095, 4096, 4096 + 17, 4096 + 39]);
    const backend = await HttpChunkedBackend.open(server.manifestUrl('large'), FAST);
    const from = server.log.length;
    await checkProbes(backend);
    const fetched = server.log.slice(from).filter((r) => r.path.startsWith('/chunked/large/chunks/'));
    // The probes touch chunks 4095, 4096, 4113, 4126 (a hole: no request) and 4135.
    expect(fetched).toHaveLength(4);
    backend.close();
  });

  test('through the device: sectors past 2^23 (4 GiB) reach both backends and come back right', async () => {
    for (const open of [
      () => HttpRangeBackend.open(server.imageUrl('large'), FAST),
      () => HttpChunkedBackend.open(server.manifestUrl('large'), FAST),
    ]) {
      const backend = await open();
      const { driver } = await makeRig({ backend });
      expect(driver.capacitySectors).toBe(SIZE / 512);
      const sector = (FOUR_GIB - 4096) / 512;
      expect(await driver.read(sector, 72 * 1024)).toEqual(image.subarray(FOUR_GIB - 4096, FOUR_GIB + 68 * 1024));
      const last = SIZE / 512 - 16;
      expect(await driver.read(last, 8192)).toEqual(image.subarray(SIZE - 8192, SIZE));
      backend.close();
    }
  });
});
