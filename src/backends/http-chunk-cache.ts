// An optional, bounded OPFS cache of a chunked image's verified chunks, so a
// reload (or the next version of the image) does not fetch them again.
//
// Keyed by content: a chunk is stored as the file DIRECTORY/<sha256>, the hex
// SHA-256 of its uncompressed bytes — the same name the manifest gives it. Two
// versions of an image, or two images, share every chunk they have in
// common, whatever their chunk files' URLs or compression.
//
// Never trusted: a file read back is hashed again (WebCrypto) and must have
// the length the manifest implies. A torn write (the tab died while storing),
// a file another program changed, or a cache from a buggy build is dropped,
// deleted, and the chunk refetched; no unverified byte reaches the guest.
// Every OPFS failure (quota, a file another tab holds) is a miss or a skipped
// store, never an error the guest sees: the cache only ever saves requests.
// So is an OPFS step that does not settle within `OPFS_DEADLINE_MS`: a cache
// must not be able to hang a read that the network could serve (a handle
// that opens too late is closed when it does).
//
// Bounded by bytes (`maxBytes`). Eviction is least-recently-used: recency is
// kept in memory for this session (a hit or a store moves a chunk to the
// back), and at open the files already there are ordered by their
// lastModified (when they were stored). A store that would pass the bound
// first evicts from the front; a chunk larger than the bound is not stored.
// Two tabs using one directory each keep their own index; each keeps its own
// additions within the bound and treats the other's deletions as misses, so
// the folder can exceed the bound by what the other tab stored until its next
// open. Use one directory per app.
//
// Only where OPFS sync access handles exist — a dedicated worker, where the
// device runs. Elsewhere (the page's main thread, Node) `openChunkCache`
// returns null and the backend fetches as it would without a cache.

import { sha256Hex } from '../pack/manifest.ts';

export interface ChunkCacheOptions {
  /** Most bytes of chunk files kept in OPFS. */
  maxBytes: number;
  /** OPFS folder of the cache ('/'-separated). Default 'virtio-blk-web/chunk-cache'. */
  directory?: string;
}

/** Counters for tests and benchmarks. */
export interface ChunkCacheStats {
  /** Chunks served from OPFS after their hash was checked. */
  hits: number;
  /** Chunks not in the cache (or unreadable). */
  misses: number;
  /** Cached files that failed their check: deleted and refetched. */
  dropped: number;
  /** Chunks written to OPFS. */
  stored: number;
  /** Chunks deleted to stay within maxBytes. */
  evicted: number;
  /** OPFS steps that did not settle in time (counted as misses or skipped stores). */
  timeouts: number;
  /** Bytes of chunk files the index holds now. */
  bytes: number;
}

export const DEFAULT_CHUNK_CACHE_DIRECTORY = 'virtio-blk-web/chunk-cache';

const HEX_SHA256 = /^[0-9a-f]{64}$/;

/** Longest an OPFS step (open a file, open its handle) may take before the cache gives up on it. */
const OPFS_DEADLINE_MS = 5000;

class OpfsDeadline extends Error {
  override readonly name = 'OpfsDeadline';
}

/** Open `file`'s sync access handle, or throw after OPFS_DEADLINE_MS (a late handle is closed). */
async function openHandle(dir: FileSystemDirectoryHandle, name: string, create: boolean): Promise<FileSystemSyncAccessHandle> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let late = false;
  const opening = dir
    .getFileHandle(name, { create })
    .then((file) => file.createSyncAccessHandle())
    .then((handle) => {
      if (late) handle.close();
      return handle;
    });
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      late = true;
      reject(new OpfsDeadline(`OPFS did not open ${name} in ${OPFS_DEADLINE_MS} ms`));
    }, OPFS_DEADLINE_MS);
  });
  opening.catch(() => undefined);
  try {
    return await Promise.race([opening, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether this context can hold a chunk cache (OPFS with sync access handles). */
export function chunkCacheAvailable(): boolean {
  return (
    typeof navigator !== 'undefined' &&
    typeof navigator.storage?.getDirectory === 'function' &&
    typeof FileSystemFileHandle !== 'undefined' &&
    'createSyncAccessHandle' in FileSystemFileHandle.prototype
  );
}

/** Open (creating) the cache folder, or null where OPFS sync access handles do not exist. */
export async function openChunkCache(options: ChunkCacheOptions): Promise<ChunkCache | null> {
  if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes < 0) {
    throw new RangeError(`chunk cache maxBytes ${options.maxBytes} is not a whole number of bytes`);
  }
  if (!chunkCacheAvailable()) return null;
  let dir = await navigator.storage.getDirectory();
  for (const part of (options.directory ?? DEFAULT_CHUNK_CACHE_DIRECTORY).split('/').filter(Boolean)) {
    dir = await dir.getDirectoryHandle(part, { create: true });
  }
  const found: Array<{ hash: string; size: number; stored: number }> = [];
  for await (const [name, handle] of dir as unknown as AsyncIterable<[string, FileSystemHandle]>) {
    if (handle.kind !== 'file' || !HEX_SHA256.test(name)) continue;
    try {
      const file = await (handle as FileSystemFileHandle).getFile();
      found.push({ hash: name, size: file.size, stored: file.lastModified });
    } catch {
      // Held by another tab's store right now: it is not in our index, and that is all.
    }
  }
  found.sort((a, b) => a.stored - b.stored);
  const cache = new ChunkCache(dir, options.maxBytes);
  for (const f of found) cache.index(f.hash, f.size);
  await cache.trim(0);
  return cache;
}

export class ChunkCache {
  readonly maxBytes: number;
  readonly stats: ChunkCacheStats = { hits: 0, misses: 0, dropped: 0, stored: 0, evicted: 0, timeouts: 0, bytes: 0 };
  readonly #dir: FileSystemDirectoryHandle;
  /** hash → file size; Map order is recency, least recently used first. */
  readonly #entries = new Map<string, number>();
  /** Stores in progress, so one chunk is never written twice at once. */
  readonly #storing = new Map<string, Promise<void>>();
  /** Reads in progress: two blocks with the same content share one (a second handle on the file would fail). */
  readonly #reading = new Map<string, Promise<Uint8Array | null>>();

  constructor(dir: FileSystemDirectoryHandle, maxBytes: number) {
    this.#dir = dir;
    this.maxBytes = maxBytes;
  }

  /** Record a file already on disk (at open). */
  index(hash: string, size: number): void {
    this.#entries.set(hash, size);
    this.stats.bytes += size;
  }

  /** The chunk `hash` of `length` bytes, verified, or null (then fetch it). */
  get(hash: string, length: number): Promise<Uint8Array | null> {
    const already = this.#reading.get(hash);
    if (already) return already;
    const reading = this.#read(hash, length).finally(() => this.#reading.delete(hash));
    this.#reading.set(hash, reading);
    return reading;
  }

  async #read(hash: string, length: number): Promise<Uint8Array | null> {
    await this.#storing.get(hash);
    if (!this.#entries.has(hash)) {
      this.stats.misses++;
      return null;
    }
    let bytes: Uint8Array<ArrayBuffer> | null = null;
    try {
      const handle = await openHandle(this.#dir, hash, false);
      try {
        const size = handle.getSize();
        // A file of the wrong length is dropped without reading it.
        if (size === length) {
          bytes = new Uint8Array(length);
          if (handle.read(bytes, { at: 0 }) !== length) bytes = null;
        }
      } finally {
        handle.close();
      }
    } catch (err) {
      // Deleted by another tab, or held by one: a miss. Forget it; a store may bring it back.
      if (err instanceof OpfsDeadline) this.stats.timeouts++;
      this.#forget(hash);
      this.stats.misses++;
      return null;
    }
    if (bytes === null || (await sha256Hex(bytes)) !== hash) {
      this.stats.dropped++;
      await this.#delete(hash);
      return null;
    }
    this.stats.hits++;
    const size = this.#entries.get(hash);
    if (size !== undefined) {
      this.#entries.delete(hash);
      this.#entries.set(hash, size);
    }
    return bytes;
  }

  /** Keep a verified chunk. Failures (quota, a file held elsewhere) only mean it is not kept. */
  put(hash: string, bytes: Uint8Array): Promise<void> {
    if (!HEX_SHA256.test(hash) || this.#entries.has(hash) || bytes.length > this.maxBytes) return Promise.resolve();
    const already = this.#storing.get(hash);
    if (already) return already;
    const storing = this.#store(hash, bytes).finally(() => this.#storing.delete(hash));
    this.#storing.set(hash, storing);
    return storing;
  }

  async #store(hash: string, bytes: Uint8Array): Promise<void> {
    await this.trim(bytes.length);
    try {
      const handle = await openHandle(this.#dir, hash, true);
      try {
        handle.truncate(0);
        if (handle.write(bytes, { at: 0 }) !== bytes.length) throw new Error('short write');
        // No flush: losing a cached chunk in a crash costs one request, and a torn file fails its hash.
      } finally {
        handle.close();
      }
    } catch (err) {
      if (err instanceof OpfsDeadline) this.stats.timeouts++;
      await this.#delete(hash);
      return;
    }
    this.index(hash, bytes.length);
    this.stats.stored++;
    // Stores running side by side each made room for themselves only.
    await this.trim(0);
  }

  /** Evict least recently used chunks until `incoming` more bytes fit. */
  async trim(incoming: number): Promise<void> {
    for (const hash of this.#entries.keys()) {
      if (this.stats.bytes + incoming <= this.maxBytes) break;
      if (this.#storing.has(hash)) continue;
      this.stats.evicted++;
      await this.#delete(hash);
    }
  }

  #forget(hash: string): void {
    const size = this.#entries.get(hash);
    if (size === undefined) return;
    this.#entries.delete(hash);
    this.stats.bytes -= size;
  }

  async #delete(hash: string): Promise<void> {
    this.#forget(hash);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const removing = this.#dir.removeEntry(hash).catch(() => undefined);
    // A removal that hangs is left behind; the next open finds the file (and checks it before use).
    await Promise.race([removing, new Promise<void>((resolve) => (timer = setTimeout(resolve, OPFS_DEADLINE_MS)))]);
    clearTimeout(timer);
  }
}
