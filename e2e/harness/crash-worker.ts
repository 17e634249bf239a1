// Harness worker for the crash trials (e2e/harness/crash-runner.ts): runs a
// workload or a series of disk creations on an OPFS or IndexedDB disk and
// reports each step to the page (which hands it to the runner), so that the
// runner can kill the browser at a moment it picked; after the relaunch it
// checks what the disk holds. Reports are posted as {report} messages beside
// the rpc replies.
//
// A 'plain' workload calls the backend directly. The 'resize' and 'close'
// workloads go through a Disk, as an emulator's would: the same-thread host
// (createSameThreadDisk) and the guest-side driver in this worker, so writes
// and FLUSHes are virtio requests and the resize and the close are
// Disk.resize and Disk.close. `broken` wraps the disk in crash-broken.ts
// (the trials' self-test only); the checks always open the real disk.
//
// The overlay backends ('overlay-opfs', 'overlay-indexeddb') are a BackendSpec
// kind 'overlay', opened as the device worker opens one (openBackend): a
// memory base holding crash-model.ts's base bytes, rebuilt the same in every
// browser, under a top in OPFS or IndexedDB, which is the disk that survives
// the crash. An overlay cannot resize (its base has a fixed size).

import type { BlockBackend } from '../../src/backends/backend.ts';
import { IndexedDbBackend, deleteIndexedDbDisk } from '../../src/backends/indexeddb.ts';
import { OpfsBackend, deleteOpfsDisk } from '../../src/backends/opfs.ts';
import { BlkRequestType, BlkStatus } from '../../src/block/constants.ts';
import { VirtioBlkDriver } from '../../src/driver/driver.ts';
import { openBackend } from '../../src/host/browser/open-backend.ts';
import { createSameThreadDisk, type SameThreadDisk } from '../../src/host/browser/same-thread.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';
import { BrokenFlushBackend } from './crash-broken.ts';
import { SECTOR, baseBytes, type CrashBackend, baseSectorBytes, checkDisk, createdDiskBytes, workloadOps, writeBytes, type Op, type WorkloadShape } from './crash-model.ts';
import { serve } from './rpc.ts';

export type { CrashBackend } from './crash-model.ts';

/** The store that holds a backend's disk: the overlay's top. */
function storeOf(backend: CrashBackend): 'opfs' | 'indexeddb' {
  return backend === 'opfs' || backend === 'overlay-opfs' ? 'opfs' : 'indexeddb';
}
const DIRECTORY = 'crash';

/** What the worker tells the runner as it goes. */
export type CrashReport = { op: number; flush: boolean } | { creating: number } | { created: number };

/** Reports sent, and how many the runner has received (a shared counter from the page). */
let sent = 0;
let received: Int32Array | null = null;
/** `Atomics.waitAsync` (ES2024, in Chromium); absent from this project's TypeScript lib. */
interface AtomicsWithWaitAsync {
  waitAsync(array: Int32Array, index: number, value: number): { async: false; value: string } | { async: true; value: Promise<string> };
}
/** How many reports may be on their way to the runner before the worker waits. */
const AHEAD = 3;

async function report(r: CrashReport): Promise<void> {
  (globalThis as unknown as DedicatedWorkerGlobalScope).postMessage({ report: r });
  sent++;
  // Without this the worker outruns the reports' way to the runner (page,
  // CDP, Node), and on a busy machine the runner would often kill a browser
  // whose workload had already ended.
  while (received && sent - Atomics.load(received, 0) > AHEAD) {
    const wait = (Atomics as unknown as AtomicsWithWaitAsync).waitAsync(received, 0, Atomics.load(received, 0));
    if (wait.async) await wait.value;
  }
}

interface OpenOptions {
  /** Size of a disk to create; an overlay's base size (always needed: the base is rebuilt at each open). */
  size?: number;
  /** Wrap in the broken backend (self-test). */
  broken?: boolean;
  /** Default 10 s: a page's worker releases its lock a moment after it is gone. */
  lockWaitMs?: number;
}

/** Overlay bases by size, built once per worker. */
const bases = new Map<number, Uint8Array>();

async function openDisk(backend: CrashBackend, name: string, { size, broken = false, lockWaitMs = 10_000 }: OpenOptions = {}): Promise<BlockBackend> {
  let disk: BlockBackend;
  if (backend === 'indexeddb') {
    // A small write-back cache, so that back-pressure write-back happens in the trials too.
    disk = await IndexedDbBackend.open({ name, size, cacheBytes: 1024 * 1024, lockWaitMs });
  } else if (backend === 'opfs') disk = await OpfsBackend.open({ name, directory: DIRECTORY, size, lockWaitMs });
  else {
    if (size === undefined) throw new Error('an overlay needs its base size');
    let data = bases.get(size);
    if (!data) bases.set(size, (data = baseBytes(size)));
    disk = await openBackend({
      kind: 'overlay',
      base: { kind: 'memory', size, data, readOnly: true },
      top: storeOf(backend) === 'opfs' ? { kind: 'opfs', name, directory: DIRECTORY, lockWaitMs } : { kind: 'indexeddb', name, lockWaitMs },
      // The base is the same in every browser: name it, rather than hash it at every open.
      baseIdentity: `crash-trial-base:${size}`,
    });
  }
  return broken ? new BrokenFlushBackend(disk) : disk;
}

const RAM_BASE = 0x4000_0000;
/** Guest RAM for the driver's rings and its one data buffer (writes are at most 128 KiB). */
const RAM_BYTES = 2 * 1024 * 1024;

/** A Disk over `backend` with the driver attached, as an emulator and its guest would have. */
async function attach(backend: BlockBackend): Promise<{ disk: SameThreadDisk; driver: VirtioBlkDriver }> {
  const memory = new GuestMemory([{ guestAddress: RAM_BASE, source: new ArrayBuffer(RAM_BYTES) }]);
  const disk = createSameThreadDisk({ memory, backend });
  const driver = await VirtioBlkDriver.init({ mmio: disk.mmio, memory, arena: { addr: RAM_BASE, len: RAM_BYTES }, waitForInterrupt: () => disk.waitForInterrupt() });
  return { disk, driver };
}

/** Run `ops` through a Disk: writes and FLUSHes as guest requests, resizes and closes on the Disk. */
async function runThroughDisk(backend: CrashBackend, name: string, shape: WorkloadShape, ops: Op[], broken: boolean): Promise<void> {
  let { disk, driver } = await attach(await openDisk(backend, name, { size: shape.sectors * SECTOR, broken }));
  for (const [i, op] of ops.entries()) {
    if (op.kind === 'write') await driver.write(op.sector, writeBytes(shape.seed, i, op.sector, op.count));
    else if (op.kind === 'zeroes') {
      const status = await driver.discardOrZero(BlkRequestType.WriteZeroes, [{ sector: op.sector, sectors: op.count, flags: i & 1 }]);
      if (status !== BlkStatus.Ok) throw new Error(`write-zeroes at op ${i}: status ${status}`);
    } else if (op.kind === 'flush') await driver.flush();
    else if (op.kind === 'resize') {
      await disk.resize(op.sectors * SECTOR);
      if (driver.capacitySectors !== op.sectors) throw new Error(`resize at op ${i}: the guest sees ${driver.capacitySectors} sectors, not ${op.sectors}`);
    } else {
      await disk.close();
      await report({ op: i, flush: true });
      // Close released the lock: the disk opens again at once, without waiting.
      ({ disk, driver } = await attach(await openDisk(backend, name, { size: shape.sectors * SECTOR, broken, lockWaitMs: 0 })));
      continue;
    }
    await report({ op: i, flush: op.kind === 'flush' });
  }
  await disk.close();
}

async function deleteDisk(backend: CrashBackend, name: string): Promise<void> {
  try {
    if (storeOf(backend) === 'indexeddb') await deleteIndexedDbDisk(name);
    else await deleteOpfsDisk(name, DIRECTORY);
  } catch (err) {
    if ((err as { code?: string }).code !== 'not-found') throw err;
  }
}

function failure(err: unknown): string {
  const e = err as { name?: string; code?: string; message?: string };
  return `${e.name ?? 'Error'}${e.code ? ` [${e.code}]` : ''}: ${e.message ?? String(err)}`;
}

serve({
  setReceivedCounter: ({ counter }: { counter: SharedArrayBuffer }) => void (received = new Int32Array(counter)),
  /** Run the workload to its end (the runner usually kills the browser first). */
  workload: async ({ backend, name, shape, broken = false }: { backend: CrashBackend; name: string; shape: WorkloadShape; broken?: boolean }) => {
    const ops = workloadOps(shape);
    if ((shape.variant ?? 'plain') !== 'plain') {
      await runThroughDisk(backend, name, shape, ops, broken);
      return ops.length;
    }
    const disk = await openDisk(backend, name, { size: shape.sectors * SECTOR, broken });
    for (const [i, op] of ops.entries()) {
      if (op.kind === 'write') await disk.write(op.sector * SECTOR, writeBytes(shape.seed, i, op.sector, op.count));
      else if (op.kind === 'zeroes') await disk.writeZeroes(op.sector * SECTOR, op.count * SECTOR, (i & 1) === 0);
      else if (op.kind === 'flush') await disk.flush();
      else throw new Error(`op ${i}: a plain workload has no ${op.kind}`);
      await report({ op: i, flush: op.kind === 'flush' });
    }
    await disk.close();
    return ops.length;
  },
  /** After the crash: check every sector against the model. */
  checkWorkload: async ({ backend, name, shape, lastFlush }: { backend: CrashBackend; name: string; shape: WorkloadShape; lastFlush: number }) => {
    let disk: BlockBackend;
    try {
      // After a relaunch no lock may be left: the disk opens without waiting.
      // An overlay's base has the workload's size (a size only creates a disk that does not exist yet).
      disk = await openDisk(backend, name, { lockWaitMs: 0, size: backend.startsWith('overlay') ? shape.sectors * SECTOR : undefined });
    } catch (err) {
      // The disk was created before the workload's first op; it must exist.
      return { sectors: shape.sectors, lost: shape.sectors, torn: 0, examples: [`open failed: ${failure(err)}`] };
    }
    try {
      if (disk.size % SECTOR !== 0) {
        return { sectors: shape.sectors, lost: shape.sectors, torn: 0, examples: [`size ${disk.size} is not whole sectors`] };
      }
      const all = new Uint8Array(disk.size);
      await disk.read(0, all);
      return checkDisk(shape, lastFlush, (s) => all.subarray(s * SECTOR, (s + 1) * SECTOR), disk.size / SECTOR);
    } finally {
      await disk.close();
      await deleteDisk(backend, name);
    }
  },
  /** Create disks prefix-0, prefix-1, … one after another, each with a flushed marker in its last sector. */
  create: async ({ backend, prefix, seed, count, broken = false }: { backend: CrashBackend; prefix: string; seed: number; count: number; broken?: boolean }) => {
    for (let i = 0; i < count; i++) {
      await report({ creating: i });
      const size = createdDiskBytes(seed, i);
      const disk = await openDisk(backend, `${prefix}-${i}`, { size, broken });
      await disk.write(size - SECTOR, writeBytes(seed, i, size / SECTOR - 1, 1));
      await disk.flush();
      await disk.close();
      await report({ created: i });
    }
  },
  /**
   * After the crash: disks up to `upTo` either do not exist or have their
   * full size (never 0, never another size); the ones known created keep
   * their marker; creating any of them again gives the full size.
   */
  checkCreate: async ({ backend, prefix, seed, upTo, created }: { backend: CrashBackend; prefix: string; seed: number; upTo: number; created: number }) => {
    const problems: string[] = [];
    for (let i = 0; i <= upTo; i++) {
      const name = `${prefix}-${i}`;
      const size = createdDiskBytes(seed, i);
      const marker = writeBytes(seed, i, size / SECTOR - 1, 1);
      // What the marker's sector holds before it is written: zeroes, or an overlay's base.
      const overlay = backend.startsWith('overlay');
      const blank = overlay ? baseSectorBytes(size / SECTOR - 1) : new Uint8Array(SECTOR);
      try {
        // An overlay always opens (its top is made if missing), so only the marker tells whether it was created.
        const disk = await openDisk(backend, name, overlay ? { size } : {});
        try {
          if (disk.size !== size) problems.push(`${name}: opens with ${disk.size} bytes, expected ${size}`);
          else {
            const last = new Uint8Array(SECTOR);
            await disk.read(size - SECTOR, last);
            const intact = last.every((b, j) => b === marker[j]);
            const untouched = last.every((b, j) => b === blank[j]);
            if (i <= created && !intact) problems.push(`${name}: flushed marker lost`);
            else if (!intact && !untouched) problems.push(`${name}: marker torn`);
          }
        } finally {
          await disk.close();
        }
      } catch (err) {
        if ((err as { code?: string }).code !== 'not-found') problems.push(`${name}: ${failure(err)}`);
        else if (i <= created) problems.push(`${name}: created and flushed, then not found`);
      }
      // Creating it (again) must always give a disk of the full size.
      try {
        const again = await openDisk(backend, name, { size });
        if (again.size !== size) problems.push(`${name}: created again with ${again.size} bytes, expected ${size}`);
        await again.close();
      } catch (err) {
        problems.push(`${name}: cannot create again: ${failure(err)}`);
      }
      await deleteDisk(backend, name);
    }
    return problems;
  },
});
