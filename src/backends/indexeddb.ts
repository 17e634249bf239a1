// A disk in IndexedDB, as fixed-size chunks: one database per disk
// ("virtio-blk-web:NAME"), one object store, chunk i under the number key i,
// the disk's description under the string key 'meta'.
//
// Chunk size: 256 KiB by default, chosen by measurement (docs/indexeddb.md has
// the figures). Chromium keeps values over 64 KiB as separate blob files; in
// 'strict' 4 MiB transactions those wrote 4–18× faster than inline values of
// 16–60 KiB, and read 2–6× faster, while a cold 4 KiB write into a 256 KiB
// chunk (read-modify-write) still ran at hundreds per second. A disk keeps the
// chunk size it was made with.
//
// Sparse: a missing chunk reads as zeroes. DISCARD and WRITE_ZEROES delete
// whole chunks and zero partial ones in place.
//
// Write-back: writes land in a cache of chunks (exact-size ArrayBuffers of our
// own, never views on guest memory: a SharedArrayBuffer cannot be stored and a
// subarray would store its whole buffer). A partial-chunk write merges into
// the cached chunk, loading it first if needed. Dirty chunks go to IndexedDB
// many per transaction: in the background once half the cache is dirty and
// in no transaction yet, and with back-pressure (the write waits) once all of
// it is. `put` clones its value synchronously, so a chunk can be written
// again while its transaction is still in flight; a version number per chunk
// says which write a completed transaction made durable.
//
// Durability: every readwrite transaction is 'strict' (Chrome's default
// behaves like 'relaxed', DESIGN.md). FLUSH sends every dirty chunk and
// settles only when every transaction holding a write completed before it has
// fired `complete`.
//
// Crash consistency, and why a FLUSH spanning several transactions need not
// be atomic: a chunk is one value, and an IndexedDB transaction commits whole
// or not at all, so after a crash every chunk holds the content of one of the
// puts made to it (old or new, never a mix); a sector never spans two chunks
// (chunks are multiples of 4 KiB). The promise covers the writes completed
// before the last *completed* FLUSH: all of them were in transactions that
// fired `complete` under 'strict' before that FLUSH completed. A crash in the
// middle of a later FLUSH breaks no promise, since that FLUSH never completed:
// the writes it carried may survive in part, exactly as writes to a real
// disk's volatile cache may. No generation marker is needed for that. The one
// multi-record change that must be atomic, resize (meta plus the chunks past
// the end), is one transaction.
//
// Creation is atomic too: the disk exists exactly when its 'meta' record does,
// and that record is written in one transaction (which also clears any chunks
// a half-deleted disk left behind). A crash before it leaves an empty
// database that the next creation reuses and that opening without a size
// reports as 'not-found'.
//
// A disk being filled (an image import, src/transfer) is created `incomplete`:
// its 'meta' record says so, and until `markComplete()` rewrites it — after a
// FLUSH, in one transaction — the disk is no disk: listing skips it, opening
// without a size is 'not-found', and the next creation clears it. A crash in
// the middle of an import therefore leaves no half-filled disk under the
// name (IndexedDB cannot rename a database, so OPFS's build-then-move has no
// equivalent here; a marker written last is the same guarantee).
//
// Ownership: a Web Lock per disk, exclusive for writers and shared for
// read-only openers, the same rule and the same typed 'in-use' error as OPFS
// (src/backends/web-lock.ts).
//
// idb-keyval supplies the transaction plumbing (`UseStore`, `getMany`,
// `promisifyRequest`). Where it cannot express something, IndexedDB is used
// directly, and only there: opening the database ourselves (idb-keyval's
// `createStore` never closes its connection, which would block deleting the
// disk, and has no `durability`), deleting a range of keys (resize), and
// listing and deleting databases.

import { getMany, promisifyRequest, type UseStore } from 'idb-keyval';
import { StorageError, StorageErrorCode, toStorageError, type BlockBackend } from './backend.ts';
import { acquireLock, acquireLockWithin, inUseError, type HeldLock } from './web-lock.ts';

export interface IndexedDbBackendOptions {
  /** Name of the disk (any non-empty string). */
  name: string;
  /**
   * Size in bytes for a disk that does not exist yet. An existing disk keeps
   * its size. Without `size` the disk must exist.
   */
  size?: number;
  /** Open read-only: read-only openers can share a disk; none can share it with a writer. */
  readOnly?: boolean;
  /** Chunk size in bytes for a new disk (a multiple of 4096, at most 16 MiB). Default 256 KiB. */
  chunkBytes?: number;
  /**
   * Bytes of dirty chunks kept before writes wait for write-back (default
   * 32 MiB). Clean chunks are cached up to the same amount.
   */
  cacheBytes?: number;
  /** How long to keep trying while another holder has the disk, in ms (default 0). */
  lockWaitMs?: number;
  /**
   * Create the disk incomplete (only with `size`, and only when no complete
   * disk has the name): it does not exist for anyone else until
   * `markComplete()`. For importers.
   */
  incomplete?: boolean;
}

/** Chunk size for new disks (see the header and docs/indexeddb.md). */
export const DEFAULT_INDEXEDDB_CHUNK_BYTES = 256 * 1024;
const DEFAULT_CACHE_BYTES = 32 * 1024 * 1024;
/** At most this many bytes of chunks per write-back transaction. */
const TRANSACTION_BYTES = 8 * 1024 * 1024;
const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
const STORE = 'chunks';
const META_KEY = 'meta';
const DATABASE_PREFIX = 'virtio-blk-web:';

/** The disk's description, the 'meta' record. */
interface DiskMeta {
  format: 1;
  size: number;
  chunkBytes: number;
  /** Set while an import fills a new disk (see the header); absent once complete. */
  incomplete?: true;
}

/** The database that holds disk `name`. */
export function indexedDbDatabaseName(name: string): string {
  return DATABASE_PREFIX + name;
}

/** The Web Lock that guards disk `name`; exported so tools can query `navigator.locks`. */
export function indexedDbLockName(name: string): string {
  return `virtio-blk-web:idb:${name}`;
}

/**
 * One cached chunk. `data` is null for a chunk of zeroes (absent from the
 * store, or to be deleted from it); otherwise a whole-buffer view of an
 * ArrayBuffer of exactly chunkBytes that only this entry references.
 * Invariant: savedVersion <= pendingVersion <= version; the chunk is dirty
 * while savedVersion < version, in flight while pendingVersion > savedVersion.
 */
interface Chunk {
  data: Uint8Array | null;
  /** Bumped by every change. */
  version: number;
  /** The version a transaction in flight carries. */
  pendingVersion: number;
  /** The version the store is known to hold durably. */
  savedVersion: number;
}

export class IndexedDbBackend implements BlockBackend {
  readonly name: string;
  readonly readOnly: boolean;
  readonly supportsDiscard = true;
  readonly supportsWriteZeroes = true;
  readonly chunkBytes: number;
  #size: number;
  /** Created `incomplete` and not yet marked complete (see the header). */
  #incomplete: boolean;
  /** Null once closed. */
  #db: IDBDatabase | null;
  readonly #store: UseStore;
  #lock: HeldLock | null;
  readonly #cacheBytes: number;
  /** Cached chunks by index, least recently used first. */
  readonly #chunks = new Map<number, Chunk>();
  /** Bytes of chunks with savedVersion < version. */
  #dirtyBytes = 0;
  /** Bytes of chunks with pendingVersion < version: dirty and in no transaction yet. */
  #unsentBytes = 0;
  /** Write-back transactions not yet settled, oldest first. */
  readonly #inFlight = new Set<Promise<void>>();
  /** The last write-back failure not yet reported by a FLUSH. */
  #writeBackError: unknown = null;
  /** Every call runs after the previous one finished (see `#serial`). */
  #tail: Promise<unknown> = Promise.resolve();

  private constructor(name: string, db: IDBDatabase, meta: DiskMeta, readOnly: boolean, lock: HeldLock | null, cacheBytes: number) {
    this.name = name;
    this.#db = db;
    this.#size = meta.size;
    this.#incomplete = meta.incomplete === true;
    this.chunkBytes = meta.chunkBytes;
    this.readOnly = readOnly;
    this.#lock = lock;
    this.#cacheBytes = cacheBytes;
    this.#store = (mode, callback) => {
      // 'strict' for every readwrite transaction: see the header.
      const tx = this.#database().transaction(STORE, mode, { durability: mode === 'readwrite' ? 'strict' : 'default' });
      return Promise.resolve(callback(tx.objectStore(STORE)));
    };
  }

  /**
   * Open (or create, when `size` is given) a disk. Throws StorageError:
   * 'in-use' when another tab or worker holds it, 'not-found' when it does
   * not exist and no size was given, 'unsupported' without IndexedDB.
   */
  static async open(options: IndexedDbBackendOptions): Promise<IndexedDbBackend> {
    const { name, size, readOnly = false } = options;
    const chunkBytes = options.chunkBytes ?? DEFAULT_INDEXEDDB_CHUNK_BYTES;
    const cacheBytes = options.cacheBytes ?? DEFAULT_CACHE_BYTES;
    if (name === '') throw new RangeError('an IndexedDB disk needs a name');
    if (size !== undefined && !(Number.isSafeInteger(size) && size >= 0)) {
      throw new RangeError(`disk size ${size} is not a whole number of bytes`);
    }
    if (!(Number.isSafeInteger(chunkBytes) && chunkBytes > 0 && chunkBytes % 4096 === 0 && chunkBytes <= MAX_CHUNK_BYTES)) {
      throw new RangeError(`chunk size ${chunkBytes} is not a multiple of 4096 bytes up to ${MAX_CHUNK_BYTES}`);
    }
    if (!(cacheBytes >= chunkBytes)) throw new RangeError(`cache of ${cacheBytes} bytes holds no chunk of ${chunkBytes}`);
    if (typeof indexedDB === 'undefined') {
      throw new StorageError(StorageErrorCode.Unsupported, `IndexedDB disk "${name}": no IndexedDB here`);
    }
    const lock = await acquireLockWithin(
      indexedDbLockName(name),
      readOnly ? 'shared' : 'exclusive',
      () => inUseError(`IndexedDB disk "${name}"`),
      options.lockWaitMs ?? 0,
    );
    let db: IDBDatabase | undefined;
    try {
      db = await openDatabase(name);
      let meta = await readMeta(db);
      if (meta?.incomplete) meta = undefined; // an import that never finished: no disk
      if (meta && options.incomplete) {
        throw new StorageError(StorageErrorCode.Exists, `IndexedDB disk "${name}" exists: an incomplete disk is made only under a free name`);
      }
      if (!meta) {
        if (size === undefined || readOnly) {
          throw new StorageError(StorageErrorCode.NotFound, `IndexedDB disk "${name}" does not exist (give a size to create it)`);
        }
        meta = { format: 1, size, chunkBytes, ...(options.incomplete ? { incomplete: true as const } : {}) };
        await createDisk(db, meta);
      }
      return new IndexedDbBackend(name, db, meta, readOnly, lock, cacheBytes);
    } catch (err) {
      db?.close();
      lock?.release();
      await lock?.released;
      throw err instanceof StorageError || err instanceof RangeError ? err : toStorageError(err, `IndexedDB disk "${name}"`);
    }
  }

  get size(): number {
    return this.#size;
  }

  /** Chunks in the cache, and how many of them are dirty (not yet durable). */
  get cacheState(): { cachedChunks: number; dirtyChunks: number; inFlightTransactions: number } {
    let dirty = 0;
    for (const c of this.#chunks.values()) if (c.savedVersion < c.version) dirty++;
    return { cachedChunks: this.#chunks.size, dirtyChunks: dirty, inFlightTransactions: this.#inFlight.size };
  }

  /**
   * The chunks in [offset, offset + length) that hold data (BlockBackend's
   * optional hook, for exports): a cached chunk counts by its content, any
   * other by whether the store has its key. Asks the store for keys only, no
   * values, so the holes of a sparse disk cost nothing to find.
   */
  allocatedRanges(offset: number, length: number): Promise<Array<[number, number]>> {
    return this.#serial(async () => {
      this.#check(offset, length);
      if (length === 0) return [];
      const c = this.chunkBytes;
      const first = Math.floor(offset / c);
      const last = Math.floor((offset + length - 1) / c);
      let keys: IDBValidKey[];
      try {
        keys = await this.#store('readonly', (store) => promisifyRequest(store.getAllKeys(IDBKeyRange.bound(first, last))));
      } catch (err) {
        throw toStorageError(err, `IndexedDB disk "${this.name}": allocated ranges`);
      }
      const held = new Set(keys as number[]);
      for (const [index, chunk] of this.#chunks) {
        if (index < first || index > last) continue;
        if (chunk.data) held.add(index);
        else held.delete(index);
      }
      const ranges: Array<[number, number]> = [];
      for (const index of [...held].sort((a, b) => a - b)) {
        const start = Math.max(offset, index * c);
        const end = Math.min(offset + length, (index + 1) * c);
        const previous = ranges[ranges.length - 1];
        if (previous && previous[1] === start) previous[1] = end;
        else ranges.push([start, end]);
      }
      return ranges;
    });
  }

  read(offset: number, dst: Uint8Array): Promise<void> {
    return this.#serial(async () => {
      this.#check(offset, dst.length);
      await this.#load(this.#span(offset, dst.length), 'read');
      this.#forEachPiece(offset, dst.length, (chunk, at, length, done) => {
        const data = chunk.data;
        if (data) dst.set(data.subarray(at, at + length), done);
        else dst.fill(0, done, done + length);
      });
    });
  }

  write(offset: number, src: Uint8Array): Promise<void> {
    return this.#serial(async () => {
      this.#checkWritable();
      this.#check(offset, src.length);
      await this.#makeRoom();
      // Only chunks the write covers in part need their old content.
      await this.#load(this.#partialEnds(offset, src.length), 'write');
      this.#forEachPiece(offset, src.length, (chunk, at, length, done) => {
        chunk.data ??= new Uint8Array(this.chunkBytes);
        chunk.data.set(src.subarray(done, done + length), at);
        this.#touch(chunk);
      });
      this.#writeBackIfHalfFull();
    });
  }

  discard(offset: number, length: number): Promise<void> {
    // Reads after a discard return zeroes: deleting chunks costs no more.
    return this.writeZeroes(offset, length, true);
  }

  writeZeroes(offset: number, length: number, _mayUnmap: boolean): Promise<void> {
    // Whole chunks are deleted either way: a missing chunk reads as zeroes,
    // so unmapping and writing zeroes are the same thing here.
    return this.#serial(async () => {
      this.#checkWritable();
      this.#check(offset, length);
      if (length === 0) return;
      await this.#makeRoom();
      await this.#load(this.#partialEnds(offset, length), 'write-zeroes');
      this.#forEachPiece(offset, length, (chunk, at, n) => {
        if (n === this.chunkBytes) chunk.data = null;
        else if (chunk.data) chunk.data.fill(0, at, at + n);
        else return; // Already zeroes.
        this.#touch(chunk);
      });
      this.#writeBackIfHalfFull();
    });
  }

  /**
   * Make every completed write durable: send every dirty chunk, then wait
   * until every transaction carrying one has fired `complete`.
   */
  flush(): Promise<void> {
    if (this.readOnly) return this.#serial(async () => void this.#database());
    return this.#serial(async () => this.#flushNow());
  }

  /**
   * Make an `incomplete` disk a disk: flush every write, then rewrite 'meta'
   * without the marker in one strict transaction. Nothing for a complete disk.
   */
  markComplete(): Promise<void> {
    return this.#serial(async () => {
      this.#checkWritable();
      if (!this.#incomplete) return;
      await this.#flushNow();
      const meta: DiskMeta = { format: 1, size: this.#size, chunkBytes: this.chunkBytes };
      try {
        await this.#store('readwrite', (store) => {
          store.put(meta, META_KEY);
          return promisifyRequest(store.transaction);
        });
      } catch (err) {
        throw toStorageError(err, `IndexedDB disk "${this.name}": marking the import complete`);
      }
      this.#incomplete = false;
    });
  }

  /** Change the size. Flushes first; the new size and the chunks it drops change in one transaction. */
  resize(newSize: number): Promise<void> {
    return this.#serial(async () => {
      this.#checkWritable();
      if (!(Number.isSafeInteger(newSize) && newSize >= 0)) {
        throw new StorageError(StorageErrorCode.OutOfRange, `disk size ${newSize} is not a whole number of bytes`);
      }
      await this.#flushNow();
      const keep = Math.ceil(newSize / this.chunkBytes);
      const tailBytes = newSize % this.chunkBytes;
      // The chunk the new end falls in: its bytes past the end must read as
      // zeroes if the disk grows again.
      let tail: Chunk | undefined;
      if (tailBytes !== 0 && newSize < this.#size) {
        await this.#load([keep - 1], 'resize');
        tail = this.#chunks.get(keep - 1)!;
        tail.data?.fill(0, tailBytes);
      }
      const meta: DiskMeta = { format: 1, size: newSize, chunkBytes: this.chunkBytes, ...(this.#incomplete ? { incomplete: true as const } : {}) };
      try {
        await this.#store('readwrite', (store) => {
          // Numbers sort before strings in IndexedDB, so this range holds
          // chunk keys only, never 'meta'. idb-keyval has no range delete.
          if (newSize < this.#size) store.delete(IDBKeyRange.bound(keep, Infinity));
          if (tail) tail.data ? store.put(tail.data.buffer, keep - 1) : store.delete(keep - 1);
          store.put(meta, META_KEY);
          return promisifyRequest(store.transaction);
        });
      } catch (err) {
        // The store still holds the old size and chunks; forget what we changed.
        if (tail) this.#chunks.delete(keep - 1);
        throw toStorageError(err, `IndexedDB disk "${this.name}": resize to ${newSize} bytes`);
      }
      for (const index of [...this.#chunks.keys()]) if (index >= keep) this.#chunks.delete(index);
      this.#size = newSize;
    });
  }

  /** Flush, close the database and let go of the lock. */
  close(): Promise<void> {
    return this.#serial(async () => {
      if (!this.#db) return;
      try {
        if (!this.readOnly) await this.#flushNow();
      } finally {
        this.#db.close();
        this.#db = null;
        this.#chunks.clear();
        const lock = this.#lock;
        this.#lock = null;
        lock?.release();
        await lock?.released;
      }
    });
  }

  /**
   * Run `body` after every earlier call has finished. One call at a time keeps
   * read-after-write and merges simple; IndexedDB serialises readwrite
   * transactions on a store anyway, and transactions stay in flight across
   * calls, so write-back still overlaps with the guest's next requests.
   */
  #serial<T>(body: () => Promise<T>): Promise<T> {
    // Eviction happens here, between calls, and nowhere else: a call relies
    // on the chunks it loaded staying cached until it is done with them (a
    // read larger than the cache, or a completion callback evicting between
    // a load and the copy, would otherwise see zeroes).
    const run = this.#tail.then(body).finally(() => this.#evictClean());
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #flushNow(): Promise<void> {
    this.#database();
    const covered: Array<[Chunk, number]> = [];
    for (const chunk of this.#chunks.values()) if (chunk.savedVersion < chunk.version) covered.push([chunk, chunk.version]);
    this.#sendDirty();
    await Promise.allSettled([...this.#inFlight]);
    // A chunk still short of the version it had when the FLUSH began sat in
    // a transaction that failed; that failure is this FLUSH's answer.
    if (covered.some(([chunk, version]) => chunk.savedVersion < version)) {
      const error = this.#writeBackError;
      this.#writeBackError = null;
      throw toStorageError(error ?? new Error('a write-back transaction failed'), `IndexedDB disk "${this.name}": flush`);
    }
    this.#writeBackError = null;
  }

  /** Back-pressure: while the dirty chunks fill the cache, send them and wait for the oldest transaction. */
  async #makeRoom(): Promise<void> {
    while (this.#dirtyBytes + this.chunkBytes > this.#cacheBytes) {
      this.#sendDirty();
      const oldest = this.#inFlight.values().next();
      if (oldest.done) break;
      try {
        await oldest.value;
      } catch (err) {
        // Nothing of this request was applied: it fails, the cache keeps its dirty chunks.
        throw toStorageError(err, `IndexedDB disk "${this.name}": write-back`);
      }
    }
  }

  /**
   * Background write-back, once half the cache is dirty and in no
   * transaction yet. Counting the chunks in flight too would send every
   * write after the first batch in a transaction of its own while that batch
   * is in flight (1 MiB transactions instead of 4 MiB with an 8 MiB cache),
   * and each 'strict' transaction costs a sync to disk.
   */
  #writeBackIfHalfFull(): void {
    if (this.#unsentBytes * 2 >= this.#cacheBytes) this.#sendDirty();
  }

  /** Put every dirty chunk that no transaction carries yet, TRANSACTION_BYTES per transaction. */
  #sendDirty(): void {
    let batch: Array<[number, Chunk]> = [];
    for (const [index, chunk] of this.#chunks) {
      if (chunk.pendingVersion >= chunk.version) continue;
      batch.push([index, chunk]);
      if ((batch.length + 1) * this.chunkBytes > TRANSACTION_BYTES) {
        this.#send(batch);
        batch = [];
      }
    }
    if (batch.length > 0) this.#send(batch);
  }

  #send(batch: Array<[number, Chunk]>): void {
    const versions = batch.map(([, chunk]) => chunk.version);
    const done = this.#store('readwrite', (store) => {
      for (const [index, chunk] of batch) {
        // put() clones the value now, synchronously: the chunk may change
        // again while this transaction is in flight.
        if (chunk.data) store.put(chunk.data.buffer, index);
        else store.delete(index);
      }
      return promisifyRequest(store.transaction);
    });
    batch.forEach(([, chunk], i) => this.#setPending(chunk, versions[i]!));
    const settled = done.then(
      () => {
        batch.forEach(([, chunk], i) => {
          const version = versions[i]!;
          if (chunk.savedVersion < version) {
            if (chunk.version === version) this.#dirtyBytes -= this.chunkBytes;
            chunk.savedVersion = version;
          }
        });
      },
      (err: unknown) => {
        // Not durable: send these chunks again with the next write-back.
        batch.forEach(([, chunk]) => this.#setPending(chunk, chunk.savedVersion));
        this.#writeBackError = err;
        throw err;
      },
    );
    this.#inFlight.add(settled);
    settled.then(
      () => this.#inFlight.delete(settled),
      () => this.#inFlight.delete(settled),
    );
  }

  /** Mark a cached chunk changed (dirty) and most recently used. */
  #touch(chunk: Chunk): void {
    if (chunk.savedVersion === chunk.version) this.#dirtyBytes += this.chunkBytes;
    if (chunk.pendingVersion === chunk.version) this.#unsentBytes += this.chunkBytes;
    chunk.version++;
  }

  /** Set the version a transaction carries, keeping #unsentBytes in step. */
  #setPending(chunk: Chunk, version: number): void {
    const wasUnsent = chunk.pendingVersion < chunk.version;
    chunk.pendingVersion = version;
    const isUnsent = version < chunk.version;
    if (wasUnsent !== isUnsent) this.#unsentBytes += isUnsent ? this.chunkBytes : -this.chunkBytes;
  }

  /** Make sure chunks `indices` are cached, loading the missing ones in one transaction. */
  async #load(indices: number[], what: string): Promise<void> {
    const missing: number[] = [];
    for (const index of indices) {
      const chunk = this.#chunks.get(index);
      if (chunk) {
        // Most recently used goes last.
        this.#chunks.delete(index);
        this.#chunks.set(index, chunk);
      } else {
        missing.push(index);
      }
    }
    if (missing.length === 0) return;
    let values: unknown[];
    try {
      values = await getMany(missing, this.#store);
    } catch (err) {
      throw toStorageError(err, `IndexedDB disk "${this.name}": ${what}`);
    }
    missing.forEach((index, i) => {
      const value = values[i];
      if (value !== undefined && !(value instanceof ArrayBuffer && value.byteLength === this.chunkBytes)) {
        throw new StorageError(StorageErrorCode.Corrupt, `IndexedDB disk "${this.name}": chunk ${index} is not ${this.chunkBytes} bytes`);
      }
      this.#chunks.set(index, { data: value ? new Uint8Array(value) : null, version: 0, pendingVersion: 0, savedVersion: 0 });
    });
  }

  /** Drop the least recently used clean chunks while the cache holds more than its share of them. */
  #evictClean(): void {
    let cleanBytes = this.#chunks.size * this.chunkBytes - this.#dirtyBytes;
    if (cleanBytes <= this.#cacheBytes) return;
    for (const [index, chunk] of this.#chunks) {
      if (cleanBytes <= this.#cacheBytes) break;
      if (chunk.savedVersion === chunk.version && chunk.pendingVersion === chunk.version) {
        this.#chunks.delete(index);
        cleanBytes -= this.chunkBytes;
      }
    }
  }

  /** Indices of the chunks a range touches. */
  #span(offset: number, length: number): number[] {
    if (length === 0) return [];
    const first = Math.floor(offset / this.chunkBytes);
    const last = Math.floor((offset + length - 1) / this.chunkBytes);
    return Array.from({ length: last - first + 1 }, (_, i) => first + i);
  }

  /** Indices of the (at most two) chunks a range covers only in part. */
  #partialEnds(offset: number, length: number): number[] {
    if (length === 0) return [];
    const c = this.chunkBytes;
    const ends = new Set<number>();
    if (offset % c !== 0 || length < c) ends.add(Math.floor(offset / c));
    const end = offset + length;
    if (end % c !== 0) ends.add(Math.floor(end / c));
    return [...ends];
  }

  /**
   * Call `visit` for each chunk a range touches, with the offset inside the
   * chunk, the bytes there, and the bytes of the range before it. Chunks not
   * cached are created as zeroes (callers load the ones whose content matters).
   */
  #forEachPiece(offset: number, length: number, visit: (chunk: Chunk, at: number, length: number, done: number) => void): void {
    for (let done = 0; done < length; ) {
      const index = Math.floor((offset + done) / this.chunkBytes);
      const at = (offset + done) % this.chunkBytes;
      const n = Math.min(this.chunkBytes - at, length - done);
      let chunk = this.#chunks.get(index);
      if (!chunk) {
        chunk = { data: null, version: 0, pendingVersion: 0, savedVersion: 0 };
        this.#chunks.set(index, chunk);
      }
      visit(chunk, at, n, done);
      done += n;
    }
  }

  #database(): IDBDatabase {
    if (!this.#db) throw new StorageError(StorageErrorCode.Closed, `IndexedDB disk "${this.name}" is closed`);
    return this.#db;
  }

  #check(offset: number, length: number): void {
    this.#database();
    if (!(offset >= 0 && length >= 0 && Number.isSafeInteger(offset + length) && offset + length <= this.#size)) {
      throw new StorageError(StorageErrorCode.OutOfRange, `range ${offset}+${length} outside disk of ${this.#size} bytes`);
    }
  }

  #checkWritable(): void {
    this.#database();
    if (this.readOnly) throw new StorageError(StorageErrorCode.ReadOnly, `IndexedDB disk "${this.name}" is open read-only`);
  }
}

/** Delete a disk. Throws 'in-use' while someone has it open, 'not-found' when it does not exist. */
export async function deleteIndexedDbDisk(name: string): Promise<void> {
  const lock = await acquireLock(indexedDbLockName(name), 'exclusive', () => inUseError(`IndexedDB disk "${name}"`));
  try {
    // A database that is no disk (an incomplete import, a creation cut short)
    // is deleted too: that is how an importer takes back what it began.
    const databases = await indexedDB.databases();
    if (!databases.some((d) => d.name === indexedDbDatabaseName(name))) {
      throw new StorageError(StorageErrorCode.NotFound, `IndexedDB disk "${name}" does not exist`);
    }
    // idb-keyval cannot delete a database.
    await promisifyRequest(indexedDB.deleteDatabase(indexedDbDatabaseName(name)));
  } catch (err) {
    throw toStorageError(err, `IndexedDB disk "${name}": delete`);
  } finally {
    lock?.release();
    await lock?.released;
  }
}

/**
 * The disks in IndexedDB with their sizes (a database without its 'meta'
 * record, left by a crash during creation, is no disk). Reading a disk's
 * size needs no lock: the 'meta' record changes only in one transaction.
 */
export async function listIndexedDbDisks(): Promise<Array<{ name: string; size: number; chunkBytes: number }>> {
  // idb-keyval cannot list databases.
  const databases = await indexedDB.databases();
  const disks: Array<{ name: string; size: number; chunkBytes: number }> = [];
  for (const { name: dbName } of databases) {
    if (!dbName?.startsWith(DATABASE_PREFIX)) continue;
    const name = dbName.slice(DATABASE_PREFIX.length);
    const db = await openDatabase(name);
    try {
      const meta = await readMeta(db);
      if (meta && !meta.incomplete) disks.push({ name, size: meta.size, chunkBytes: meta.chunkBytes });
    } finally {
      db.close();
    }
  }
  return disks.sort((a, b) => a.name.localeCompare(b.name));
}

/** Open (creating when missing) the disk's database with its one store. */
async function openDatabase(name: string): Promise<IDBDatabase> {
  const request = indexedDB.open(indexedDbDatabaseName(name), 1);
  request.onupgradeneeded = () => request.result.createObjectStore(STORE);
  const db = await promisifyRequest(request);
  // Someone deleting or upgrading the database (only possible without Web
  // Locks) must not hang on us: let go, and later calls fail 'closed'.
  db.onversionchange = () => db.close();
  return db;
}

async function readMeta(db: IDBDatabase): Promise<DiskMeta | undefined> {
  const tx = db.transaction(STORE, 'readonly');
  const meta = (await promisifyRequest(tx.objectStore(STORE).get(META_KEY))) as DiskMeta | undefined;
  if (meta === undefined) return undefined;
  if (meta.format !== 1 || !Number.isSafeInteger(meta.size) || !Number.isSafeInteger(meta.chunkBytes) || meta.chunkBytes <= 0) {
    throw new StorageError(StorageErrorCode.Corrupt, `IndexedDB database "${db.name}" does not hold a disk this version can read`);
  }
  return meta;
}

/** Write the 'meta' record (the disk now exists) and nothing else, in one strict transaction. */
async function createDisk(db: IDBDatabase, meta: DiskMeta): Promise<void> {
  const tx = db.transaction(STORE, 'readwrite', { durability: 'strict' });
  const store = tx.objectStore(STORE);
  store.clear();
  store.put(meta, META_KEY);
  await promisifyRequest(tx);
}
