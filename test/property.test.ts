// Property tests: random well-formed workloads against a model disk, and
// random malformed rings against the device's promises (stay alive, serve
// the next good request, write only where the driver allowed, complete every
// chain it pops, used.len 0 for exactly the malformed ones).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryBackend } from '../src/backends/memory.ts';
import { BlkRequestType, BlkStatus } from '../src/block/constants.ts';
import { VirtioBlkDriver, type DriverRequest } from '../src/driver/driver.ts';
import { createSameThreadDisk } from '../src/host/browser/same-thread.ts';
import { DeviceStatus } from '../src/virtio/device.ts';
import { GuestMemory } from '../src/virtio/memory.ts';
import { DescFlag } from '../src/virtio/queue.ts';
import { MmioReg } from '../src/virtio/mmio/mmio.ts';
import { RAW_RAM_BASE, RawQueue } from './support/raw-queue.ts';

const RAM_BASE = 0x4000_0000;
const SLOTS = 16;
const SLOT_SECTORS = 16;
const DISK_SECTORS = SLOTS * SLOT_SECTORS;

/** A memory backend whose calls complete asynchronously, in a seeded random order. */
class JitterBackend extends MemoryBackend {
  #x: number;
  constructor(size: number, seed: number) {
    super(size);
    this.#x = seed | 1;
  }
  #later<T>(fn: () => T): Promise<T> {
    this.#x ^= this.#x << 13;
    this.#x ^= this.#x >>> 17;
    this.#x ^= this.#x << 5;
    const turns = (this.#x >>> 0) % 4;
    return new Promise((resolve, reject) => {
      const run = (n: number): void => {
        if (n > 0) setImmediate(() => run(n - 1));
        else {
          try {
            resolve(fn());
          } catch (e) {
            reject(e);
          }
        }
      };
      run(turns);
    });
  }
  override read(offset: number, dst: Uint8Array): Promise<void> {
    return this.#later(() => super.read(offset, dst));
  }
  override write(offset: number, src: Uint8Array): Promise<void> {
    const copy = src.slice(); // the guest may reuse src once the request completes, not before; copy anyway
    return this.#later(() => super.write(offset, copy));
  }
  override flush(): Promise<void> {
    return this.#later(() => {});
  }
  override writeZeroes(offset: number, length: number): Promise<void> {
    return this.#later(() => super.writeZeroes(offset, length));
  }
  override discard(offset: number, length: number): Promise<void> {
    return this.#later(() => super.discard(offset, length));
  }
}

const opArb = fc.record({
  kind: fc.constantFrom('read', 'write', 'write', 'zero', 'discard', 'flush'),
  slot: fc.nat(SLOTS - 1),
  first: fc.nat(SLOT_SECTORS - 1),
  count: fc.integer({ min: 1, max: SLOT_SECTORS }),
  pieces: fc.integer({ min: 1, max: 6 }),
  indirect: fc.boolean(),
  seed: fc.nat(),
});
type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;

/** Batches of ops on distinct slots: in-flight requests never overlap, so any completion order is valid. */
const workloadArb = fc.array(
  fc.uniqueArray(opArb, { selector: (o) => o.slot, minLength: 1, maxLength: 8 }),
  { minLength: 1, maxLength: 6 },
);

function fillBytes(buf: Uint8Array, seed: number): void {
  let x = seed * 2654435761 + 7;
  for (let i = 0; i < buf.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    buf[i] = x >>> 24;
  }
}

/** The jitter backend with vectored calls: one deferred call per request. */
class VectoredJitterBackend extends JitterBackend {
  readv(offset: number, dsts: Uint8Array[]): Promise<void> {
    return Promise.all(dsts.map((d, i) => this.read(offset + dsts.slice(0, i).reduce((n, x) => n + x.length, 0), d))).then(() => {});
  }
  writev(offset: number, srcs: Uint8Array[]): Promise<void> {
    let at = offset;
    return Promise.all(srcs.map((s) => this.write((at += s.length) - s.length, s))).then(() => {});
  }
}

async function runWorkload(batches: Op[][], asyncSeed: number | null, vectored = false): Promise<void> {
  const ram = new ArrayBuffer(512 << 10);
  const memory = GuestMemory.of(ram, RAM_BASE);
  const diskBytes = DISK_SECTORS * 512;
  const backend =
    asyncSeed === null
      ? new MemoryBackend(diskBytes)
      : vectored
        ? new VectoredJitterBackend(diskBytes, asyncSeed)
        : new JitterBackend(diskBytes, asyncSeed);
  const disk = createSameThreadDisk({ memory, backend, queueSize: 64 });
  const driver = await VirtioBlkDriver.init({
    mmio: disk.mmio,
    memory,
    arena: { addr: RAM_BASE, len: 512 << 10 },
    queueSize: 64,
    waitForInterrupt: () => disk.waitForInterrupt(),
  });
  const model = new Uint8Array(diskBytes);
  /** Bytes whose content is unspecified (discarded): either old data or zeroes. */
  const fuzzy = new Uint8Array(diskBytes);
  const oldOf = new Uint8Array(diskBytes);
  const buffers = Array.from({ length: 8 }, () => driver.allocate(SLOT_SECTORS * 512));
  for (const batch of batches) {
    const pending = new Map<number, { op: Op; buf: number; bytes: number; sector: number }>();
    batch.forEach((op, i) => {
      const sector = op.slot * SLOT_SECTORS + op.first;
      const sectors = Math.min(op.count, SLOT_SECTORS - op.first);
      const bytes = sectors * 512;
      const buf = buffers[i]!.addr;
      const segs = split(buf, bytes, op.pieces);
      let req: DriverRequest;
      if (op.kind === 'write') {
        const data = new Uint8Array(bytes);
        fillBytes(data, op.seed);
        memory.write(buf, data);
        req = { type: BlkRequestType.Out, sector, out: segs, indirect: op.indirect };
      } else if (op.kind === 'read') {
        memory.fill(buf, bytes, 0xcc);
        req = { type: BlkRequestType.In, sector, in: segs, indirect: op.indirect };
      } else if (op.kind === 'flush') {
        req = { type: BlkRequestType.Flush };
      } else {
        memory.writeU64(buf, sector);
        memory.writeU32(buf + 8, sectors);
        memory.writeU32(buf + 12, 0);
        req = { type: op.kind === 'zero' ? BlkRequestType.WriteZeroes : BlkRequestType.Discard, out: [{ addr: buf, len: 16 }] };
      }
      pending.set(driver.submit(req), { op, buf, bytes, sector });
    });
    driver.kick();
    while (pending.size > 0) {
      for (const c of await driver.wait()) {
        const p = pending.get(c.id)!;
        pending.delete(c.id);
        expect(c.status).toBe(BlkStatus.Ok);
        const at = p.sector * 512;
        if (p.op.kind === 'read') {
          const got = new Uint8Array(p.bytes);
          memory.read(p.buf, got);
          for (let i = 0; i < p.bytes; i++) {
            const ok = fuzzy[at + i] ? got[i] === 0 || got[i] === oldOf[at + i] : got[i] === model[at + i];
            if (!ok) expect({ byte: at + i, got: got[i] }).toEqual({ byte: at + i, got: model[at + i] });
          }
          expect(c.usedLen).toBe(p.bytes + 1);
        } else if (p.op.kind === 'write') {
          memory.read(p.buf, model.subarray(at, at + p.bytes));
          fuzzy.fill(0, at, at + p.bytes);
        } else if (p.op.kind === 'zero') {
          model.fill(0, at, at + p.bytes);
          fuzzy.fill(0, at, at + p.bytes);
        } else if (p.op.kind === 'discard') {
          for (let i = at; i < at + p.bytes; i++) {
            if (!fuzzy[i]) oldOf[i] = model[i]!;
            fuzzy[i] = 1;
          }
          model.fill(0, at, at + p.bytes);
        }
      }
    }
  }
  // Everything the model is sure of is on the disk.
  const disk2 = new Uint8Array(diskBytes);
  disk2.set((backend as MemoryBackend).bytes);
  for (let i = 0; i < diskBytes; i++) if (!fuzzy[i] && disk2[i] !== model[i]) expect(disk2[i]).toBe(model[i]);
}

function split(addr: number, bytes: number, pieces: number): Array<{ addr: number; len: number }> {
  const out = [];
  const step = Math.max(1, Math.floor(bytes / pieces));
  for (let at = 0; at < bytes; at += step) out.push({ addr: addr + at, len: Math.min(step, bytes - at) });
  return out;
}

describe('property: reads return what the model says after any interleaving of writes, discards, write-zeroes and flushes', () => {
  it('synchronous backend', async () => {
    await fc.assert(fc.asyncProperty(workloadArb, (w) => runWorkload(w, null)), { numRuns: 3000 });
  }, 600_000);
  it('asynchronous backend completing out of order', async () => {
    await fc.assert(fc.asyncProperty(workloadArb, fc.integer({ min: 1 }), (w, seed) => runWorkload(w, seed)), { numRuns: 2000 });
  }, 600_000);
  it('asynchronous vectored backend (readv / writev), completing out of order', async () => {
    await fc.assert(fc.asyncProperty(workloadArb, fc.integer({ min: 1 }), (w, seed) => runWorkload(w, seed, true)), { numRuns: 1000 });
  }, 600_000);
});

// ---- malformed rings ------------------------------------------------------

const Q_SIZE = 16;
const RAM_BYTES = 256 << 10;
const IND_ENTRIES = 32;

const descArb = fc.record({
  addrKind: fc.constantFrom('ram', 'ram', 'ram', 'edge', 'wild', 'indirect'),
  addrOffset: fc.nat(0x7ffff),
  len: fc.oneof(fc.nat(2048), fc.constantFrom(0, 1, 15, 16, 17, 4096, 0xffff_ffff)),
  flags: fc.nat(7),
  next: fc.oneof(fc.nat(Q_SIZE - 1), fc.nat(0xffff)),
  indIndex: fc.nat(IND_ENTRIES - 1),
});

const ringArb = fc.record({
  table: fc.array(descArb, { minLength: Q_SIZE, maxLength: Q_SIZE }),
  indirect: fc.array(descArb, { minLength: IND_ENTRIES, maxLength: IND_ENTRIES }),
  heads: fc.array(fc.oneof(fc.nat(Q_SIZE - 1), fc.nat(0xffff)), { maxLength: 20 }),
  availIdx: fc.option(fc.nat(0xffff), { nil: undefined }),
  headerTypes: fc.array(fc.constantFrom(0, 1, 4, 8, 11, 13, 99), { minLength: 8, maxLength: 8 }),
});

describe('property: malformed rings never crash or hang the device, nor make it write outside device-writable buffers', () => {
  it('random descriptor tables, avail rings and indices', async () => {
    await fc.assert(
      fc.asyncProperty(ringArb, async (r) => {
        const q = new RawQueue({ size: Q_SIZE, diskBytes: 64 * 1024, ramBytes: RAM_BYTES });
        q.driverOk();
        const indTable = q.heap;
        const data = q.heap + 0x1000;
        const ramEnd = RAW_RAM_BASE + q.ram.byteLength;
        // Put plausible headers around the data area so some chains parse.
        r.headerTypes.forEach((t, i) => q.header(data + i * 0x1000, t, i));
        const allowed: Array<[number, number]> = [[q.used, 6 + 8 * Q_SIZE]];
        const place = (d: (typeof r.table)[number], i: number, table: number): void => {
          let addr: number;
          let len = d.len;
          switch (d.addrKind) {
            case 'ram':
              addr = data + (d.addrOffset % 0x10000);
              break;
            case 'edge':
              addr = ramEnd - (d.addrOffset % 64);
              break;
            case 'wild':
              addr = d.addrOffset * 0x10_0000_0000;
              break;
            default:
              addr = indTable + 16 * d.indIndex;
              len = Math.min(d.len, 16 * (IND_ENTRIES - d.indIndex));
          }
          const flags = d.addrKind === 'indirect' ? d.flags | DescFlag.Indirect : d.flags & ~DescFlag.Indirect;
          q.setDesc(i, addr, len, flags, d.next, table);
          if (flags & DescFlag.Write) allowed.push([addr, len]);
        };
        r.table.forEach((d, i) => place(d, i, q.desc));
        r.indirect.forEach((d, i) => place({ ...d, addrKind: d.addrKind === 'indirect' && i % 2 ? 'ram' : d.addrKind }, i, indTable));
        for (const h of r.heads) q.offer(h);
        if (r.availIdx !== undefined) q.memory.writeU16(q.avail + 2, r.availIdx);

        const before = q.bytes.slice();
        q.notify();
        // A synchronous backend: whatever was popped completed inside notify.
        expect(q.disk.device.inFlight).toBe(0);
        const after = q.bytes;
        for (let chunk = 0; chunk < after.length; chunk += 4096) {
          if (Buffer.compare(after.subarray(chunk, chunk + 4096), before.subarray(chunk, chunk + 4096)) === 0) continue;
          for (let i = chunk; i < chunk + 4096; i++) {
            if (after[i] === before[i]) continue;
            const a = RAW_RAM_BASE + i;
            if (!allowed.some(([s, l]) => a >= s && a < s + l)) {
              expect.fail(`device wrote 0x${a.toString(16)}, outside every device-writable buffer`);
            }
          }
        }
        // Every chain offered is popped and completed, in ring order, until
        // the ring itself is bad (avail.idx runs ahead, or a head is out of
        // range): then nothing more, and DEVICE_NEEDS_RESET.
        const offered = r.availIdx ?? r.heads.length;
        const ringAt = (i: number): number => before[q.avail - RAW_RAM_BASE + 4 + 2 * i]! | (before[q.avail - RAW_RAM_BASE + 5 + 2 * i]! << 8);
        const ring = Array.from({ length: Math.min(offered, Q_SIZE) }, (_, i) => ringAt(i));
        const firstBadHead = ring.findIndex((h) => h >= Q_SIZE);
        const served = offered > Q_SIZE ? 0 : firstBadHead < 0 ? offered : firstBadHead;
        const used = q.takeUsed();
        expect(q.status & DeviceStatus.DeviceNeedsReset).toBe(served < offered ? DeviceStatus.DeviceNeedsReset : 0);
        if (served === offered) expect(used.map((u) => u.id)).toEqual(ring);
        // Once the ring is found broken the device may leave what it completed
        // in that batch unpublished (the driver must reset anyway): a prefix.
        else expect(used.map((u) => u.id)).toEqual(ring.slice(0, used.length));
        expect(used.length).toBeLessThanOrEqual(served);
        // used.len is 0 exactly for the chains the queue or request layer rejects
        // (judged on guest memory as the device found it), else status + data, at most the writable bytes.
        const asFound = new GuestMemory([{ guestAddress: RAW_RAM_BASE, source: before.buffer }]);
        used.forEach((u, i) => {
          const v = q.inspect(i, asFound);
          if (v.queueError !== null || v.malformed !== null) expect({ slot: i, len: u.len }).toEqual({ slot: i, len: 0 });
          else {
            expect(u.len).toBeGreaterThanOrEqual(1);
            expect(u.len).toBeLessThanOrEqual(v.writableBytes);
          }
        });
        // After a reset, a real driver is served normally.
        const driver = await VirtioBlkDriver.init({
          mmio: q.disk.mmio,
          memory: q.memory,
          arena: { addr: RAW_RAM_BASE + 0x20000, len: RAM_BYTES - 0x20000 },
          queueSize: Q_SIZE,
          waitForInterrupt: () => q.disk.waitForInterrupt(),
        });
        const payload = new Uint8Array(1024).fill(0x5a);
        await driver.write(2, payload);
        expect(await driver.read(2, 1024)).toEqual(payload);
        expect(q.disk.mmio.read(MmioReg.Status, 4) & DeviceStatus.DeviceNeedsReset).toBe(0);
      }),
      { numRuns: 5000 },
    );
    // 311 s beside other suites on 2 cores (load average 50 to 78).
  }, 1_200_000);
});
