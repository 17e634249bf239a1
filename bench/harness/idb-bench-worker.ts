// The IndexedDB benchmark's guest and its raw baseline, in one worker
// (bench/node/indexeddb.ts drives it through idb-bench-page.ts).
//
// `device` runs a list of requests (reads or writes, each an offset and a
// length) through the guest driver at a queue depth; a write list ends with
// a FLUSH, so that a write row counts the time to make its data durable,
// not only to land in the backend's write-back cache. `raw` does to
// IndexedDB what the backend must do for the same list, with nothing else:
// the chunks a request covers (the same chunk size, keys and value type as
// src/backends/indexeddb.ts), read with one `get` per chunk in one readonly
// transaction per request; writes merged into chunk buffers and put in
// 'strict' readwrite transactions batched as the backend batches them
// (write-back once half its cache is dirty, at most TRANSACTION_BYTES per
// transaction, waiting for the oldest while the whole cache is in flight),
// then the final wait for every transaction — the FLUSH. A partial-chunk
// write first gets the chunk, as the backend's read-modify-write does. The
// raw side keeps no read cache: the device's disk is given a small one, so
// that its reads go to IndexedDB too (bench/node/indexeddb.ts says how often
// they hit).
//
// `flushLatency`: a 4 KiB write then a timed FLUSH, against a timed 'strict'
// put of one chunk.

import { BlkStatus, SECTOR_SIZE, BlkRequestType } from '../../src/block/constants.ts';
import { VirtioBlkDriver, type Segment } from '../../src/driver/driver.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';
import { MmioRegisters, MmioWord, type MmioState } from '../../src/virtio/mmio/mmio.ts';
import { serve } from '../../e2e/harness/rpc.ts';

/** One request: byte offset and length (multiples of 512). */
export type IdbRequest = readonly [offset: number, length: number];

export interface IdbRunResult {
  seconds: number;
  bytes: number;
  requests: number;
  ioErrors: number;
}

/** src/backends/indexeddb.ts's TRANSACTION_BYTES: the most chunk bytes one write-back transaction carries. */
const TRANSACTION_BYTES = 8 * 1024 * 1024;
const RAW_DATABASE = 'virtio-blk-web-bench:raw';

let driver: VirtioBlkDriver | null = null;
let memory: GuestMemory | null = null;
let irq: Int32Array | null = null;
let buffers: Segment[] = [];

function need(): VirtioBlkDriver {
  if (!driver) throw new Error('no disk attached');
  return driver;
}

/** Sleep on the IRQ word until a completion is there (at most 30 s). */
function reapSome(d: VirtioBlkDriver): ReturnType<VirtioBlkDriver['reap']> {
  let done = d.reap();
  const from = performance.now();
  while (done.length === 0) {
    Atomics.wait(irq!, MmioWord.InterruptStatus, 0, 1000);
    d.ackInterrupt();
    done = d.reap();
    if (done.length === 0 && performance.now() - from > 30_000) throw new Error('no completion for 30 s');
  }
  return done;
}

/** One request, waited for on the IRQ word (no event-loop turn in the timing); its status. */
function runOne(d: VirtioBlkDriver, request: Parameters<VirtioBlkDriver['submit']>[0]): number {
  const id = d.submit(request);
  d.kick();
  for (;;) for (const c of reapSome(d)) if (c.id === id) return c.status;
}

function deviceRun({ requests, write, queueDepth }: { requests: IdbRequest[]; write: boolean; queueDepth: number }): IdbRunResult {
  const d = need();
  const qd = Math.min(queueDepth, d.queueSize, buffers.length);
  const free = Array.from({ length: qd }, (_, i) => i);
  const bufferOf = new Map<number, number>();
  let next = 0;
  let ioErrors = 0;
  let bytes = 0;
  const started = performance.now();
  while (next < requests.length || bufferOf.size > 0) {
    let added = 0;
    while (next < requests.length && bufferOf.size < qd) {
      const [offset, length] = requests[next++]!;
      const b = free.pop()!;
      const data = [{ addr: buffers[b]!.addr, len: length }];
      const id = d.submit(write ? { type: BlkRequestType.Out, sector: offset / SECTOR_SIZE, out: data } : { type: BlkRequestType.In, sector: offset / SECTOR_SIZE, in: data });
      bufferOf.set(id, b);
      bytes += length;
      added++;
    }
    if (added > 0) d.kick();
    for (const c of reapSome(d)) {
      free.push(bufferOf.get(c.id)!);
      bufferOf.delete(c.id);
      if (c.status !== BlkStatus.Ok) ioErrors++;
    }
  }
  if (write && runOne(d, { type: BlkRequestType.Flush }) !== BlkStatus.Ok) ioErrors++;
  return { seconds: (performance.now() - started) / 1000, bytes, requests: requests.length, ioErrors };
}

// ---- raw IndexedDB ---------------------------------------------------------

let raw: IDBDatabase | null = null;

function done<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function committed(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = tx.onabort = () => reject(tx.error);
  });
}

async function openRaw(): Promise<IDBDatabase> {
  const request = indexedDB.open(RAW_DATABASE, 1);
  request.onupgradeneeded = () => request.result.createObjectStore('chunks');
  return done(request);
}

/** The chunk indexes [first, last] a request covers. */
function chunksOf(offset: number, length: number, chunkBytes: number): number[] {
  const out: number[] = [];
  for (let i = Math.floor(offset / chunkBytes); i <= Math.floor((offset + length - 1) / chunkBytes); i++) out.push(i);
  return out;
}

async function getChunks(db: IDBDatabase, indexes: number[]): Promise<Array<ArrayBuffer | undefined>> {
  const store = db.transaction('chunks', 'readonly').objectStore('chunks');
  return Promise.all(indexes.map((i) => done(store.get(i) as IDBRequest<ArrayBuffer | undefined>)));
}

async function rawRun({ requests, write, queueDepth, chunkBytes, cacheBytes }: { requests: IdbRequest[]; write: boolean; queueDepth: number; chunkBytes: number; cacheBytes: number }): Promise<IdbRunResult> {
  const db = (raw ??= await openRaw());
  const out = new Uint8Array(1 << 20);
  const source = crypto.getRandomValues(new Uint8Array(64 * 1024));
  /** Dirty chunks not yet in a transaction, and the transactions in flight with their bytes. */
  const dirty = new Map<number, Uint8Array>();
  const inFlight: Array<{ bytes: number; done: Promise<void> }> = [];
  let flightBytes = 0;
  const send = (): void => {
    let batch: Array<[number, Uint8Array]> = [];
    const flushBatch = (): void => {
      const tx = db.transaction('chunks', 'readwrite', { durability: 'strict' });
      const store = tx.objectStore('chunks');
      // put() clones now: the buffers may be reused at once.
      for (const [i, data] of batch) store.put(data.buffer, i);
      const bytes = batch.length * chunkBytes;
      const entry = { bytes, done: committed(tx) };
      entry.done.then(() => {
        flightBytes -= bytes;
        inFlight.splice(inFlight.indexOf(entry), 1);
      });
      inFlight.push(entry);
      flightBytes += bytes;
      batch = [];
    };
    for (const entry of dirty) {
      batch.push(entry);
      if ((batch.length + 1) * chunkBytes > TRANSACTION_BYTES) flushBatch();
    }
    if (batch.length > 0) flushBatch();
    dirty.clear();
  };
  let next = 0;
  let bytes = 0;
  const lane = async (): Promise<void> => {
    while (next < requests.length) {
      const [offset, length] = requests[next++]!;
      bytes += length;
      const indexes = chunksOf(offset, length, chunkBytes);
      if (!write) {
        const values = await getChunks(db, indexes);
        // Copy the requested bytes out, as the backend copies into guest RAM.
        values.forEach((v, k) => {
          const chunkStart = indexes[k]! * chunkBytes;
          const from = Math.max(offset, chunkStart);
          const to = Math.min(offset + length, chunkStart + chunkBytes);
          if (v) out.set(new Uint8Array(v, from - chunkStart, to - from), (from - offset) % out.length);
        });
        continue;
      }
      // Whole chunks are replaced; a partial one is read first (read-modify-write).
      const partial = indexes.filter((i) => !dirty.has(i) && (offset > i * chunkBytes || offset + length < (i + 1) * chunkBytes));
      const loaded = partial.length > 0 ? await getChunks(db, partial) : [];
      partial.forEach((i, k) => dirty.set(i, loaded[k] ? new Uint8Array(loaded[k]!) : new Uint8Array(chunkBytes)));
      for (const i of indexes) {
        const chunk = dirty.get(i) ?? new Uint8Array(chunkBytes);
        const from = Math.max(offset, i * chunkBytes);
        const to = Math.min(offset + length, (i + 1) * chunkBytes);
        for (let at = from; at < to; at += source.length) chunk.set(source.subarray(0, Math.min(source.length, to - at)), at - i * chunkBytes);
        dirty.set(i, chunk);
      }
      if (dirty.size * chunkBytes * 2 >= cacheBytes) send();
      // Back-pressure: the whole cache is in flight.
      while (flightBytes + dirty.size * chunkBytes + chunkBytes > cacheBytes && inFlight.length > 0) await inFlight[0]!.done;
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: queueDepth }, lane));
  if (write) {
    send();
    await Promise.all(inFlight.map((f) => f.done));
  }
  return { seconds: (performance.now() - started) / 1000, bytes, requests: requests.length, ioErrors: 0 };
}

/** Median and 99th percentile of `samples` (ms), as µs. */
function summary(samples: number[]): { medianUs: number; p99Us: number; samples: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! * 1000;
  return { medianUs: at(0.5), p99Us: at(0.99), samples: sorted.length };
}

serve({
  attach: async ({ state, ram, ramBase, bufferBytes, count }: { state: MmioState; ram: WebAssembly.Memory; ramBase: number; bufferBytes: number; count: number }) => {
    memory = new GuestMemory([{ guestAddress: ramBase, source: ram }]);
    irq = state;
    driver = await VirtioBlkDriver.init({ mmio: new MmioRegisters(state), memory, arena: { addr: ramBase, len: ram.buffer.byteLength } });
    buffers = Array.from({ length: count }, () => driver!.allocate(bufferBytes));
    // Incompressible data in every guest buffer, as the raw side writes.
    for (const b of buffers) for (let at = 0; at < b.len; at += 65536) memory.write(b.addr + at, crypto.getRandomValues(new Uint8Array(Math.min(65536, b.len - at))));
    return { capacitySectors: driver.capacitySectors };
  },
  device: deviceRun,
  raw: rawRun,
  flushLatency: async ({ rounds, spanBytes, chunkBytes }: { rounds: number; spanBytes: number; chunkBytes: number }) => {
    const d = need();
    const device: number[] = [];
    const rawSamples: number[] = [];
    const db = (raw ??= await openRaw());
    const value = crypto.getRandomValues(new Uint8Array(chunkBytes > 65536 ? 65536 : chunkBytes));
    const chunk = new Uint8Array(chunkBytes);
    chunk.set(value);
    for (let r = 0; r < rounds; r++) {
      const offset = ((r * 7919) % (spanBytes / 4096)) * 4096;
      if (runOne(d, { type: BlkRequestType.Out, sector: offset / SECTOR_SIZE, out: [{ addr: buffers[0]!.addr, len: 4096 }] }) !== BlkStatus.Ok) throw new Error('write failed');
      const t0 = performance.now();
      const status = runOne(d, { type: BlkRequestType.Flush });
      device.push(performance.now() - t0);
      if (status !== BlkStatus.Ok) throw new Error(`FLUSH status ${status}`);
      const t1 = performance.now();
      const tx = db.transaction('chunks', 'readwrite', { durability: 'strict' });
      tx.objectStore('chunks').put(chunk.buffer, Math.floor(offset / chunkBytes));
      await committed(tx);
      rawSamples.push(performance.now() - t1);
    }
    return { device: summary(device), raw: summary(rawSamples) };
  },
  detach: async () => {
    if (driver) await driver.reset();
    driver = null;
    irq = null;
    raw?.close();
    raw = null;
    await done(indexedDB.deleteDatabase(RAW_DATABASE));
  },
});
