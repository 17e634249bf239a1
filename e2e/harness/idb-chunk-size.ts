// Measures IndexedDB chunk sizes for src/backends/indexeddb.ts (not a test:
// figures for choosing DEFAULT_CHUNK_BYTES). Run against a Vite server:
//
//   E2E_PORT=5321 npx tsx e2e/harness/idb-chunk-size.ts
//
// For each chunk size, in a persistent on-disk Chromium profile (DESIGN.md:
// a private profile would measure the wrong thing), with raw IndexedDB the
// way the backend uses it ('strict' transactions, many puts per transaction):
// sequential put and get MB/s in 4 MiB transactions, random read-modify-write
// of whole chunks (what a 4 KiB guest write costs once its chunk is not
// cached), and single-chunk get latency (a cold 4 KiB guest read).

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from '@playwright/test';
import { chromiumArgs, chromiumExecutable } from '../chromium.ts';

const port = Number(process.env.E2E_PORT ?? 5183);
const sizes = [16384, 32768, 61440, 65536, 131072, 262144, 524288, 1048576];

const dir = await mkdtemp(join(tmpdir(), 'vbw-idb-measure-'));
const context = await chromium.launchPersistentContext(dir, { executablePath: chromiumExecutable(), args: chromiumArgs(), headless: true });
const page = context.pages()[0] ?? (await context.newPage());
// tsx (esbuild keepNames) wraps named functions in __name(): give the page one.
await page.addInitScript('globalThis.__name = (f) => f');
await page.goto(`http://127.0.0.1:${port}/`);
console.log(`chromium ${context.browser()?.version() ?? await page.evaluate(() => navigator.userAgent)}`);
console.log('chunk bytes | seq put MB/s | seq get MB/s | random RMW chunks/s | cold get ms');
for (const chunk of sizes) {
  const r = await page.evaluate(async (chunkBytes) => {
    const totalBytes = 64 << 20;
    const count = totalBytes / chunkBytes;
    const perTx = Math.max(1, (4 << 20) / chunkBytes);
    const req = <T,>(r: IDBRequest<T>) => new Promise<T>((ok, no) => ((r.onsuccess = () => ok(r.result)), (r.onerror = () => no(r.error))));
    const done = (t: IDBTransaction) => new Promise<void>((ok, no) => ((t.oncomplete = () => ok()), (t.onabort = t.onerror = () => no(t.error))));
    const name = `measure-${chunkBytes}`;
    const open = indexedDB.open(name);
    open.onupgradeneeded = () => open.result.createObjectStore('chunks');
    const db = await req(open);
    const fill = (i: number) => { const b = new Uint8Array(chunkBytes); for (let j = 0; j < chunkBytes; j += 64) b[j] = (i + j) & 255; return b.buffer; };
    let t0 = performance.now();
    for (let i = 0; i < count; i += perTx) {
      const tx = db.transaction('chunks', 'readwrite', { durability: 'strict' });
      const s = tx.objectStore('chunks');
      for (let k = i; k < Math.min(count, i + perTx); k++) s.put(fill(k), k);
      await done(tx);
    }
    const put = totalBytes / 1e6 / ((performance.now() - t0) / 1000);
    t0 = performance.now();
    for (let i = 0; i < count; i += perTx) {
      const tx = db.transaction('chunks', 'readonly');
      const s = tx.objectStore('chunks');
      const got = [];
      for (let k = i; k < Math.min(count, i + perTx); k++) got.push(req(s.get(k)));
      await Promise.all(got);
    }
    const get = totalBytes / 1e6 / ((performance.now() - t0) / 1000);
    // Random read-modify-write: 256 chunks, 64 per transaction (a write-back batch).
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) % count);
    t0 = performance.now();
    for (let round = 0; round < 4; round++) {
      const keys = Array.from({ length: 64 }, rnd);
      const rtx = db.transaction('chunks', 'readonly');
      const values = await Promise.all(keys.map((k) => req(rtx.objectStore('chunks').get(k)) as Promise<ArrayBuffer>));
      const wtx = db.transaction('chunks', 'readwrite', { durability: 'strict' });
      keys.forEach((k, i) => { new Uint8Array(values[i]!)[0]! ^= 1; wtx.objectStore('chunks').put(values[i], k); });
      await done(wtx);
    }
    const rmw = 256 / ((performance.now() - t0) / 1000);
    t0 = performance.now();
    for (let i = 0; i < 100; i++) await req(db.transaction('chunks', 'readonly').objectStore('chunks').get(rnd()));
    const cold = (performance.now() - t0) / 100;
    db.close();
    await req(indexedDB.deleteDatabase(name));
    return { put, get, rmw, cold };
  }, chunk);
  console.log(`${chunk} | ${r.put.toFixed(0)} | ${r.get.toFixed(0)} | ${r.rmw.toFixed(0)} | ${r.cold.toFixed(2)}`);
}
await context.close();
await rm(dir, { recursive: true, force: true });
