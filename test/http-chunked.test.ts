// The HTTP chunked backend against the fault server: holes without requests,
// every chunk verified before use (a wrong byte is IOERR naming the chunk),
// a missing chunk file is an error and never zeroes, gzip chunks, retries, a
// bad manifest, and images that share chunks.

import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { HttpChunkedBackend, type HttpChunkedOptions } from '../src/backends/http-chunked.ts';
import { BlkRequestType, BlkStatus } from '../src/block/constants.ts';
import { chunkPath } from '../src/pack/manifest.ts';
import { pattern } from './contract/backend-contract.ts';
import { FaultServer, type RequestRecord } from './support/http-server.ts';
import { failure, read, same } from './support/http-assert.ts';
import { makeRig } from './support/rig.ts';

const KiB = 1024;
const CHUNK = 64 * KiB;
const FAST: HttpChunkedOptions = { retries: 3, backoffMs: 1, requestTimeoutMs: 2000, readAheadBytes: 0 };

/** 12 chunks: data, then chunks 4..7 zero, then data; chunk 9 repeats chunk 8; a short last chunk. */
function image(seed: number): Uint8Array {
  const bytes = pattern(11 * CHUNK + 1024, seed);
  bytes.fill(0, 4 * CHUNK, 8 * CHUNK);
  bytes.copyWithin(9 * CHUNK, 8 * CHUNK, 9 * CHUNK);
  return bytes;
}

let server: FaultServer;
let names = 0;

beforeAll(async () => {
  server = await FaultServer.start();
});
afterAll(() => server.close());

async function publish(bytes: Uint8Array, compress = false): Promise<{ name: string; url: string; chunk: (i: number) => string }> {
  const name = `c-${++names}`;
  const manifest = await server.putChunked(name, bytes, { chunkSize: CHUNK, compress });
  return {
    name,
    url: server.manifestUrl(name),
    chunk: (i) => `/chunked/${name}/${chunkPath(manifest.chunks[i]!, manifest.compression)}`,
  };
}

const chunkRequests = (name: string): RequestRecord[] => server.log.filter((r) => r.path.startsWith(`/chunked/${name}/chunks/`));

describe('chunked images', () => {
  test('the manifest gives size and chunks; holes read as zeroes without a request', async () => {
    const bytes = image(1);
    const { name, url } = await publish(bytes);
    const b = await HttpChunkedBackend.open(url, FAST);
    expect(b.size).toBe(bytes.length);
    expect(b.manifest.chunks.map((c) => c === null)).toEqual([false, false, false, false, true, true, true, true, false, false, false, false]);
    expect(b.manifest.chunks[9]).toBe(b.manifest.chunks[8]);
    expect(b.identity).toMatch(/^[0-9a-f]{64}$/);
    same(await read(b, 4 * CHUNK, 4 * CHUNK), new Uint8Array(4 * CHUNK));
    expect(chunkRequests(name)).toEqual([]);
    same(await read(b, 3 * CHUNK + 5, 6 * CHUNK), bytes.subarray(3 * CHUNK + 5, 9 * CHUNK + 5));
    same(await read(b, bytes.length - 1500, 1500), bytes.subarray(bytes.length - 1500));
    // Chunks 3, 8 and 9 (9 shares 8's file but is its own block), then 10 and 11.
    expect(chunkRequests(name).length).toBe(5);
    b.close();
  });

  test('concurrent reads of one chunk fetch it once', async () => {
    const bytes = image(2);
    const { name, url } = await publish(bytes);
    const b = await HttpChunkedBackend.open(url, FAST);
    const parts = await Promise.all(Array.from({ length: 8 }, (_, i) => read(b, i * 8 * KiB, 8 * KiB)));
    parts.forEach((p, i) => same(p, bytes.subarray(i * 8 * KiB, (i + 1) * 8 * KiB)));
    expect(chunkRequests(name)).toHaveLength(1);
    b.close();
  });

  test('gzip chunks are inflated and verified', async () => {
    const bytes = image(3);
    const { url, chunk } = await publish(bytes, true);
    expect(chunk(0)).toMatch(/\.gz$/);
    const b = await HttpChunkedBackend.open(url, FAST);
    expect(b.manifest.compression).toBe('gzip');
    same(await read(b, 0, bytes.length), bytes);
    b.close();
  });

  test('a chunk whose bytes do not match its hash is IOERR naming the chunk, not retried', async () => {
    const bytes = image(4);
    const { name, url, chunk } = await publish(bytes);
    const b = await HttpChunkedBackend.open(url, FAST);
    server.inject(chunk(2), { kind: 'corrupt' }, 10);
    const err = await failure(read(b, 2 * CHUNK + 100, 10));
    expect(err).toMatchObject({ code: 'corrupt', reason: 'integrity', chunk: 2 });
    expect(err.message).toContain('chunk 2');
    expect(err.message).toContain(b.manifest.chunks[2]!);
    expect(chunkRequests(name).filter((r) => r.path === chunk(2))).toHaveLength(1);
    // Its neighbours are fine.
    same(await read(b, CHUNK, CHUNK), bytes.subarray(CHUNK, 2 * CHUNK));
    b.close();
  });

  test('a compressed chunk that is not gzip, or inflates wrong, is an integrity error', async () => {
    const bytes = image(5);
    const { url, chunk } = await publish(bytes, true);
    const b = await HttpChunkedBackend.open(url, FAST);
    const gz = server.file(chunk(1))!;
    const broken = gz.slice();
    broken[broken.length >> 1] ^= 0xff;
    server.setFile(chunk(1), broken);
    expect(await failure(read(b, CHUNK, 10))).toMatchObject({ code: 'corrupt', reason: 'integrity', chunk: 1 });
    // The right gzip of other bytes: inflates fine, hashes wrong.
    server.setFile(chunk(0), server.file(chunk(2))!);
    expect(await failure(read(b, 0, 10))).toMatchObject({ code: 'corrupt', reason: 'integrity', chunk: 0 });
    b.close();
  });

  test('a missing chunk file is a not-found error naming the chunk, never zeroes', async () => {
    const bytes = image(6);
    const { name, url, chunk } = await publish(bytes);
    const b = await HttpChunkedBackend.open(url, FAST);
    server.deleteFile(chunk(10));
    const err = await failure(read(b, 10 * CHUNK, 512));
    expect(err).toMatchObject({ code: 'not-found', reason: 'status', status: 404, chunk: 10 });
    expect(err.message).toContain('chunk 10');
    expect(chunkRequests(name)).toHaveLength(1);
    b.close();
  });

  test('network faults on a chunk are retried; faults past the retries are IOERR with the reason', async () => {
    const bytes = image(7);
    const { url, chunk } = await publish(bytes);
    const c = await HttpChunkedBackend.open(url, { ...FAST, requestTimeoutMs: 500 });
    for (const [i, fault] of ([{ kind: 'drop' }, { kind: 'status', status: 500 }, { kind: 'truncate' }, { kind: 'stall' }] as const).entries()) {
      server.inject(chunk(i), fault, 2);
      same(await read(c, i * CHUNK, CHUNK), bytes.subarray(i * CHUNK, (i + 1) * CHUNK));
      expect(server.log.filter((r) => r.path === chunk(i)).map((r) => r.fault)).toEqual([fault.kind, fault.kind, null]);
    }
    server.inject(chunk(8), { kind: 'status', status: 502 }, 4);
    const err = await failure(read(c, 8 * CHUNK, 10));
    expect(err).toMatchObject({ code: 'io', reason: 'status', status: 502, chunk: 8 });
    expect(err.message).toContain('after 4 attempts');
    c.close();
  });

  test('a bad or missing manifest is a typed error at open', async () => {
    const { name, url } = await publish(image(8));
    const manifestPath = `/chunked/${name}/manifest.json`;
    const good = server.file(manifestPath)!;
    const json = JSON.parse(new TextDecoder().decode(good)) as Record<string, unknown>;
    server.setFile(manifestPath, new TextEncoder().encode(JSON.stringify({ ...json, chunks: [null] })));
    const bad = await failure(HttpChunkedBackend.open(url, FAST));
    expect(bad).toMatchObject({ code: 'corrupt', reason: 'bad-manifest' });
    expect(bad.message).toContain('1 chunks listed, 12 expected');
    server.setFile(manifestPath, new TextEncoder().encode('{"format": "something else"'));
    expect(await failure(HttpChunkedBackend.open(url, FAST))).toMatchObject({ reason: 'bad-manifest' });
    server.deleteFile(manifestPath);
    expect(await failure(HttpChunkedBackend.open(url, FAST))).toMatchObject({ code: 'not-found', status: 404 });
  });

  test('two versions of an image share their unchanged chunk files', async () => {
    const v1 = image(9);
    const v2 = v1.slice();
    v2[3 * CHUNK + 7] ^= 1;
    const a = await publish(v1);
    const b = await publish(v2);
    const paths = (p: typeof a) => Array.from({ length: 12 }, (_, i) => (i >= 4 && i < 8 ? null : p.chunk(i).split('/chunks/')[1]));
    const [pa, pb] = [paths(a), paths(b)];
    expect(pa.filter((x, i) => x !== pb[i])).toEqual([pa[3]]);
    const backend = await HttpChunkedBackend.open(b.url, FAST);
    same(await read(backend, 0, v2.length), v2);
    backend.close();
  });

  test('through the device, a corrupt chunk is IOERR for the guest and a typed error for the host', async () => {
    const bytes = image(10);
    const { url, chunk } = await publish(bytes);
    const backend = await HttpChunkedBackend.open(url, FAST);
    const onStorageError = vi.fn();
    const { driver } = await makeRig({ backend, onStorageError });
    expect(driver.readOnly).toBe(true);
    expect(await driver.read(0, 16 * KiB)).toEqual(bytes.subarray(0, 16 * KiB));
    server.inject(chunk(1), { kind: 'corrupt' });
    const buf = driver.allocate(4096);
    const c = await driver.run({ type: BlkRequestType.In, sector: CHUNK / 512, in: [{ addr: buf.addr, len: 4096 }] });
    expect(c.status).toBe(BlkStatus.IoErr);
    // The guest's buffer holds none of the chunk's bytes.
    const seen = new Uint8Array(4096);
    driver.memory.read(buf.addr, seen);
    expect(seen).not.toEqual(bytes.subarray(CHUNK, CHUNK + 4096));
    expect(onStorageError.mock.calls[0]![0]).toMatchObject({ code: 'corrupt', reason: 'integrity', chunk: 1 });
    backend.close();
  });

  test('where OPFS has no sync access handles (Node), the chunk cache option is ignored and reads work', async () => {
    const bytes = image(11);
    const { name, url } = await publish(bytes);
    const backend = await HttpChunkedBackend.open(url, { ...FAST, chunkCache: { maxBytes: 1 << 20 } });
    expect(backend.chunkCache).toBeNull();
    same(await read(backend, 0, bytes.length), bytes);
    expect(chunkRequests(name).length).toBe(backend.manifest.chunks.filter((c) => c !== null).length);
    backend.close();
    await expect(HttpChunkedBackend.open(url, { ...FAST, chunkCache: { maxBytes: -1 } })).rejects.toThrow(RangeError);
  });
});
