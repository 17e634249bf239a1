// The HTTP Range backend against the fault server: how it asks (coalescing,
// read-ahead, cache, requests in flight) and what it does with every kind of
// bad answer (retry, IOERR with a reason, a typed error at open). Each test
// is bounded by its timeout and synchronises on what the server logged.

import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest';
import { StorageError } from '../src/backends/backend.ts';
import { HttpRangeBackend, type HttpRangeOptions } from '../src/backends/http-range.ts';
import { BlkRequestType, BlkStatus } from '../src/block/constants.ts';
import { pattern } from './contract/backend-contract.ts';
import { FaultServer, type RequestRecord } from './support/http-server.ts';
import { failure, read, same } from './support/http-assert.ts';
import { makeRig } from './support/rig.ts';

const KiB = 1024;
const BLOCK = 16 * KiB;
const SIZE = 1024 * KiB;
const IMAGE = pattern(SIZE, 77);
/** Fast retries; a deadline long enough that only a stalled answer meets it. */
const FAST: HttpRangeOptions = { blockSize: BLOCK, retries: 3, backoffMs: 1, requestTimeoutMs: 2000, readAheadBytes: 0 };

let server: FaultServer;
let images = 0;
let path = '';
let url = '';

beforeAll(async () => {
  server = await FaultServer.start();
});
afterAll(() => server.close());
afterEach(() => {
  // A rule left over would leak into the next test.
  expect(server.log.filter((r) => r.path === path && r.fault === null && r.status === null)).toEqual([]);
});

/** A fresh image per test, so that log and rules are per test. */
function freshImage(bytes = IMAGE, options?: Parameters<FaultServer['putImage']>[2]): void {
  const name = `img-${++images}`;
  server.putImage(name, bytes, options);
  path = `/images/${name}`;
  url = server.imageUrl(name);
}

const requests = (): RequestRecord[] => server.log.filter((r) => r.path === path);

describe('opening a Range image', () => {
  test('size and identity come from the server; the first block arrives with them', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, FAST);
    expect(b.size).toBe(SIZE);
    expect(b.readOnly).toBe(true);
    expect(b.identity.etag).toMatch(/^"img-\d+-v1"$/);
    expect(b.identity.lastModified).toMatch(/GMT$/);
    expect(requests().map((r) => r.range)).toEqual([`bytes=0-${BLOCK - 1}`]);
    same(await read(b, 100, 1000), IMAGE.subarray(100, 1100));
    expect(requests()).toHaveLength(1);
    b.close();
  });

  test('a server that answers Range with 200 is a typed unsupported error, not data', async () => {
    freshImage();
    server.inject(path, { kind: 'no-range' });
    const err = await failure(HttpRangeBackend.open(url, FAST));
    expect(err).toMatchObject({ code: 'unsupported', reason: 'no-range-support', status: 200 });
    expect(err.message).toContain('does not support Range');
    expect(requests()).toHaveLength(1);
  });

  test('a gzipped ranged body is a typed unsupported error', async () => {
    freshImage();
    server.inject(path, { kind: 'gzip' });
    const err = await failure(HttpRangeBackend.open(url, FAST));
    expect(err).toMatchObject({ code: 'unsupported', reason: 'content-encoding' });
    expect(err.message).toContain('gzip');
  });

  test('a missing image is not-found, without retries', async () => {
    freshImage();
    server.inject(path, { kind: 'missing' });
    const err = await failure(HttpRangeBackend.open(url, FAST));
    expect(err).toMatchObject({ code: 'not-found', reason: 'status', status: 404 });
    expect(requests()).toHaveLength(1);
  });

  test('an image smaller than one block opens with its own size', async () => {
    freshImage(IMAGE.subarray(0, 1000));
    const b = await HttpRangeBackend.open(url, FAST);
    expect(b.size).toBe(1000);
    same(await read(b, 0, 1000), IMAGE.subarray(0, 1000));
    b.close();
  });
});

describe('how the Range backend asks', () => {
  test('adjacent reads submitted together go out as one request; one block is fetched once', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, FAST);
    const offsets = Array.from({ length: 16 }, (_, i) => 4 * BLOCK + i * 4 * KiB);
    const parts = await Promise.all([...offsets.map((o) => read(b, o, 4 * KiB)), read(b, 4 * BLOCK, 100)]);
    offsets.forEach((o, i) => same(parts[i], IMAGE.subarray(o, o + 4 * KiB)));
    expect(requests().slice(1).map((r) => r.range)).toEqual([`bytes=${4 * BLOCK}-${8 * BLOCK - 1}`]);
    expect(b.stats.fetches).toBe(1);
    b.close();
  });

  test('one large read is one request, up to maxRequestBytes per request', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, { ...FAST, maxRequestBytes: 4 * BLOCK });
    same(await read(b, BLOCK, 10 * BLOCK), IMAGE.subarray(BLOCK, 11 * BLOCK));
    expect(requests().slice(1).map((r) => r.range)).toEqual([
      `bytes=${BLOCK}-${5 * BLOCK - 1}`,
      `bytes=${5 * BLOCK}-${9 * BLOCK - 1}`,
      `bytes=${9 * BLOCK}-${11 * BLOCK - 1}`,
    ]);
    b.close();
  });

  test('sequential reads grow a read-ahead window; random reads do not', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, { ...FAST, readAheadBytes: 8 * BLOCK });
    for (let i = 0; i < 32; i++) same(await read(b, 8 * BLOCK + i * 8 * KiB, 8 * KiB), IMAGE.subarray(8 * BLOCK + i * 8 * KiB, 8 * BLOCK + (i + 1) * 8 * KiB));
    expect(b.stats.readAheadBlocks).toBeGreaterThan(0);
    // 16 blocks read with at most a few demand misses: the rest were fetched ahead.
    expect(b.stats.fetches).toBeLessThan(8);
    const ahead = b.stats.readAheadBlocks;
    for (const block of [50, 3, 40, 27, 60]) await read(b, block * BLOCK + 7, 100);
    expect(b.stats.readAheadBlocks).toBe(ahead);
    b.close();
  });

  test('the cache is bounded: a block pushed out is fetched again; a kept one is not', async () => {
    freshImage();
    const small = await HttpRangeBackend.open(url, { ...FAST, cacheBytes: 2 * BLOCK });
    for (const block of [10, 20, 30, 10]) await read(small, block * BLOCK, 512);
    expect(requests().slice(1).filter((r) => r.range === `bytes=${10 * BLOCK}-${11 * BLOCK - 1}`)).toHaveLength(2);
    small.close();

    freshImage();
    const big = await HttpRangeBackend.open(url, FAST);
    for (const block of [10, 20, 30, 10]) await read(big, block * BLOCK, 512);
    expect(requests().slice(1)).toHaveLength(3);
    expect(big.stats.cacheHits).toBe(1);
    big.close();
  });

  test('several fetches are in flight at once; a stalled one times out and is asked again', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, { ...FAST, maxInFlight: 3, requestTimeoutMs: 1500 });
    const from = server.log.length;
    server.inject(path, { kind: 'stall' }, 3);
    const reads = [10, 20, 30].map((block) => read(b, block * BLOCK, 512));
    // All three reach the server while none has been answered.
    for (let k = 0; k < 3; k++) {
      await server.nextRequest((r) => r.path === path && r.fault === 'stall' && server.log.indexOf(r) >= from + k, from);
    }
    expect(requests().filter((r) => r.fault === 'stall')).toHaveLength(3);
    const got = await Promise.all(reads);
    [10, 20, 30].forEach((block, i) => same(got[i], IMAGE.subarray(block * BLOCK, block * BLOCK + 512)));
    expect(requests().filter((r) => r.fault === 'stall').every((r) => r.aborted)).toBe(true);
    b.close();
  });
});

describe('faults mid-session: retried, or IOERR with the reason', () => {
  const cases = [
    { fault: { kind: 'drop' }, name: 'a dropped connection' },
    { fault: { kind: 'status', status: 500 }, name: 'a 500' },
    { fault: { kind: 'status', status: 503 }, name: 'a 503' },
    { fault: { kind: 'stall' }, name: 'an answer whose first byte never comes' },
    { fault: { kind: 'stall-body' }, name: 'a body that stops halfway' },
    { fault: { kind: 'truncate' }, name: 'a truncated body (connection closed)' },
    { fault: { kind: 'short' }, name: 'a short body (clean end)' },
  ] as const;
  for (const { fault, name } of cases) {
    test(`${name}, twice, then success: the data arrives`, async () => {
      freshImage();
      const b = await HttpRangeBackend.open(url, { ...FAST, requestTimeoutMs: fault.kind.startsWith('stall') ? 500 : 2000 });
      server.inject(path, fault, 2);
      same(await read(b, 5 * BLOCK, BLOCK), IMAGE.subarray(5 * BLOCK, 6 * BLOCK));
      expect(requests().slice(1).map((r) => r.fault)).toEqual([fault.kind, fault.kind, null]);
      b.close();
    });
  }

  test('faults that outlast the retries: IOERR with the reason and the attempt count', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, FAST);
    server.inject(path, { kind: 'status', status: 503 }, 4);
    const err = await failure(read(b, 5 * BLOCK, 512));
    expect(err).toMatchObject({ code: 'io', reason: 'status', status: 503 });
    expect(err.message).toContain('after 4 attempts');
    expect(requests().slice(1)).toHaveLength(4);
    // Nothing is left behind: the next read asks again and gets the data.
    same(await read(b, 5 * BLOCK, 512), IMAGE.subarray(5 * BLOCK, 5 * BLOCK + 512));

    const slow = await HttpRangeBackend.open(url, { ...FAST, requestTimeoutMs: 300 });
    server.inject(path, { kind: 'stall' }, 4);
    const timeout = await failure(read(slow, 9 * BLOCK, 512));
    expect(timeout).toMatchObject({ code: 'io', reason: 'timeout' });
    slow.close();

    server.inject(path, { kind: 'drop' }, 4);
    expect(await failure(read(b, 12 * BLOCK, 512))).toMatchObject({ code: 'io', reason: 'network' });
    b.close();
  });

  test('a 404 mid-session is not retried', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, FAST);
    server.inject(path, { kind: 'missing' });
    expect(await failure(read(b, 5 * BLOCK, 512))).toMatchObject({ code: 'not-found', status: 404 });
    expect(requests()).toHaveLength(2);
    b.close();
  });

  test('a wrong Content-Range is refused, not retried, and its bytes are not used', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, FAST);
    server.inject(path, { kind: 'wrong-range' });
    const err = await failure(read(b, 5 * BLOCK, 512));
    expect(err).toMatchObject({ code: 'io', reason: 'bad-content-range' });
    expect(err.message).toContain(`to a request for ${5 * BLOCK}-${6 * BLOCK - 1}`);
    expect(requests()).toHaveLength(2);
    b.close();
  });

  test('a 200 to a Range request mid-session is IOERR (no-range-support), gzip is IOERR (content-encoding)', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, FAST);
    server.inject(path, { kind: 'no-range' });
    expect(await failure(read(b, 5 * BLOCK, 512))).toMatchObject({ code: 'io', reason: 'no-range-support' });
    server.inject(path, { kind: 'gzip' });
    expect(await failure(read(b, 6 * BLOCK, 512))).toMatchObject({ code: 'io', reason: 'content-encoding' });
    expect(requests()).toHaveLength(3);
    b.close();
  });

  test('closing the backend ends a stalled read at once with a closed error', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, { ...FAST, requestTimeoutMs: 60_000 });
    server.inject(path, { kind: 'stall' });
    const pending = read(b, 5 * BLOCK, 512);
    await server.nextRequest((r) => r.path === path && r.fault === 'stall');
    b.close();
    const err = await pending.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StorageError);
    expect(err).toMatchObject({ code: 'closed' });
    await server.aborted((r) => r.path === path && r.fault === 'stall');
    await expect(read(b, 0, 1)).rejects.toMatchObject({ code: 'closed' });
  });
});

describe('the image changes under a running guest', () => {
  test('If-Range carries the ETag; a changed image is image-changed, never new bytes', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, FAST);
    same(await read(b, 2 * BLOCK, 512), IMAGE.subarray(2 * BLOCK, 2 * BLOCK + 512));
    server.replaceImage(path.slice('/images/'.length), pattern(SIZE, 78));
    const err = await failure(read(b, 7 * BLOCK, 512));
    expect(err).toMatchObject({ code: 'image-changed', reason: 'image-changed', status: 200 });
    const last = requests().at(-1)!;
    expect(last.ifRange).toBe(b.identity.etag);
    // Blocks already read are the old image's, as before: no mix.
    same(await read(b, 2 * BLOCK, 512), IMAGE.subarray(2 * BLOCK, 2 * BLOCK + 512));
    await expect(read(b, 9 * BLOCK, 512)).rejects.toMatchObject({ code: 'image-changed' });
    b.close();
  });

  test('with ifRange: false no If-Range is sent, and a changed image is still image-changed (a 206 with a new ETag)', async () => {
    freshImage();
    const b = await HttpRangeBackend.open(url, { ...FAST, ifRange: false });
    same(await read(b, 2 * BLOCK, 512), IMAGE.subarray(2 * BLOCK, 2 * BLOCK + 512));
    expect(requests().at(-1)!.ifRange).toBeNull();
    server.replaceImage(path.slice('/images/'.length), pattern(SIZE, 80));
    const err = await failure(read(b, 7 * BLOCK, 512));
    expect(err).toMatchObject({ code: 'image-changed', reason: 'image-changed', status: 206 });
    expect(requests().at(-1)!.ifRange).toBeNull();
    same(await read(b, 2 * BLOCK, 512), IMAGE.subarray(2 * BLOCK, 2 * BLOCK + 512));
    b.close();
  });

  test('with a weak ETag, If-Range carries Last-Modified', async () => {
    freshImage(IMAGE, { etag: 'weak' });
    const b = await HttpRangeBackend.open(url, FAST);
    expect(b.identity.etag).toMatch(/^W\//);
    await read(b, 3 * BLOCK, 10);
    expect(requests().at(-1)!.ifRange).toBe(b.identity.lastModified);
    server.replaceImage(path.slice('/images/'.length), pattern(SIZE, 79));
    expect(await failure(read(b, 4 * BLOCK, 10))).toMatchObject({ code: 'image-changed' });
    b.close();
  });

  test('without any validator the image is refused at open, unless unpinned: true', async () => {
    freshImage(IMAGE, { etag: 'none', lastModified: false });
    const err = await HttpRangeBackend.open(url, FAST).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ name: 'StorageError', code: 'unsupported', reason: 'no-validator' });
    expect((err as Error).message).toContain('neither ETag nor Last-Modified');
    const b = await HttpRangeBackend.open(url, { ...FAST, unpinned: true });
    expect(b.identity).toEqual({ size: SIZE, etag: null, lastModified: null });
    b.close();
  });

  test('unpinned, without any validator, a change of size is still caught', async () => {
    freshImage(IMAGE, { etag: 'none', lastModified: false });
    const b = await HttpRangeBackend.open(url, { ...FAST, unpinned: true });
    expect(b.identity).toEqual({ size: SIZE, etag: null, lastModified: null });
    server.replaceImage(path.slice('/images/'.length), pattern(SIZE + 4096, 80));
    const err = await failure(read(b, 4 * BLOCK, 10));
    expect(err).toMatchObject({ code: 'image-changed' });
    expect(err.message).toContain(`${SIZE} → ${SIZE + 4096}`);
    server.replaceImage(path.slice('/images/'.length), IMAGE.subarray(0, 2 * BLOCK));
    expect(await failure(read(b, 5 * BLOCK, 10))).toMatchObject({ code: 'image-changed', status: 416 });
    b.close();
  });

  test('through the device, the guest gets IOERR and the host the typed error', async () => {
    freshImage();
    const backend = await HttpRangeBackend.open(url, FAST);
    const onStorageError = vi.fn();
    const { driver } = await makeRig({ backend, onStorageError });
    expect(driver.readOnly).toBe(true);
    expect(driver.capacitySectors).toBe(SIZE / 512);
    expect(await driver.read(8, 8 * KiB)).toEqual(IMAGE.subarray(4096, 4096 + 8 * KiB));
    server.replaceImage(path.slice('/images/'.length), pattern(SIZE, 81));
    const buf = driver.allocate(4096);
    const c = await driver.run({ type: BlkRequestType.In, sector: 512, in: [{ addr: buf.addr, len: 4096 }] });
    expect(c.status).toBe(BlkStatus.IoErr);
    expect(onStorageError).toHaveBeenCalledOnce();
    expect(onStorageError.mock.calls[0]![0]).toMatchObject({ code: 'image-changed' });
    backend.close();
  });
});
