// The block layer both HTTP backends read through: a bounded LRU cache of
// fixed-size blocks, one shared promise per block in flight, coalescing of
// misses into runs, adaptive read-ahead, and a cap on fetches in flight.
//
// What makes a browser VM boot slowly from the network is one request per
// miss, one at a time (DESIGN.md: ~1.4 ms per 4 KiB localhost request, but
// ~250 MB/s for 1 MiB ranges). So:
// - misses are not fetched at once but collected until the current microtask
//   queue drains; by then every request the device submitted in the same batch
//   has asked, and adjacent missing blocks — from one read or several — go out
//   as one run (up to `maxRunBlocks`; 1 for a chunk-per-file source);
// - a block already being fetched is never fetched twice: later readers await
//   the same promise;
// - a read that starts where the previous one ended extends a sequential
//   run, and the read-ahead window is twice that run so far (up to
//   `readAheadBytes`); any other read ends the run. Sized by bytes, not by
//   reads: small reads inside one large block (64 KiB reads of a 256 KiB
//   chunk, as a booting guest makes) do not grow the window faster than the
//   run grows. Doubling the window per read fetched up to 8 chunks ahead of
//   1–2 chunk runs: 1562 requests on the benchmark's boot-like trace, 1223
//   now (1035 with no read-ahead at all). Read-ahead goes out as its own runs, after the demand runs, so it
//   never delays the read that asked;
// - at most `maxInFlight` runs are fetched at once; demand runs queue ahead of
//   read-ahead, and read-ahead is dropped rather than queued behind a full pipe.
// Blocks in flight are held by their promises, not by the cache, so a cache
// smaller than a run still completes its readers. A failed run rejects the
// readers waiting for it and leaves nothing behind: the next read asks again.

import { StorageError, StorageErrorCode } from './backend.ts';

/** Where the blocks come from: a byte range of one file, or one file per chunk. */
export interface BlockSource {
  /** Bytes per block; the last block may be shorter. */
  readonly blockSize: number;
  /** Size of the image in bytes. */
  readonly size: number;
  /** Most blocks one fetch may carry. */
  readonly maxRunBlocks: number;
  /** Blocks known to be all zero without asking (holes in a chunked image). */
  isHole?(index: number): boolean;
  /** Fetch blocks `first .. first + count - 1`, each exactly its length. */
  fetchRun(first: number, count: number, closed: AbortSignal): Promise<Uint8Array[]>;
}

export interface BlockCacheOptions {
  /** Bytes of blocks kept after their readers are done. Default 32 MiB. */
  cacheBytes?: number;
  /** Runs fetched at once. Default 6 (a browser's HTTP/1.1 connections per host). */
  maxInFlight?: number;
  /** Largest read-ahead window for sequential reads, in bytes (0: none). Default 2 MiB. */
  readAheadBytes?: number;
}

/** Counters for tests and benchmarks. */
export interface HttpStats {
  /** Fetches made (runs, not attempts). */
  fetches: number;
  /** Block bytes fetched. */
  bytesFetched: number;
  /** Blocks served from the cache. */
  cacheHits: number;
  /** Blocks a read had to wait for. */
  cacheMisses: number;
  /** Blocks fetched ahead of a sequential reader. */
  readAheadBlocks: number;
}

interface Pending {
  readonly promise: Promise<Uint8Array>;
  resolve(block: Uint8Array): void;
  reject(err: unknown): void;
}

function pending(): Pending {
  let resolve!: (block: Uint8Array) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<Uint8Array>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A read-ahead block nobody waits for may fail: that is not an unhandled error.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

export class BlockReader {
  readonly stats: HttpStats = { fetches: 0, bytesFetched: 0, cacheHits: 0, cacheMisses: 0, readAheadBlocks: 0 };
  readonly #source: BlockSource;
  readonly #blockCount: number;
  readonly #cacheBytes: number;
  readonly #maxInFlight: number;
  readonly #readAheadMaxBlocks: number;
  /** Map order is recency: the first entry is the least recently used. */
  readonly #cache = new Map<number, Uint8Array>();
  #cachedBytes = 0;
  /** Blocks asked for and not yet landed (queued or being fetched). */
  readonly #inFlight = new Map<number, Pending>();
  /** Blocks asked for since the last flush, not yet in a run. */
  #wanted: number[] = [];
  #wantedAhead: number[] = [];
  #flushScheduled = false;
  /** Runs waiting for a fetch slot; demand runs first. */
  readonly #queue: Array<{ first: number; count: number }> = [];
  #running = 0;
  /** Where a sequential reader would read next, how long its run is, and its current window. */
  #sequentialEnd = -1;
  #sequentialBytes = 0;
  #readAheadBlocks = 0;
  readonly #closed = new AbortController();
  readonly #zero: Uint8Array;

  constructor(source: BlockSource, options: BlockCacheOptions = {}) {
    this.#source = source;
    this.#blockCount = Math.ceil(source.size / source.blockSize);
    this.#cacheBytes = options.cacheBytes ?? 32 * 1024 * 1024;
    this.#maxInFlight = Math.max(1, options.maxInFlight ?? 6);
    this.#readAheadMaxBlocks = Math.floor((options.readAheadBytes ?? 2 * 1024 * 1024) / source.blockSize);
    this.#zero = new Uint8Array(source.blockSize);
  }

  /** Put a block in the cache (the backend's first answer at open, say). */
  seed(index: number, block: Uint8Array): void {
    this.#remember(index, block);
  }

  /** Fill `dsts`, back to back, from `offset`. The range lies inside the image. */
  async readInto(offset: number, dsts: readonly Uint8Array[]): Promise<void> {
    if (this.#closed.signal.aborted) throw new StorageError(StorageErrorCode.Closed, 'HTTP backend is closed');
    let length = 0;
    for (const d of dsts) length += d.length;
    if (length === 0) return;
    const bs = this.#source.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);

    if (offset === this.#sequentialEnd) {
      this.#sequentialBytes += length;
      this.#readAheadBlocks = Math.min(this.#readAheadMaxBlocks, Math.floor((2 * this.#sequentialBytes) / bs));
    } else {
      this.#sequentialBytes = length;
      this.#readAheadBlocks = 0;
    }
    this.#sequentialEnd = offset + length;

    const blocks: Array<Uint8Array | Promise<Uint8Array>> = [];
    for (let i = first; i <= last; i++) blocks.push(this.#block(i));
    this.#readAhead(last);

    let pos = first * bs;
    let d = 0;
    let dPos = 0;
    for (const b of blocks) {
      const block = b instanceof Uint8Array ? b : await b;
      // Copy the part of this block that overlaps [offset, offset + length).
      let from = Math.max(0, offset - pos);
      while (from < block.length && d < dsts.length) {
        const dst = dsts[d]!;
        const n = Math.min(block.length - from, dst.length - dPos);
        dst.set(block.subarray(from, from + n), dPos);
        from += n;
        dPos += n;
        if (dPos === dst.length) {
          d++;
          dPos = 0;
        }
      }
      pos += bs;
    }
  }

  /** Abort every fetch; readers waiting get a 'closed' error. */
  close(): void {
    this.#closed.abort();
    const err = new StorageError(StorageErrorCode.Closed, 'HTTP backend closed during a read');
    for (const p of this.#inFlight.values()) p.reject(err);
    this.#inFlight.clear();
    this.#queue.length = 0;
    this.#cache.clear();
    this.#cachedBytes = 0;
  }

  /** A block now, or a promise of it. */
  #block(i: number): Uint8Array | Promise<Uint8Array> {
    if (this.#source.isHole?.(i)) return this.#zero.subarray(0, this.#blockLength(i));
    const cached = this.#cache.get(i);
    if (cached) {
      this.stats.cacheHits++;
      this.#cache.delete(i);
      this.#cache.set(i, cached);
      return cached;
    }
    this.stats.cacheMisses++;
    const flying = this.#inFlight.get(i);
    if (flying) return flying.promise;
    this.#wanted.push(i);
    return this.#ask(i).promise;
  }

  /**
   * Keep the window after `last` filled, in big steps: only when less than
   * half of it is already cached or on its way is the rest asked for, so the
   * read-ahead goes out as runs of half a window, not one block per read.
   */
  #readAhead(last: number): void {
    const window = this.#readAheadBlocks;
    if (window === 0) return;
    const end = Math.min(this.#blockCount - 1, last + window);
    let i = last + 1;
    while (i <= end && (this.#cache.has(i) || this.#inFlight.has(i) || this.#source.isHole?.(i))) i++;
    if (i - (last + 1) >= window / 2) return;
    for (; i <= end; i++) this.#prefetch(i);
  }

  /** Ask for block `i` ahead of a sequential reader, unless it is there or the pipe is full. */
  #prefetch(i: number): void {
    if (this.#source.isHole?.(i) || this.#cache.has(i) || this.#inFlight.has(i)) return;
    // Read-ahead never queues behind a full pipe: it would only delay demand.
    if (this.#running + this.#queue.length >= this.#maxInFlight) return;
    this.stats.readAheadBlocks++;
    this.#wantedAhead.push(i);
    this.#ask(i);
  }

  #ask(i: number): Pending {
    const p = pending();
    this.#inFlight.set(i, p);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      // Every read submitted in this batch asks before the runs are cut.
      queueMicrotask(() => this.#flush());
    }
    return p;
  }

  #blockLength(i: number): number {
    return Math.min(this.#source.blockSize, this.#source.size - i * this.#source.blockSize);
  }

  /** Turn the blocks asked for into runs and start what fits. */
  #flush(): void {
    this.#flushScheduled = false;
    const demand = this.#runs(this.#wanted);
    const ahead = this.#runs(this.#wantedAhead);
    this.#wanted = [];
    this.#wantedAhead = [];
    this.#queue.push(...demand, ...ahead);
    this.#pump();
  }

  /** Sorted, de-duplicated indices → runs of consecutive blocks, each at most maxRunBlocks. */
  #runs(indices: number[]): Array<{ first: number; count: number }> {
    const sorted = [...new Set(indices)].sort((a, b) => a - b);
    const runs: Array<{ first: number; count: number }> = [];
    for (const i of sorted) {
      const run = runs[runs.length - 1];
      if (run && run.first + run.count === i && run.count < this.#source.maxRunBlocks) run.count++;
      else runs.push({ first: i, count: 1 });
    }
    return runs;
  }

  #pump(): void {
    while (this.#running < this.#maxInFlight && this.#queue.length > 0) {
      const run = this.#queue.shift()!;
      this.#running++;
      void this.#fetch(run.first, run.count).finally(() => {
        this.#running--;
        this.#pump();
      });
    }
  }

  async #fetch(first: number, count: number): Promise<void> {
    let blocks: Uint8Array[];
    try {
      this.stats.fetches++;
      blocks = await this.#source.fetchRun(first, count, this.#closed.signal);
    } catch (err) {
      for (let i = first; i < first + count; i++) {
        this.#inFlight.get(i)?.reject(err);
        this.#inFlight.delete(i);
      }
      return;
    }
    for (let k = 0; k < count; k++) {
      const block = blocks[k]!;
      this.stats.bytesFetched += block.length;
      const p = this.#inFlight.get(first + k);
      this.#inFlight.delete(first + k);
      if (this.#closed.signal.aborted) continue;
      this.#remember(first + k, block);
      p?.resolve(block);
    }
  }

  #remember(i: number, block: Uint8Array): void {
    if (block.length > this.#cacheBytes) return;
    const old = this.#cache.get(i);
    if (old) this.#cachedBytes -= old.length;
    this.#cache.delete(i);
    this.#cache.set(i, block);
    this.#cachedBytes += block.length;
    for (const [key, value] of this.#cache) {
      if (this.#cachedBytes <= this.#cacheBytes) break;
      this.#cache.delete(key);
      this.#cachedBytes -= value.length;
    }
  }
}
