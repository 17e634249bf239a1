// The OPFS chunk cache of chunked HTTP images (src/backends/http-chunk-cache.ts)
// in a dedicated worker of Chromium, against the project's fault server on
// another origin. Requests are counted where they arrive — at the server —
// so "fetched nothing" means the network saw nothing, not that a counter in
// the code under test said so.

import { createHash } from 'node:crypto';
import { FaultServer } from '../test/support/http-server.ts';
import { pattern } from '../test/contract/backend-contract.ts';
import { chunkPath, type ChunkedManifest } from '../src/pack/manifest.ts';
import { expect, test } from './fixtures.ts';
import { openHarness, type Harness } from './harness.ts';

const CHUNK = 64 * 1024;
const CHUNKS = 16;
const SIZE = CHUNKS * CHUNK;

let server: FaultServer;
test.beforeAll(async () => {
  server = await FaultServer.start();
});
test.afterAll(() => server.close());

/** An image of 16 chunks whose chunks 4 and 11 are zeroes (not stored, never fetched). */
function image(seed: number): Uint8Array {
  const bytes = pattern(SIZE, seed);
  bytes.fill(0, 4 * CHUNK, 5 * CHUNK);
  bytes.fill(0, 11 * CHUNK, 12 * CHUNK);
  return bytes;
}

let names = 0;
const unique = (what: string): string => `${what}-${Date.now().toString(36)}-${++names}`;

/** Chunk-file requests the server saw for image `name`, from log index `from`. */
function chunkRequests(name: string, from = 0): string[] {
  return server.log.slice(from).filter((r) => r.path.startsWith(`/chunked/${name}/chunks/`)).map((r) => r.path);
}

/** Read the whole image through the open backend: -1 when it hashes like `bytes`, else 0. */
async function readAllMismatch(harness: Harness, bytes: Uint8Array): Promise<number> {
  const read = await harness.call<string>('sha256', { offset: 0, length: bytes.length });
  return read === createHash('sha256').update(bytes).digest('hex') ? -1 : 0;
}

test.describe('OPFS chunk cache', () => {
  test('a second pass fetches nothing; the first stored every non-zero chunk once', async ({ page }) => {
    const name = unique('again');
    const directory = unique('cache');
    const bytes = image(201);
    const manifest = await server.putChunked(name, bytes, { chunkSize: CHUNK });
    const stored = manifest.chunks.filter((c) => c !== null).length;
    const harness = await openHarness(page, 'http-harness');

    expect(await harness.call('openCached', { url: server.manifestUrl(name), maxBytes: 64 << 20, directory })).toEqual({
      size: SIZE,
      cached: true,
    });
    expect(await readAllMismatch(harness, bytes)).toBe(-1);
    expect(chunkRequests(name)).toHaveLength(stored);
    expect(await harness.call('cacheStats')).toMatchObject({ stored, hits: 0, misses: stored, dropped: 0 });
    const files = await harness.call<Array<{ name: string; size: number }>>('cacheFiles', { directory });
    expect(files.map((f) => f.name).sort()).toEqual([...new Set(manifest.chunks.filter((c) => c !== null))].sort());

    // A new backend (as after a reload), same cache folder: the network sees no chunk request.
    const before = server.log.length;
    await harness.call('openCached', { url: server.manifestUrl(name), maxBytes: 64 << 20, directory });
    expect(await readAllMismatch(harness, bytes)).toBe(-1);
    expect(chunkRequests(name, before)).toEqual([]);
    expect(await harness.call('cacheStats')).toMatchObject({ hits: stored, misses: 0, stored: 0 });
  });

  test('chunks with the same content share one cached file, read at once without a request', async ({ page }) => {
    const name = unique('repeated');
    const directory = unique('cache');
    const bytes = image(206);
    for (const c of [6, 7, 8]) bytes.copyWithin(c * CHUNK, 5 * CHUNK, 6 * CHUNK);
    const manifest = await server.putChunked(name, bytes, { chunkSize: CHUNK });
    const distinct = new Set(manifest.chunks.filter((c) => c !== null));
    expect(distinct.size).toBe(CHUNKS - 2 - 3);
    const harness = await openHarness(page, 'http-harness');
    await harness.call('openCached', { url: server.manifestUrl(name), maxBytes: 64 << 20, directory });
    expect(await readAllMismatch(harness, bytes)).toBe(-1);
    expect(await harness.call('cacheFiles', { directory })).toHaveLength(distinct.size);

    // One read over chunks 5..8 asks for the same cached file four times at once.
    const before = server.log.length;
    await harness.call('openCached', { url: server.manifestUrl(name), maxBytes: 64 << 20, directory });
    expect(await readAllMismatch(harness, bytes)).toBe(-1);
    expect(chunkRequests(name, before)).toEqual([]);
    expect(await harness.call('cacheStats')).toMatchObject({ misses: 0, dropped: 0, stored: 0 });
  });

  test('a new version of the image fetches only the chunks that changed', async ({ page }) => {
    const v1 = unique('v1');
    const v2 = unique('v2');
    const directory = unique('cache');
    const old = image(202);
    const next = old.slice();
    next[2 * CHUNK + 7] ^= 0xff;
    next.fill(9, 9 * CHUNK + 100, 9 * CHUNK + 200);
    const m1 = await server.putChunked(v1, old, { chunkSize: CHUNK });
    // The new version is published under another path, gzip-compressed: the cache key is the content's hash.
    const m2 = await server.putChunked(v2, next, { chunkSize: CHUNK, compress: true });
    const changed = m2.chunks.flatMap((c, i) => (c !== m1.chunks[i] ? [i] : []));
    expect(changed).toEqual([2, 9]);
    const harness = await openHarness(page, 'http-harness');
    await harness.call('openCached', { url: server.manifestUrl(v1), maxBytes: 64 << 20, directory });
    expect(await readAllMismatch(harness, old)).toBe(-1);

    const before = server.log.length;
    await harness.call('openCached', { url: server.manifestUrl(v2), maxBytes: 64 << 20, directory });
    expect(await readAllMismatch(harness, next)).toBe(-1);
    expect(chunkRequests(v2, before).sort()).toEqual(changed.map((i) => path(v2, m2, i)).sort());
  });

  test('a damaged cache file is dropped and refetched, never served', async ({ page }) => {
    const name = unique('damaged');
    const directory = unique('cache');
    const bytes = image(203);
    const manifest = await server.putChunked(name, bytes, { chunkSize: CHUNK });
    const harness = await openHarness(page, 'http-harness');
    await harness.call('openCached', { url: server.manifestUrl(name), maxBytes: 64 << 20, directory });
    expect(await readAllMismatch(harness, bytes)).toBe(-1);

    await harness.call('damageCacheFile', { directory, name: manifest.chunks[3]!, how: 'flip' });
    await harness.call('damageCacheFile', { directory, name: manifest.chunks[7]!, how: 'truncate' });
    const before = server.log.length;
    await harness.call('openCached', { url: server.manifestUrl(name), maxBytes: 64 << 20, directory });
    expect(await readAllMismatch(harness, bytes)).toBe(-1);
    expect(chunkRequests(name, before).sort()).toEqual([path(name, manifest, 3), path(name, manifest, 7)].sort());
    expect(await harness.call('cacheStats')).toMatchObject({ dropped: 2, stored: 2 });

    // Refetched and stored again, whole: a third pass fetches nothing.
    const third = server.log.length;
    await harness.call('openCached', { url: server.manifestUrl(name), maxBytes: 64 << 20, directory });
    expect(await readAllMismatch(harness, bytes)).toBe(-1);
    expect(chunkRequests(name, third)).toEqual([]);
  });

  test('the cache stays within its bound, evicting the least recently used', async ({ page }) => {
    const name = unique('bounded');
    const directory = unique('cache');
    const bytes = image(204);
    await server.putChunked(name, bytes, { chunkSize: CHUNK });
    const maxBytes = 5 * CHUNK + 1000;
    const harness = await openHarness(page, 'http-harness');
    await harness.call('openCached', { url: server.manifestUrl(name), maxBytes, directory });
    expect(await readAllMismatch(harness, bytes)).toBe(-1);
    const files = await harness.call<Array<{ size: number }>>('cacheFiles', { directory });
    expect(files.reduce((n, f) => n + f.size, 0)).toBeLessThanOrEqual(maxBytes);
    expect(files).toHaveLength(5);
    const stats = await harness.call<{ stored: number; evicted: number; bytes: number }>('cacheStats');
    expect(stats.stored).toBe(14);
    expect(stats.evicted).toBe(9);
    expect(stats.bytes).toBe(5 * CHUNK);

    // Reopened with a smaller bound, the cache trims what it finds down to it.
    await harness.call('openCached', { url: server.manifestUrl(name), maxBytes: 2 * CHUNK, directory });
    const left = await harness.call<Array<{ size: number }>>('cacheFiles', { directory });
    expect(left.reduce((n, f) => n + f.size, 0)).toBeLessThanOrEqual(2 * CHUNK);
    expect(await readAllMismatch(harness, bytes)).toBe(-1);
  });
});

function path(name: string, manifest: ChunkedManifest, i: number): string {
  return `/chunked/${name}/${chunkPath(manifest.chunks[i]!, manifest.compression)}`;
}
