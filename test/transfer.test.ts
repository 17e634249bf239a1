// The pure parts of streaming import and export (src/transfer), in Node:
// zero detection and run splitting, the block reader (both stream kinds,
// short and long sources), and import/export against the memory backend —
// what is stored, what is skipped, progress, cancellation, and bounded
// memory (a counting backend sees every buffer the importer hands it).
// The browser backends (OPFS, IndexedDB, URL sources) are e2e/transfer.spec.ts.

import { describe, expect, test } from 'vitest';
import { StorageError, type BlockBackend } from '../src/backends/backend.ts';
import { MemoryBackend } from '../src/backends/memory.ts';
import { BlockReader } from '../src/transfer/blocks.ts';
import { exportStream } from '../src/transfer/export.ts';
import { importIntoBackend } from '../src/transfer/import.ts';
import type { TransferProgress } from '../src/transfer/progress.ts';
import { isAllZero, splitRuns } from '../src/transfer/zero.ts';

const KiB = 1024;
/** Byte-for-byte equality without a deep diff (toEqual on MiB arrays takes seconds). */
const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(a, b) === 0;
const MiB = 1024 * KiB;

function pattern(length: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x & 0xff) | 1; // never zero
  }
  return out;
}

/** A default (not byte) stream of `chunks`, cut at odd sizes. */
function chunkStream(bytes: Uint8Array<ArrayBuffer>, chunkBytes: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.slice(at, at + chunkBytes));
      at += chunkBytes;
    },
  });
}

/** A byte stream, like File.stream() and fetch bodies (read through its default reader). */
function byteStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    type: 'bytes',
    pull(c) {
      const req = c.byobRequest;
      if (at >= bytes.length) {
        c.close();
        req?.respond(0);
        return;
      }
      if (req?.view) {
        const view = new Uint8Array(req.view.buffer, req.view.byteOffset, req.view.byteLength);
        const n = Math.min(view.length, bytes.length - at, 100_003);
        view.set(bytes.subarray(at, at + n));
        at += n;
        req.respond(n);
      } else {
        c.enqueue(bytes.slice(at, at + 65536));
        at += 65536;
      }
    },
  });
}

/** Records every write and write-zeroes, and the largest buffer it was handed. */
class Recording extends MemoryBackend {
  writes: Array<[number, number]> = [];
  zeroes: Array<[number, number]> = [];
  largest = 0;
  override write(offset: number, src: Uint8Array): void {
    this.writes.push([offset, src.length]);
    this.largest = Math.max(this.largest, src.buffer.byteLength);
    super.write(offset, src);
  }
  override writeZeroes(offset: number, length: number): void {
    this.zeroes.push([offset, length]);
    super.writeZeroes(offset, length);
  }
}

describe('zero detection', () => {
  test('isAllZero finds a single non-zero byte at any position and alignment', () => {
    const buf = new Uint8Array(8192 + 13);
    for (const start of [0, 1, 3, 8]) {
      const view = buf.subarray(start, start + 5000);
      expect(isAllZero(view)).toBe(true);
      for (const at of [0, 1, 7, 8, 1023, 2048, 4999]) {
        view[at] = 0x80;
        expect(isAllZero(view)).toBe(false);
        view[at] = 0;
      }
    }
    expect(isAllZero(new Uint8Array(0))).toBe(true);
  });

  test('splitRuns covers the block exactly with alternating runs on grain boundaries', () => {
    const block = new Uint8Array(64 * KiB);
    block[5000] = 1; // grain 1
    block.fill(2, 40 * KiB, 41 * KiB); // grain 10
    expect(splitRuns(block, 4096)).toEqual([
      { offset: 0, length: 4096, zero: true },
      { offset: 4096, length: 4096, zero: false },
      { offset: 8192, length: 32 * KiB, zero: true },
      { offset: 40 * KiB, length: 4096, zero: false },
      { offset: 44 * KiB, length: 20 * KiB, zero: true },
    ]);
    // With a 16 KiB minimum, the 4 KiB zero grain at the start is data; the long ones stay zero.
    expect(splitRuns(block, 4096, 16 * KiB).map((r) => [r.offset, r.length, r.zero])).toEqual([
      [0, 8192, false],
      [8192, 32 * KiB, true],
      [40 * KiB, 4096, false],
      [44 * KiB, 20 * KiB, true],
    ]);
    expect(splitRuns(new Uint8Array(10_000))).toEqual([{ offset: 0, length: 10_000, zero: true }]);
  });
});

describe('block reader', () => {
  for (const [kind, make] of [
    ['default stream', (b: Uint8Array<ArrayBuffer>) => chunkStream(b, 77_777)],
    ['byte stream', byteStream],
  ] as const) {
    test(`${kind}: fills whole blocks, then the tail, then 0`, async () => {
      const data = pattern(3 * 65536 + 1000, 7);
      const reader = new BlockReader(make(data), data.length, 'src');
      const got: number[] = [];
      const block = new Uint8Array(65536);
      const out = new Uint8Array(data.length);
      for (let at = 0; ; ) {
        const filled = await reader.fill(block);
        got.push(filled);
        if (filled === 0) break;
        out.set(block.subarray(0, filled), at);
        at += filled;
      }
      expect(got).toEqual([65536, 65536, 65536, 1000, 0]);
      expect(same(out, data)).toBe(true);
    });

    test(`${kind}: a source shorter or longer than declared is 'truncated'`, async () => {
      const data = pattern(100_000, 3);
      const short = new BlockReader(make(data), 200_000, 'short');
      await expect(short.fill(new Uint8Array(262_144))).rejects.toMatchObject({ code: 'truncated', message: 'short ended after 100000 of the 200000 bytes declared' });
      const long = new BlockReader(make(data), 50_000, 'long');
      await expect(long.fill(new Uint8Array(65536))).rejects.toMatchObject({ code: 'truncated', message: 'long holds more than the 50000 bytes declared' });
    });
  }
});

describe('import into a backend', () => {
  test('a fresh disk stores only the non-zero pages; content, rounding to sectors and progress are right', async () => {
    const image = new Uint8Array(3 * MiB + 700);
    image.set(pattern(10_000, 1), 4096); // pages 1..3
    image.set(pattern(4096, 2), 2 * MiB + 8192); // one page in block 2
    image.set(pattern(700, 3), 3 * MiB); // the sector-short tail
    const disk = new Recording(3 * MiB + 1024);
    const progress: TransferProgress[] = [];
    const result = await importIntoBackend(new Blob([image]), disk, { fresh: true, onProgress: (p) => progress.push({ ...p }) });
    expect(result).toEqual({ diskBytes: 3 * MiB + 1024, imageBytes: image.length, dataBytes: 3 * 4096 + 4096 + 1024 });
    expect(disk.writes).toEqual([
      [4096, 3 * 4096],
      [2 * MiB + 8192, 4096],
      [3 * MiB, 1024],
    ]);
    expect(disk.zeroes).toEqual([]);
    expect(same(disk.bytes.subarray(0, image.length), image)).toBe(true);
    expect(isAllZero(disk.bytes.subarray(image.length))).toBe(true);
    // Monotonic, ending at the total, data never ahead of done.
    for (let i = 1; i < progress.length; i++) expect(progress[i]!.doneBytes).toBeGreaterThan(progress[i - 1]!.doneBytes);
    expect(progress.at(-1)).toEqual({ doneBytes: image.length, totalBytes: image.length, dataBytes: result.dataBytes });
    // Memory: the importer handed the backend views on its own 1 MiB blocks, nothing larger.
    expect(disk.largest).toBe(MiB);
  });

  test('an existing disk gets write-zeroes for zero runs and for its tail past the image, never zero writes', async () => {
    const disk = new Recording(4 * MiB, { data: pattern(4 * MiB, 9) });
    const image = new Uint8Array(2 * MiB);
    image.set(pattern(8192, 4), MiB);
    await importIntoBackend(chunkStream(image, 65_000), disk, { size: image.length });
    expect(disk.writes).toEqual([[MiB, 8192]]);
    expect(disk.zeroes).toEqual([
      [0, MiB],
      [MiB + 8192, MiB - 8192],
      [2 * MiB, 2 * MiB],
    ]);
    expect(same(disk.bytes.subarray(0, 2 * MiB), image)).toBe(true);
    expect(isAllZero(disk.bytes.subarray(2 * MiB))).toBe(true);
  });

  test('an image larger than the disk is refused before anything is written', async () => {
    const disk = new Recording(MiB);
    await expect(importIntoBackend(new Blob([new Uint8Array(MiB + 1)]), disk, { fresh: true })).rejects.toMatchObject({ code: 'out-of-range' });
    expect(disk.writes).toEqual([]);
  });

  test('cancel stops the copy at the next block with a typed error carrying the reason', async () => {
    const controller = new AbortController();
    const disk = new Recording(64 * MiB);
    let pulled = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(c) {
        pulled++;
        c.enqueue(pattern(MiB, pulled));
      },
    });
    const err = await importIntoBackend(endless, disk, {
      size: 64 * MiB,
      fresh: true,
      signal: controller.signal,
      onProgress: (p) => p.doneBytes >= 3 * MiB && controller.abort(new Error('user cancelled')),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect(err).toMatchObject({ code: 'aborted', cause: { message: 'user cancelled' } });
    // It stopped within a block or two of the cancel, not at the end.
    expect(disk.writes.length).toBeLessThanOrEqual(5);
    expect(pulled).toBeLessThan(10);
  });

  test('a failing backend write is a typed error and the source is cancelled', async () => {
    let cancelled: unknown = null;
    const source = new ReadableStream<Uint8Array>({
      pull: (c) => c.enqueue(pattern(MiB, 1)),
      cancel: (reason) => void (cancelled = reason ?? 'cancelled'),
    });
    const disk = new MemoryBackend(8 * MiB);
    disk.write = () => {
      throw Object.assign(new Error('disk full'), { name: 'QuotaExceededError' });
    };
    await expect(importIntoBackend(source, disk, { size: 8 * MiB, fresh: true })).rejects.toMatchObject({ code: 'quota-exceeded' });
    expect(cancelled).not.toBeNull();
  });
});

describe('export', () => {
  async function drain(stream: ReadableStream<Uint8Array>): Promise<Uint8Array<ArrayBuffer>[]> {
    const out: Uint8Array<ArrayBuffer>[] = [];
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array<ArrayBuffer>>) out.push(chunk);
    return out;
  }

  test('round trip: the stream is the disk, block by block, with progress to the total', async () => {
    const disk = new MemoryBackend(2 * MiB + 4096, { data: pattern(2 * MiB + 4096, 5) });
    const progress: number[] = [];
    const chunks = await drain(exportStream(disk, { onProgress: (p) => progress.push(p.doneBytes) }));
    expect(chunks.map((c) => c.length)).toEqual([MiB, MiB, 4096]);
    const joined = new Uint8Array(await new Blob(chunks).arrayBuffer());
    expect(same(joined, disk.bytes)).toBe(true);
    expect(progress).toEqual([MiB, 2 * MiB, 2 * MiB + 4096]);
  });

  test('holes the backend reports are never read; reads happen only as the consumer pulls', async () => {
    const inner = new MemoryBackend(8 * MiB);
    inner.write(5 * MiB + 3, pattern(10, 1));
    const reads: number[] = [];
    const backend: BlockBackend = {
      ...inner,
      size: inner.size,
      readOnly: false,
      supportsDiscard: true,
      supportsWriteZeroes: true,
      read: (o, d) => (reads.push(o), inner.read(o, d)),
      write: (o, s) => inner.write(o, s),
      flush: () => {},
      discard: () => {},
      writeZeroes: () => {},
      close: () => {},
      allocatedRanges: (o, l) => ([[5 * MiB, 5 * MiB + 4096]] as Array<[number, number]>).filter(([s, e]) => s < o + l && e > o),
    };
    const stream = exportStream(backend);
    const reader = stream.getReader();
    const first = await reader.read();
    expect(first.value?.length).toBe(MiB);
    // The queue holds at most its high-water mark ahead of the consumer.
    await new Promise((r) => setTimeout(r, 20));
    expect(reads).toEqual([]);
    const rest: Uint8Array<ArrayBuffer>[] = [first.value as Uint8Array<ArrayBuffer>];
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      rest.push(r.value as Uint8Array<ArrayBuffer>);
    }
    expect(reads).toEqual([5 * MiB]);
    expect(same(new Uint8Array(await new Blob(rest).arrayBuffer()), inner.bytes)).toBe(true);
  });

  test('the stream does not run ahead of a consumer that stops pulling (back-pressure)', async () => {
    const disk = new MemoryBackend(64 * MiB);
    const reads: number[] = [];
    const read = disk.read.bind(disk);
    disk.read = (o, d) => (reads.push(o), read(o, d));
    const reader = exportStream(disk).getReader();
    await reader.read();
    await new Promise((r) => setTimeout(r, 50));
    // One handed over, at most two queued: never the whole disk.
    expect(reads.length).toBeLessThanOrEqual(3);
    await reader.cancel();
  });

  test('cancel errors the stream with the typed abort error', async () => {
    const controller = new AbortController();
    const reader = exportStream(new MemoryBackend(8 * MiB), { signal: controller.signal }).getReader();
    await reader.read();
    controller.abort(new Error('stop'));
    const err = await (async () => {
      for (;;) if ((await reader.read()).done) return null;
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'aborted', cause: { message: 'stop' } });
  });
});

describe('URL sources', () => {
  test('a server that answers with a web page (an SPA fallback) is refused before anything is written', async () => {
    const { createServer } = await import('node:http');
    const server = createServer((req, res) => {
      if (req.url === '/page.img') {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
        res.end('<!doctype html><title>app</title>');
      } else {
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': '4096' });
        res.end(new Uint8Array(4096).fill(7));
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    try {
      const disk = new MemoryBackend(8192);
      const err = await importIntoBackend(`http://127.0.0.1:${port}/page.img`, disk).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StorageError);
      expect((err as StorageError).message).toContain('answered a web page (text/html), not a disk image');
      const bytes = new Uint8Array(8192);
      disk.read(0, bytes);
      expect(bytes.every((b) => b === 0)).toBe(true);
      // A binary answer from the same server imports.
      await importIntoBackend(`http://127.0.0.1:${port}/disk.img`, disk);
      disk.read(0, bytes);
      expect(bytes[0]).toBe(7);
    } finally {
      server.close();
    }
  });
});
