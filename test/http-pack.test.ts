// `virtio-blk-web pack`: chunk files named by the SHA-256 of their bytes, no
// file for zero chunks, one file for repeated chunks, gzip, a re-pack that
// writes only what changed, the progress line and exit codes; the streaming
// core packs an image over 4 GiB in bounded memory.

import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { main } from '../src/host/vhost-user/cli.ts';
import { parseManifest, type ChunkedManifest } from '../src/pack/manifest.ts';
import { packCommand } from '../src/pack/cli.ts';
import { packStream } from '../src/pack/pack.ts';
import { pattern } from './contract/backend-contract.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const CHUNK = 64 * KiB;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'virtio-blk-web-pack-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** 40 chunks and a bit: zero runs, a repeated chunk, data. */
function image(): Uint8Array {
  const bytes = pattern(40 * CHUNK + 3072, 31);
  bytes.fill(0, 10 * CHUNK, 20 * CHUNK);
  bytes.copyWithin(30 * CHUNK, 29 * CHUNK, 30 * CHUNK);
  return bytes;
}

function capture(): { io: Parameters<typeof packCommand>[1]; out: () => string; err: () => string } {
  let out = '';
  let err = '';
  const sink = (add: (s: string) => void) => ({ write: (s: string) => (add(s), true) }) as unknown as NodeJS.WritableStream;
  return {
    io: { stdout: sink((s) => (out += s)), stderr: sink((s) => (err += s)) },
    out: () => out,
    err: () => err,
  };
}

const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

async function manifestOf(outDir: string): Promise<ChunkedManifest> {
  return parseManifest(JSON.parse(await readFile(join(outDir, 'manifest.json'), 'utf8')));
}

describe('virtio-blk-web pack', () => {
  test('an image that ends inside a sector is padded with zeroes to the next 512-byte boundary, and says so', async () => {
    const bytes = pattern(5000, 41);
    const img = join(dir, 'odd.img');
    const out = join(dir, 'odd');
    await writeFile(img, bytes);
    const c = capture();
    expect(await packCommand([img, out, '--chunk-size', '64K'], c.io)).toBe(0);
    const m = await manifestOf(out);
    expect(m.size).toBe(5120);
    const padded = new Uint8Array(5120);
    padded.set(bytes);
    expect(m.chunks).toEqual([sha(padded)]);
    expect(c.err()).toContain('120 zero bytes added (the disk is 5120 bytes)');
  });

  test('chunk files are named by their SHA-256; zero chunks have none; a repeated chunk has one', async () => {
    const bytes = image();
    const img = join(dir, 'a.img');
    const out = join(dir, 'a');
    await writeFile(img, bytes);
    const c = capture();
    expect(await packCommand([img, out, '--chunk-size', '64K'], c.io)).toBe(0);
    const m = await manifestOf(out);
    expect(m).toMatchObject({ size: bytes.length, chunkSize: CHUNK, compression: 'none', hash: 'sha-256' });
    expect(m.chunks).toHaveLength(41);
    for (let i = 0; i < 41; i++) {
      const chunk = bytes.subarray(i * CHUNK, (i + 1) * CHUNK);
      if (i >= 10 && i < 20) expect(m.chunks[i]).toBeNull();
      else expect(m.chunks[i]).toBe(sha(chunk));
    }
    expect(m.chunks[30]).toBe(m.chunks[29]);
    const files = await readdir(join(out, 'chunks'));
    expect(files.sort()).toEqual([...new Set(m.chunks.filter((h): h is string => h !== null))].sort());
    for (const f of files) expect(sha(await readFile(join(out, 'chunks', f)))).toBe(f);
    // Progress lines (not a terminal: one per 10%) and the summary.
    expect(c.err()).toMatch(/packing .*a\.img: .* MiB, \d+ chunks \(\d+ stored, \d+ zero, \d+ already there\) 100%\n$/);
    expect(c.out()).toContain('41 chunks of 65536 bytes, 31 with data, 10 zero, compression none');
  });

  test('re-packing a changed image into the same folder writes only the changed chunk', async () => {
    const bytes = image();
    const img = join(dir, 'b.img');
    const out = join(dir, 'b');
    await writeFile(img, bytes);
    expect(await packCommand([img, out, '--chunk-size', '64K', '--quiet'], capture().io)).toBe(0);
    const before = new Set(await readdir(join(out, 'chunks')));
    bytes[5 * CHUNK + 17] ^= 0x80;
    await writeFile(img, bytes);
    const c = capture();
    expect(await packCommand([img, out, '--chunk-size', '64K'], c.io)).toBe(0);
    const after = await readdir(join(out, 'chunks'));
    expect(after.filter((f) => !before.has(f))).toEqual([sha(bytes.subarray(5 * CHUNK, 6 * CHUNK))]);
    expect(c.err()).toMatch(/\(1 stored, 10 zero, 30 already there\) 100%/);
    expect((await manifestOf(out)).chunks[5]).toBe(sha(bytes.subarray(5 * CHUNK, 6 * CHUNK)));
  });

  test('--compress writes gzip files that inflate to the bytes their name hashes', async () => {
    const bytes = image();
    const img = join(dir, 'c.img');
    const out = join(dir, 'c');
    await writeFile(img, bytes);
    // Through the CLI's dispatch, as `virtio-blk-web pack` runs it.
    expect(await main(['pack', img, out, '--chunk-size', '65536', '--compress', '--quiet'])).toBe(0);
    const m = await manifestOf(out);
    expect(m.compression).toBe('gzip');
    const files = await readdir(join(out, 'chunks'));
    expect(files.every((f) => f.endsWith('.gz'))).toBe(true);
    for (const f of files) expect(sha(gunzipSync(await readFile(join(out, 'chunks', f))))).toBe(f.slice(0, -3));
    expect(files).toHaveLength(30);
  });

  test('usage mistakes exit 2, a missing image exits 1, each with one clear line', async () => {
    const usage = capture();
    expect(await packCommand([join(dir, 'a.img')], usage.io)).toBe(2);
    expect(usage.err()).toContain('expected IMAGE and OUTDIR');
    const size = capture();
    expect(await packCommand([join(dir, 'a.img'), join(dir, 'x'), '--chunk-size', '1000'], size.io)).toBe(2);
    expect(size.err()).toContain('--chunk-size: chunk size must be an integer from 4096');
    const missing = capture();
    expect(await packCommand([join(dir, 'nope.img'), join(dir, 'y')], missing.io)).toBe(1);
    expect(missing.err()).toBe(`virtio-blk-web pack: ${join(dir, 'nope.img')}: no such file\n`);
    const folder = capture();
    expect(await packCommand([dir, join(dir, 'z')], folder.io)).toBe(1);
    expect(folder.err()).toContain('is a directory');
  });

  test('an image over 4 GiB packs in bounded memory, with data beyond 4 GiB where it belongs', async () => {
    // 4.25 GiB streamed as 4 MiB pieces of zeroes, with data in two chunks (one past 2^32).
    const size = 4 * GiB + 256 * MiB;
    const chunkSize = 1 * MiB;
    const piece = 4 * MiB;
    const zero = new Uint8Array(piece);
    const marks = new Map([
      [8 * MiB, pattern(piece, 32)],
      [4 * GiB + 8 * MiB, pattern(piece, 33)],
    ]);
    async function* source(): AsyncGenerator<Uint8Array> {
      for (let at = 0; at < size; at += piece) yield marks.get(at) ?? zero;
    }
    const stored = new Map<string, number>();
    const heapBefore = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    let heapPeak = 0;
    const m = await packStream(
      source(),
      {
        has: async (p) => stored.has(p),
        put: async (p, bytes) => void stored.set(p, bytes.length),
      },
      {
        chunkSize,
        onProgress: (p) => {
          if (p.chunks % 256 === 0) heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers);
        },
      },
    );
    expect(m.size).toBe(size);
    expect(m.chunks).toHaveLength(size / chunkSize);
    const withData = m.chunks.flatMap((c, i) => (c === null ? [] : [i]));
    expect(withData).toEqual([8, 9, 10, 11, 4096 + 8, 4096 + 9, 4096 + 10, 4096 + 11]);
    expect(m.chunks[4096 + 8]).toBe(sha(pattern(piece, 33).subarray(0, chunkSize)));
    // Nothing grows with the image: a few chunk buffers, not gigabytes.
    expect(heapPeak - heapBefore).toBeLessThan(256 * MiB);
  }, 240_000);
});
