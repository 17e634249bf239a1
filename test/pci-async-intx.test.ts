// fstrim's traffic over an asynchronous, serial backend (the IndexedDB
// disk's shape: one call at a time, each finishing some event-loop turns
// later), through the virtio-pci function's INTx line as the v86 adapter
// drives it: the device runs in a microtask after the notify, the line is
// level-triggered and only the ISR read lowers it, and the driver is woken
// by the line alone. Many 32-range DISCARDs race writes, reads and FLUSHes,
// with seeded completion timing; every request must complete (a lost
// interrupt would leave the driver waiting, and the test with it), and the
// disk must read as the model says. This is the path the one stalled v86
// IndexedDB boot took (after fstrim); it reproduces no stall.

import { describe, expect, it } from 'vitest';
import type { BlockBackend, MaybePromise } from '../src/backends/backend.ts';
import { MemoryBackend } from '../src/backends/memory.ts';
import { BlkRequestType, BlkStatus } from '../src/block/constants.ts';
import { VirtioBlkDriver } from '../src/driver/block.ts';
import { PciTransport } from '../src/driver/pci-transport.ts';
import { createSameThreadDisk } from '../src/host/browser/same-thread.ts';
import { GuestMemory } from '../src/virtio/memory.ts';
import { pattern } from './support/rig.ts';

const MiB = 1 << 20;
const SECTOR = 512;
const DISK_BYTES = 8 * MiB;
const CHUNK = 64 << 10;

/** `inner` made asynchronous and serial: each call waits for the one before, then some turns (seeded) before it runs. */
function serialAsync(inner: MemoryBackend, seed: number): BlockBackend {
  let tail: Promise<unknown> = Promise.resolve();
  let x = seed;
  const turns = async (): Promise<void> => {
    x = (x * 1103515245 + 12345) >>> 0;
    const n = x >>> 29;
    for (let i = 0; i < n; i++) {
      // Alternate microtask and macrotask hops, as IndexedDB callbacks land on either.
      if (i & 1) await new Promise<void>((r) => setTimeout(r, 0));
      else await Promise.resolve();
    }
  };
  const serial = (body: () => MaybePromise): Promise<void> => {
    const run = tail.then(turns).then(body);
    tail = run.catch(() => undefined);
    return run;
  };
  return {
    size: inner.size,
    readOnly: false,
    supportsDiscard: true,
    supportsWriteZeroes: true,
    read: (offset, dst) => serial(() => inner.read(offset, dst)),
    write: (offset, src) => serial(() => inner.write(offset, src)),
    flush: () => serial(() => inner.flush()),
    discard: (offset, length) => serial(() => inner.discard(offset, length)),
    writeZeroes: (offset, length) => serial(() => inner.writeZeroes(offset, length)),
    close: () => inner.close(),
  };
}

describe('DISCARD bursts over an asynchronous backend, woken by the INTx line alone', () => {
  for (const seed of [1, 2]) {
    it(`every request completes and the disk reads as the model says (seed ${seed})`, async () => {
      const memory = new GuestMemory([{ guestAddress: 0, source: new ArrayBuffer(32 * MiB) }]);
      const inner = new MemoryBackend(DISK_BYTES);
      const disk = createSameThreadDisk({ memory, backend: serialAsync(inner, seed), transport: 'pci', scheduleDoorbell: (run) => queueMicrotask(run) });
      const pci = disk.pci!;
      let line = false;
      let waiters: Array<() => void> = [];
      let raises = 0;
      pci.onInterruptLevel = (asserted) => {
        line = asserted;
        if (!asserted) return;
        raises++;
        for (const wake of waiters.splice(0)) wake();
      };
      const driver = await VirtioBlkDriver.init({
        transport: new PciTransport(pci),
        memory,
        arena: { addr: MiB, len: 24 * MiB },
        waitForInterrupt: () => (line ? Promise.resolve() : new Promise<void>((resolve) => waiters.push(resolve))),
      });
      const model = new Uint8Array(DISK_BYTES);
      const chunks = DISK_BYTES / CHUNK;
      // Every chunk written, all at once.
      await Promise.all(
        Array.from({ length: chunks }, (_, i) => {
          const data = pattern(CHUNK, seed * 1000 + i);
          model.set(data, i * CHUNK);
          const buf = driver.allocate(CHUNK);
          memory.write(buf.addr, data);
          return driver.run({ type: BlkRequestType.Out, sector: (i * CHUNK) / SECTOR, out: [buf] });
        }),
      );
      // fstrim: DISCARDs of 32 ranges each (every other 4 KiB block of a chunk), racing reads and FLUSHes.
      const requests: Array<Promise<{ status: number }>> = [];
      const readBack: Array<{ at: number; buf: { addr: number; len: number } }> = [];
      const groups = chunks / 4;
      for (let g = 0; g < groups; g++) {
        // 4 chunks, 16 blocks of 8 sectors each: every other block, 32 ranges.
        const base = (g * 4 * CHUNK) / SECTOR;
        const ranges = Array.from({ length: 32 }, (_, k) => ({ sector: base + k * 16, sectors: 8 }));
        const segments = driver.allocate(16 * ranges.length);
        ranges.forEach((r, k) => {
          memory.writeU64(segments.addr + 16 * k, r.sector);
          memory.writeU32(segments.addr + 16 * k + 8, r.sectors);
          memory.writeU32(segments.addr + 16 * k + 12, 0);
          model.fill(0, r.sector * SECTOR, (r.sector + r.sectors) * SECTOR);
        });
        requests.push(driver.run({ type: BlkRequestType.Discard, out: [{ addr: segments.addr, len: 16 * ranges.length }] }));
        if (g % 4 === 3) requests.push(driver.run({ type: BlkRequestType.Flush }));
      }
      const completions = await Promise.all(requests);
      expect(completions.every((c) => c.status === BlkStatus.Ok)).toBe(true);
      // Read every chunk back with O_DIRECT-sized requests, all at once.
      for (let i = 0; i < chunks; i++) readBack.push({ at: i * CHUNK, buf: driver.allocate(CHUNK) });
      const reads = await Promise.all(readBack.map((r) => driver.run({ type: BlkRequestType.In, sector: r.at / SECTOR, in: [r.buf] })));
      expect(reads.every((c) => c.status === BlkStatus.Ok)).toBe(true);
      for (const r of readBack) {
        const got = new Uint8Array(CHUNK);
        memory.read(r.buf.addr, got);
        expect(got).toEqual(model.subarray(r.at, r.at + CHUNK));
      }
      expect(disk.device.inFlight).toBe(0);
      expect(disk.device.stats.discards).toBe(groups);
      expect(raises).toBeGreaterThan(0);
      expect(line).toBe(false);
      await disk.close();
    }, 300_000); // ~25 s per seed on an idle 2-core machine, 85 s seen at load 50
  }
});
