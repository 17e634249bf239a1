// Harness worker for e2e/transfer.spec.ts: imports from every kind of source
// into OPFS and IndexedDB disks, exports back, cancels, and reports what the
// storage really holds. Image contents are generated here from a seed
// (pattern() from the backend contract), so the test compares hashes and
// offsets, never megabytes across the page boundary.

import type { BlockBackend } from '../../src/backends/backend.ts';
import { IndexedDbBackend, indexedDbDatabaseName, listIndexedDbDisks } from '../../src/backends/indexeddb.ts';
import { OpfsBackend, listOpfsDisks, opfsDirectory } from '../../src/backends/opfs.ts';
import { clearExportFiles, exportStream, exportToFile } from '../../src/transfer/export.ts';
import { OPFS_IMPORT_FOLDER, importImage, type ImportTarget } from '../../src/transfer/import.ts';
import type { TransferProgress } from '../../src/transfer/progress.ts';
import type { ImageSource } from '../../src/transfer/source.ts';
import { isAllZero } from '../../src/transfer/zero.ts';
import { pattern } from '../../test/contract/backend-contract.ts';
import { serve } from './rpc.ts';

const MiB = 1 << 20;

/** How an image is described by the test: its size, and 4 KiB marks (offset → seed) on zeroes, or dense pattern data. */
interface ImageSpec {
  size: number;
  /** Dense: pattern(size, seed). */
  seed?: number;
  /** Sparse: zeroes except 4096-byte pattern blocks at these offsets, seed = index + 1. */
  marks?: number[];
  /** Every byte this value: a generated stream that never holds the image. */
  fillByte?: number;
  /** With fillByte: after this many bytes the stream delivers nothing more, ever (an import left mid-way). */
  stallAfter?: number;
}

const MARK = 4096;

function denseBytes(spec: ImageSpec): Uint8Array<ArrayBuffer> {
  return pattern(spec.size, spec.seed ?? 1) as Uint8Array<ArrayBuffer>;
}

/** A generated stream of the sparse image, 1 MiB per pull (a fresh zero buffer each: calloc'd, cheap). */
function sparseStream(spec: ImageSpec, onPull?: () => void): ReadableStream<Uint8Array> {
  const marks = (spec.marks ?? []).map((offset, i) => ({ offset, bytes: pattern(MARK, i + 1) }));
  let at = 0;
  return new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        onPull?.();
        if (at >= spec.size) return controller.close();
        const chunk = new Uint8Array(Math.min(MiB, spec.size - at));
        for (const m of marks) {
          const s = Math.max(m.offset, at);
          const e = Math.min(m.offset + MARK, at + chunk.length);
          if (s < e) chunk.set(m.bytes.subarray(s - m.offset, e - m.offset), s - at);
        }
        at += chunk.length;
        controller.enqueue(chunk);
      },
    },
    { highWaterMark: 1 },
  );
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
}

type SourceKind = 'file' | 'blob' | 'url' | 'stream';

function makeSource(kind: SourceKind, spec: ImageSpec): { source: ImageSource; size?: number; revoke?: () => void } {
  if (spec.marks) return { source: sparseStream(spec), size: spec.size };
  if (spec.fillByte !== undefined) {
    let at = 0;
    const fill = spec.fillByte;
    const source = new ReadableStream<Uint8Array>({
      pull(c) {
        if (at >= spec.size) return c.close();
        if (spec.stallAfter !== undefined && at >= spec.stallAfter) return new Promise<void>(() => {});
        const n = Math.min(MiB, spec.size - at);
        at += n;
        c.enqueue(new Uint8Array(n).fill(fill));
      },
    });
    return { source, size: spec.size };
  }
  const bytes = denseBytes(spec);
  switch (kind) {
    case 'file':
      return { source: new File([bytes], 'disk.img') };
    case 'blob':
      return { source: new Blob([bytes]) };
    case 'url': {
      // A blob: URL is fetched like any other: a real fetch with a streaming body.
      const url = URL.createObjectURL(new Blob([bytes]));
      return { source: url, revoke: () => URL.revokeObjectURL(url) };
    }
    case 'stream':
      return { source: new Blob([bytes]).stream(), size: bytes.length };
  }
}

async function openTarget(target: ImportTarget): Promise<BlockBackend> {
  return target.kind === 'opfs' ? OpfsBackend.open({ name: target.name, directory: target.directory }) : IndexedDbBackend.open({ name: target.name });
}

/** Read the whole disk through the backend itself (not the exporter) and hash it. */
async function diskHash(target: ImportTarget): Promise<{ size: number; sha256: string }> {
  const backend = await openTarget(target);
  try {
    const bytes = new Uint8Array(backend.size);
    await backend.read(0, bytes);
    return { size: backend.size, sha256: await sha256(bytes) };
  } finally {
    await backend.close();
  }
}

/** The disk names each backend lists, and whether an import's hidden OPFS leftover exists. */
async function visible(target: ImportTarget): Promise<{ listed: boolean; hiddenLeftover: boolean }> {
  if (target.kind === 'indexeddb') return { listed: (await listIndexedDbDisks()).some((d) => d.name === target.name), hiddenLeftover: false };
  const dir = target.directory ?? '';
  const listed = (await listOpfsDisks(dir)).some((d) => d.name === target.name);
  const hidden = await listOpfsDisks(dir ? `${dir}/${OPFS_IMPORT_FOLDER}` : OPFS_IMPORT_FOLDER);
  return { listed, hiddenLeftover: hidden.some((d) => d.name === target.name) };
}

/** Chunk records in an IndexedDB disk's store (keys other than 'meta'). */
async function storedChunks(name: string): Promise<number> {
  const request = indexedDB.open(indexedDbDatabaseName(name));
  const db = await new Promise<IDBDatabase>((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  try {
    const keys = await new Promise<IDBValidKey[]>((resolve, reject) => {
      const r = db.transaction('chunks').objectStore('chunks').getAllKeys();
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    return keys.filter((k) => typeof k === 'number').length;
  } finally {
    db.close();
  }
}

/** Export through exportStream and check it block by block against the spec; the first mismatching offset or -1. */
async function checkExport(target: ImportTarget, spec: ImageSpec, progress: number[]): Promise<{ mismatch: number; bytes: number; dataBytes: number }> {
  const backend = await openTarget(target);
  let dataBytes = 0;
  try {
    const expected = spec.marks ? null : denseBytes(spec);
    const marks = (spec.marks ?? []).map((offset, i) => ({ offset, bytes: pattern(MARK, i + 1) }));
    let at = 0;
    const reader = exportStream(backend, {
      onProgress: (p) => {
        progress.push(p.doneBytes);
        dataBytes = p.dataBytes;
      },
    }).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const mismatch = compare(value, at, spec.size, expected, marks);
      if (mismatch >= 0) {
        await reader.cancel();
        return { mismatch, bytes: at, dataBytes };
      }
      at += value.length;
    }
    return { mismatch: -1, bytes: at, dataBytes };
  } finally {
    await backend.close();
  }
}

/** Compare a chunk of the disk at `at` with the image; returns the first differing disk offset or -1. */
function compare(chunk: Uint8Array, at: number, size: number, dense: Uint8Array | null, marks: Array<{ offset: number; bytes: Uint8Array }>): number {
  const want = new Uint8Array(chunk.length);
  if (dense) want.set(dense.subarray(at, Math.min(size, at + chunk.length)));
  for (const m of marks) {
    const s = Math.max(m.offset, at);
    const e = Math.min(m.offset + MARK, at + chunk.length);
    if (s < e) want.set(m.bytes.subarray(s - m.offset, e - m.offset), s - at);
  }
  if (!dense && marks.every((m) => m.offset + MARK <= at || m.offset >= at + chunk.length)) {
    return isAllZero(chunk) ? -1 : at + chunk.findIndex((b) => b !== 0);
  }
  for (let i = 0; i < chunk.length; i++) if (chunk[i] !== want[i]) return at + i;
  return -1;
}

/** The latest progress of any import in this worker (for a test that kills the browser mid-way). */
let latestDoneBytes = 0;

serve({
  progressNow: () => latestDoneBytes,
  /** Import, returning the result and the progress seen. */
  import: async (args: { kind: SourceKind; spec: ImageSpec; target: ImportTarget; existing?: 'fail' | 'replace' | 'overwrite'; abortAfterBytes?: number }) => {
    const { source, size, revoke } = makeSource(args.kind, args.spec);
    const progress: TransferProgress[] = [];
    const controller = new AbortController();
    const started = performance.now();
    try {
      const result = await importImage(source, args.target, {
        size,
        existing: args.existing,
        signal: controller.signal,
        onProgress: (p) => {
          latestDoneBytes = p.doneBytes;
          progress.push(p);
          if (args.abortAfterBytes !== undefined && p.doneBytes >= args.abortAfterBytes) controller.abort(new Error('cancelled by the test'));
        },
      });
      return {
        result,
        progress: progress.map((p) => p.doneBytes),
        last: progress.at(-1),
        seconds: (performance.now() - started) / 1000,
      };
    } finally {
      revoke?.();
    }
  },
  /** Import, but let the test see the error record and how far it got. */
  importFailing: async (args: { kind: SourceKind | 'refused-url'; spec: ImageSpec; declared?: number; target: ImportTarget; abortAfterBytes?: number }) => {
    const progress: number[] = [];
    const controller = new AbortController();
    const made = args.kind === 'refused-url' ? { source: 'http://127.0.0.1:9/disk.img', size: undefined } : makeSource(args.kind, args.spec);
    try {
      await importImage(made.source, args.target, {
        size: args.declared ?? made.size,
        signal: controller.signal,
        onProgress: (p) => {
          progress.push(p.doneBytes);
          if (args.abortAfterBytes !== undefined && p.doneBytes >= args.abortAfterBytes) controller.abort(new Error('cancelled by the test'));
        },
      });
      return { error: null, progress };
    } catch (err) {
      const e = err as { name?: string; code?: string; message?: string; cause?: { message?: string; name?: string } };
      return { error: { name: e.name, code: e.code, message: e.message, cause: e.cause?.message ?? e.cause?.name ?? null, causeName: e.cause?.name ?? null }, progress };
    }
  },
  diskHash: ({ target }: { target: ImportTarget }) => diskHash(target),
  visible: ({ target }: { target: ImportTarget }) => visible(target),
  storedChunks: ({ name }: { name: string }) => storedChunks(name),
  /** Create the disk anew at the final name: proves the lock and handles were released. */
  createAgain: async ({ target, size }: { target: ImportTarget; size: number }) => {
    const backend =
      target.kind === 'opfs'
        ? await OpfsBackend.open({ name: target.name, directory: target.directory, size })
        : await IndexedDbBackend.open({ name: target.name, size });
    const got = backend.size;
    await backend.close();
    return got;
  },
  checkExport: async ({ target, spec }: { target: ImportTarget; spec: ImageSpec }) => {
    const progress: number[] = [];
    const started = performance.now();
    const r = await checkExport(target, spec, progress);
    return { ...r, progress: progress.length > 200 ? progress.filter((_, i) => i % 64 === 0).concat(progress.at(-1)!) : progress, monotonic: progress.every((p, i) => i === 0 || p > progress[i - 1]!), last: progress.at(-1), seconds: (performance.now() - started) / 1000 };
  },
  /** exportToFile, then read the File back: its size, hash (small) or the marks (sparse). */
  exportFile: async ({ target, spec }: { target: ImportTarget; spec: ImageSpec }) => {
    await clearExportFiles();
    const backend = await openTarget(target);
    let file: File;
    try {
      file = await exportToFile(backend, `${target.name}.img`);
    } finally {
      await backend.close();
    }
    if (!spec.marks) return { size: file.size, sha256: await sha256(new Uint8Array(await file.arrayBuffer())), marksOk: null };
    const marksOk = await Promise.all(
      spec.marks.map(async (offset, i) => {
        const got = new Uint8Array(await file.slice(offset, offset + MARK).arrayBuffer());
        const want = pattern(MARK, i + 1);
        return got.every((b, j) => b === want[j]);
      }),
    );
    // Between the marks: zeroes (sample up to 64 KiB after each, stopping at the next mark).
    const zeroOk = await Promise.all(
      spec.marks.map(async (offset) => {
        const end = Math.min(offset + MARK + 65536, ...spec.marks!.filter((m) => m > offset), spec.size);
        return isAllZero(new Uint8Array(await file.slice(offset + MARK, end).arrayBuffer()));
      }),
    );
    return { size: file.size, sha256: null, marksOk: marksOk.every(Boolean) && zeroOk.every(Boolean) };
  },
  /** The dense image's hash, for comparing with an export. */
  imageHash: async ({ spec, padTo }: { spec: ImageSpec; padTo?: number }) => {
    const bytes = new Uint8Array(Math.max(padTo ?? 0, spec.size));
    bytes.set(denseBytes(spec));
    return sha256(bytes);
  },
  /**
   * An IndexedDB disk with changes still in its cache (not flushed): a stored
   * chunk zeroed, a new chunk written. The export of that same open backend
   * must show the cache, not the store: its holes come from allocatedRanges.
   */
  exportUnflushed: async ({ name }: { name: string }) => {
    const chunk = 256 * 1024;
    const backend = await IndexedDbBackend.open({ name, size: 64 * chunk });
    try {
      await backend.write(2 * chunk, pattern(chunk, 21));
      await backend.write(5 * chunk, pattern(chunk, 22));
      await backend.flush();
      await backend.writeZeroes(2 * chunk, chunk, true); // stored, now zero in the cache
      await backend.write(9 * chunk + 100, pattern(1000, 23)); // only in the cache
      const ranges = await backend.allocatedRanges(0, backend.size);
      const want = new Uint8Array(backend.size);
      want.set(pattern(chunk, 22), 5 * chunk);
      want.set(pattern(1000, 23), 9 * chunk + 100);
      let at = 0;
      let mismatch = -1;
      let dataBytes = 0;
      const reader = exportStream(backend, { blockBytes: chunk, onProgress: (p) => (dataBytes = p.dataBytes) }).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const i = value.findIndex((b, j) => b !== want[at + j]);
        if (i >= 0 && mismatch < 0) mismatch = at + i;
        at += value.length;
      }
      return { ranges, mismatch, bytes: at, dataBytes };
    } finally {
      await backend.close();
    }
  },
  listing: async ({ directory }: { directory: string }) => ({
    disks: await listOpfsDisks(directory),
    hidden: await listOpfsDisks(directory ? `${directory}/${OPFS_IMPORT_FOLDER}` : OPFS_IMPORT_FOLDER),
  }),
  hiddenFolders: async () => {
    const root = await opfsDirectory('');
    const names: string[] = [];
    for await (const name of (root as unknown as { keys(): AsyncIterable<string> }).keys()) names.push(name);
    return names.sort();
  },
});
