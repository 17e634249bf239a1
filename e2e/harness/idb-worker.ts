// Harness worker for e2e/indexeddb.spec.ts: runs the backend contract against
// IndexedDB and exposes single disk operations, in a dedicated worker because
// that is where the device (and so the backend) runs. Disks are addressed by
// name; contract disks are named "contract-N".

import { IndexedDbBackend, deleteIndexedDbDisk, indexedDbDatabaseName, listIndexedDbDisks } from '../../src/backends/indexeddb.ts';
import { backendContract, pattern } from '../../test/contract/backend-contract.ts';
import { namedDiskFactory } from '../../test/contract/named-disks.ts';
import { serve } from './rpc.ts';

const factory = namedDiskFactory((name, options) => IndexedDbBackend.open({ name, ...options }), { sparseHugeDisks: true, resizable: true }, 'contract-');

/** Disks this worker has open, by name. */
const open = new Map<string, IndexedDbBackend>();

function disk(name: string): IndexedDbBackend {
  const backend = open.get(name);
  if (!backend) throw new Error(`disk "${name}" is not open in this worker`);
  return backend;
}

type Range = { name: string; offset: number; length: number };

/** Raw access to a disk's database, bypassing the backend (idb-keyval is not needed for a probe). */
async function rawDatabase(name: string): Promise<IDBDatabase> {
  const request = indexedDB.open(indexedDbDatabaseName(name), 1);
  request.onupgradeneeded = () => request.result.createObjectStore('chunks');
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

serve({
  contractCases: () => backendContract.map((c) => ({ name: c.name, applies: c.applies(factory) })),
  contractRun: async ({ name }: { name: string }) => {
    const c = backendContract.find((x) => x.name === name);
    if (!c) throw new Error(`no contract case "${name}"`);
    await c.run(factory);
  },
  open: async (args: { name: string; size?: number; readOnly?: boolean; chunkBytes?: number; cacheBytes?: number }) => {
    const backend = await IndexedDbBackend.open(args);
    open.set(args.name, backend);
    return { size: backend.size, readOnly: backend.readOnly, chunkBytes: backend.chunkBytes };
  },
  close: async ({ name }: { name: string }) => {
    await disk(name).close();
    open.delete(name);
  },
  /** Write pattern(length, seed) at offset. */
  write: ({ name, offset, length, seed }: Range & { seed: number }) => disk(name).write(offset, pattern(length, seed)),
  /** Write pattern(length, seed) from a view on a shared WebAssembly.Memory, as guest RAM would be. */
  writeShared: async ({ name, offset, length, seed }: Range & { seed: number }) => {
    const memory = new WebAssembly.Memory({ initial: Math.ceil((length + 4096) / 65536), maximum: 1024, shared: true });
    const view = new Uint8Array(memory.buffer, 4096, length);
    view.set(pattern(length, seed));
    await disk(name).write(offset, view);
  },
  /**
   * Index of the first byte at offset that differs from pattern(length, seed)
   * (seed 0: from zeroes; `from`: compare with the pattern from its byte
   * `from` on), or -1.
   */
  mismatch: async ({ name, offset, length, seed, from = 0 }: Range & { seed: number; from?: number }) => {
    const actual = new Uint8Array(length);
    await disk(name).read(offset, actual);
    const expected = seed === 0 ? new Uint8Array(length) : pattern(from + length, seed).subarray(from);
    return actual.findIndex((b, i) => b !== expected[i]);
  },
  writeZeroes: ({ name, offset, length, mayUnmap }: Range & { mayUnmap: boolean }) => disk(name).writeZeroes(offset, length, mayUnmap),
  discard: ({ name, offset, length }: Range) => disk(name).discard(offset, length),
  flush: ({ name }: { name: string }) => disk(name).flush(),
  resize: ({ name, size }: { name: string; size: number }) => disk(name).resize(size),
  size: ({ name }: { name: string }) => disk(name).size,
  cacheState: ({ name }: { name: string }) => disk(name).cacheState,
  delete: ({ name }: { name: string }) => deleteIndexedDbDisk(name),
  list: () => listIndexedDbDisks(),
  isolated: () => crossOriginIsolated,
  /**
   * What the store holds, read straight from IndexedDB: chunk keys, and for
   * each stored value its type and byte length (to show values are exact-size
   * ArrayBuffers).
   */
  stored: async ({ name }: { name: string }) => {
    const db = await rawDatabase(name);
    try {
      const store = db.transaction('chunks', 'readonly').objectStore('chunks');
      const keys = await new Promise<IDBValidKey[]>((resolve, reject) => {
        const r = store.getAllKeys();
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
      });
      const values = await new Promise<unknown[]>((resolve, reject) => {
        const r = store.getAll();
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
      });
      return keys.map((key, i) => {
        const v = values[i];
        return { key, type: Object.prototype.toString.call(v), bytes: v instanceof ArrayBuffer ? v.byteLength : -1 };
      });
    } finally {
      db.close();
    }
  },
  /** A database with its store but no 'meta' record: what a crash during creation leaves. */
  plantEmptyDatabase: async ({ name }: { name: string }) => (await rawDatabase(name)).close(),
  /**
   * Write pattern data in `step`-byte pieces from `offset` on, flushing after
   * each, until one fails; return how many bytes were flushed and the error.
   */
  writeUntilError: async ({ name, offset, step, limit }: { name: string; offset: number; step: number; limit: number }) => {
    const backend = disk(name);
    for (let done = 0; done < limit; done += step) {
      try {
        await backend.write(offset + done, pattern(step, done / step + 1000));
        await backend.flush();
      } catch (err) {
        const e = err as { name?: string; code?: string; message?: string; cause?: { name?: string } };
        return { flushedBytes: done, error: { name: e.name, code: e.code, message: e.message, cause: e.cause?.name } };
      }
    }
    return { flushedBytes: limit, error: null };
  },
  usage: async () => (await navigator.storage.estimate()).usage ?? 0,
});
