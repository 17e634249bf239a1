// One test per MUST rule of DESIGN.md ("What the device must honour"),
// driven through hand-built rings, and one per queue rule of
// notes/hardening-rules.md (Q1-Q3). A malformed chain's test names the
// QueueError it must get (RawQueue.inspect pops the same slot again).
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { BlkRequestType, BlkStatus } from '../src/block/constants.ts';
import { DeviceStatus } from '../src/virtio/device.ts';
import { DescFlag, QueueError } from '../src/virtio/queue.ts';
import { MmioInterrupt, MmioReg } from '../src/virtio/mmio/mmio.ts';
import { MemoryBackend } from '../src/backends/memory.ts';
import { RAW_RAM_BASE, RAW_RAM_BYTES, RawQueue, WATCH_POISON, WatchWord, watchedUsedLen } from './support/raw-queue.ts';
import { pattern } from './support/rig.ts';

const { Next, Write, Indirect } = DescFlag;

/** A well-formed 3-descriptor read of one sector at descriptors d, d+1, d+2. */
function offerRead(q: RawQueue, d: number, at: number): void {
  q.header(at, BlkRequestType.In, 0);
  q.setDesc(d, at, 16, Next, d + 1);
  q.setDesc(d + 1, at + 512, 512, Write | Next, d + 2);
  q.setDesc(d + 2, at + 16, 1, Write);
  q.offer(d);
}

/** A well-formed read of sector 5 completes, with the disk's bytes in the buffer. */
function expectServesNextRequest(q: RawQueue): void {
  const at = q.heap + 0x8000;
  const data = pattern(512, 0x5e4e);
  void q.backend.write(5 * 512, data);
  q.memory.writeU8(at + 16, 0xff);
  q.memory.fill(at + 512, 512, 0);
  q.header(at, BlkRequestType.In, 5);
  q.setDesc(10, at, 16, Next, 11);
  q.setDesc(11, at + 512, 512, Write | Next, 12);
  q.setDesc(12, at + 16, 1, Write);
  q.offer(10);
  q.notify();
  const used = q.takeUsed();
  expect(used.at(-1)).toEqual({ id: 10, len: 513 });
  expect(q.memory.readU8(at + 16)).toBe(BlkStatus.Ok);
  expect(q.memory.view(at + 512, 512)).toEqual(data);
}

/** The avail slot a malformed chain was offered in got used.len 0 and this QueueError. */
function expectQueueError(q: RawQueue, slot: number, error: QueueError): void {
  expect(q.inspect(slot).queueError).toBe(error);
}

const WATCHED_REQUESTS = 20_000;

/**
 * Run `publishForWatcher` (test/support/raw-queue.ts) on a worker thread over
 * shared guest RAM and watch its used ring from this thread: spin on used.idx
 * with Atomics and, the moment it moves, read used.len of every new element.
 */
async function watchUsedRing(misorder: boolean): Promise<{ checked: number; stale: number; firstStale: Array<{ request: number; len: number }> }> {
  const size = 64;
  const ram = new SharedArrayBuffer(RAW_RAM_BYTES);
  const control = new SharedArrayBuffer(16);
  const ctl = new Int32Array(control);
  const url = new URL('./support/raw-queue.ts', import.meta.url);
  // The thread loads TypeScript through tsx, as the CLI does.
  const boot = `import('tsx/esm/api').then(async (tsx) => {
    tsx.register();
    const [wt, m] = await Promise.all([import('node:worker_threads'), import(${JSON.stringify(url.href)})]);
    m.publishForWatcher(wt.workerData);
  })`;
  const worker = new Worker(boot, {
    eval: true,
    workerData: { ram, control, size, requests: WATCHED_REQUESTS, batch: 20, misorder },
  });
  const exited = new Promise<void>((resolve, reject) => {
    worker.once('error', reject);
    worker.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`publisher exited with ${code}`))));
  });
  // Atomics.waitAsync (Node ≥ 16; not in this project's TypeScript lib).
  const waitAsync = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string } }).waitAsync;
  const ready = waitAsync(ctl, WatchWord.Ready, 0);
  await Promise.race([ready.async ? ready.value : Promise.resolve(), exited]);
  const u16 = new Uint16Array(ram);
  const u32 = new Uint32Array(ram);
  const usedRing = 0x3000; // RawQueue's used ring, as an offset into RAM
  let checked = 0;
  let stale = 0;
  const firstStale: Array<{ request: number; len: number }> = [];
  // Spins, never sleeps: a sleep would give the device all the time it needs.
  for (let idle = 0; checked < WATCHED_REQUESTS && !Atomics.load(ctl, WatchWord.Failed) && idle < 1e9; idle++) {
    const usedIdx = Atomics.load(u16, (usedRing + 2) >>> 1);
    if (usedIdx === (checked & 0xffff)) continue;
    idle = 0;
    for (; (checked & 0xffff) !== usedIdx; checked++) {
      const len = Atomics.load(u32, (usedRing + 4 + 8 * (checked % size) + 4) >>> 2);
      if (len !== watchedUsedLen(checked)) {
        stale++;
        if (firstStale.length < 3) firstStale.push({ request: checked, len });
      }
    }
    Atomics.store(ctl, WatchWord.Consumed, checked);
    Atomics.notify(ctl, WatchWord.Consumed);
  }
  await exited;
  return { checked, stale, firstStale };
}

describe('virtqueue MUST rules', () => {
  it('chain walk TTL = queue size: a descriptor loop completes with used.len 0', () => {
    const q = new RawQueue();
    q.driverOk();
    q.header(q.heap, BlkRequestType.In, 0);
    q.setDesc(0, q.heap, 16, Next, 1);
    // A loop of writable descriptors (1 → 1): only the TTL can end it. A loop
    // back to the readable head would be ended by readable-after-writable.
    q.setDesc(1, q.heap + 512, 512, Write | Next, 1);
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expectQueueError(q, 0, QueueError.ChainTooLong);
    expectServesNextRequest(q);
  });

  it('total chain length must not exceed 2^32 bytes: ChainTooLarge, reached with overlapping descriptors in RAM', () => {
    // 2^32 bytes of chain from 64 MiB of RAM: 68 descriptors of 60 MiB over
    // the same buffer, then the rest, in an indirect table of 71 (header,
    // 69 data, status), each descriptor inside RAM, so no other rule fires first.
    const q = new RawQueue({ ramBytes: 64 << 20, size: 128 });
    q.driverOk();
    const MiB60 = 60 << 20;
    const rest = 2 ** 32 - 16 - 68 * MiB60 - 1; // header + 68·60 MiB + rest + status = 2^32
    const buffer = q.heap + 0x4000;
    const table = (n: number): number => q.heap + n * 0x1000;
    const build = (t: number, lastData: number): void => {
      const at = q.heap + 0x100 * (t + 1);
      q.header(at, BlkRequestType.In, 0);
      q.memory.writeU8(at + 16, 0xee);
      q.setDesc(0, at, 16, Next, 1, table(t));
      for (let i = 1; i <= 68; i++) q.setDesc(i, buffer, MiB60, Write | Next, i + 1, table(t));
      q.setDesc(69, buffer, lastData, Write | Next, 70, table(t));
      q.setDesc(70, at + 16, 1, Write, 0, table(t));
    };
    build(1, rest); // exactly 2^32: allowed (it is not whole sectors, so IOERR)
    build(2, rest + 1); // 2^32 + 1
    q.setDesc(0, table(1), 71 * 16, Indirect);
    q.setDesc(1, table(2), 71 * 16, Indirect);
    q.offer(0);
    q.offer(1);
    expect(buffer + MiB60).toBeLessThanOrEqual(RAW_RAM_BASE + (64 << 20));
    expect(q.inspect(0)).toMatchObject({ queueError: null, malformed: null, writableBytes: 2 ** 32 - 16 });
    expect(q.inspect(1).queueError).toBe(QueueError.ChainTooLarge);
    q.notify();
    expect(q.takeUsed()).toEqual([
      { id: 0, len: 1 },
      { id: 1, len: 0 },
    ]);
    expect(q.memory.readU8(q.heap + 0x200 + 16)).toBe(BlkStatus.IoErr);
    expect(q.memory.readU8(q.heap + 0x300 + 16)).toBe(0xee); // malformed: no status written
    expect(q.disk.device.stats.malformed).toBe(1);
    expectServesNextRequest(q);
  });

  it('indirect table length must be a non-zero multiple of 16', () => {
    const q = new RawQueue();
    q.driverOk();
    q.setDesc(0, q.heap, 40, Indirect);
    q.offer(0);
    q.setDesc(1, q.heap, 0, Indirect);
    q.offer(1);
    q.notify();
    expect(q.takeUsed()).toEqual([
      { id: 0, len: 0 },
      { id: 1, len: 0 },
    ]);
    expectQueueError(q, 0, QueueError.IndirectBadLength);
    expectQueueError(q, 1, QueueError.IndirectBadLength);
    expectServesNextRequest(q);
  });

  it('no nested INDIRECT, no INDIRECT with NEXT, no INDIRECT unless negotiated', () => {
    const q = new RawQueue();
    q.driverOk();
    const table = q.heap + 0x1000;
    q.setDesc(0, table + 0x100, 16, Indirect, 0, table); // nested
    q.setDesc(0, table, 16, Indirect);
    q.offer(0);
    q.setDesc(1, table, 16, Indirect | Next, 2);
    q.offer(1);
    q.notify();
    expect(q.takeUsed()).toEqual([
      { id: 0, len: 0 },
      { id: 1, len: 0 },
    ]);
    expectQueueError(q, 0, QueueError.NestedIndirect);
    expectQueueError(q, 1, QueueError.IndirectWithNext);
    const noIndirect = new RawQueue({ features: new RawQueue().offered() & ~(1n << 28n) });
    noIndirect.driverOk();
    const at = noIndirect.heap;
    noIndirect.header(at, BlkRequestType.In, 0);
    noIndirect.setDesc(0, at, 16, Next, 1, table);
    noIndirect.setDesc(1, at + 16, 1, Write, 0, table);
    noIndirect.setDesc(0, table, 32, Indirect);
    noIndirect.offer(0);
    noIndirect.notify();
    expect(noIndirect.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expectQueueError(noIndirect, 0, QueueError.IndirectNotNegotiated);
  });

  it('a well-formed indirect table is served', () => {
    const q = new RawQueue();
    q.driverOk();
    const table = q.heap + 0x1000;
    const at = q.heap;
    q.header(at, BlkRequestType.GetId, 0);
    q.setDesc(0, at, 16, Next, 1, table);
    q.setDesc(1, at + 32, 20, Write | Next, 2, table);
    q.setDesc(2, at + 16, 1, Write, 0, table);
    q.setDesc(5, table, 48, Indirect);
    q.offer(5);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 5, len: 21 }]);
    expect(q.memory.readU8(at + 16)).toBe(BlkStatus.Ok);
  });

  it('avail.idx − last_avail ≤ queue size, else DEVICE_NEEDS_RESET and a config interrupt', () => {
    const q = new RawQueue();
    q.driverOk();
    q.memory.writeU16(q.avail + 2, q.size + 1);
    q.notify();
    expect(q.takeUsed()).toEqual([]);
    expect(q.status & DeviceStatus.DeviceNeedsReset).toBeTruthy();
    expect(q.disk.mmio.read(MmioReg.InterruptStatus, 4) & MmioInterrupt.ConfigChange).toBeTruthy();
    // It stays stopped until reset…
    offerRead(q, 0, q.heap);
    q.notify();
    expect(q.takeUsed()).toEqual([]);
    // …then, set up again, it serves again.
    q.reinit();
    q.driverOk();
    expect(q.status & DeviceStatus.DeviceNeedsReset).toBe(0);
    expectServesNextRequest(q);
  });

  it('guest address ranges are checked end-inclusive', () => {
    const q = new RawQueue();
    q.driverOk();
    const end = RAW_RAM_BASE + RAW_RAM_BYTES;
    const at = q.heap;
    q.header(at, BlkRequestType.In, 0);
    // Data ending exactly at the last byte of RAM is valid.
    q.setDesc(0, at, 16, Next, 1);
    q.setDesc(1, end - 512, 512, Write | Next, 2);
    q.setDesc(2, at + 16, 1, Write);
    q.offer(0);
    // One byte further is not.
    q.setDesc(3, at, 16, Next, 4);
    q.setDesc(4, end - 511, 512, Write | Next, 5);
    q.setDesc(5, at + 16, 1, Write);
    q.offer(3);
    q.notify();
    expect(q.takeUsed()).toEqual([
      { id: 0, len: 513 },
      { id: 3, len: 0 },
    ]);
    expectQueueError(q, 1, QueueError.AddressOutOfRange);
  });

  it('descriptor indices must be below the queue size; a head out of range breaks the ring', () => {
    const q = new RawQueue();
    q.driverOk();
    q.header(q.heap, BlkRequestType.In, 0);
    q.setDesc(0, q.heap, 16, Next, q.size); // next out of range
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expectQueueError(q, 0, QueueError.DescriptorIndexOutOfRange);
    q.offer(q.size + 3);
    q.notify();
    expect(q.takeUsed()).toEqual([]);
    expect(q.status & DeviceStatus.DeviceNeedsReset).toBeTruthy();
  });

  it('device-writable descriptors must follow device-readable ones', () => {
    const q = new RawQueue();
    q.driverOk();
    q.header(q.heap, BlkRequestType.Out, 0);
    q.setDesc(0, q.heap + 16, 1, Write | Next, 1);
    q.setDesc(1, q.heap, 16, Next, 2);
    q.setDesc(2, q.heap + 512, 512, 0);
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expectQueueError(q, 0, QueueError.ReadableAfterWritable);
    expectServesNextRequest(q);
  });

  it('never writes device-readable buffers', () => {
    const q = new RawQueue();
    q.driverOk();
    const at = q.heap;
    const readable = q.bytes.subarray(at - RAW_RAM_BASE + 0x1000, at - RAW_RAM_BASE + 0x1000 + 1024);
    readable.fill(0xa5);
    // A read whose "data" is device-readable: only the writable status may change.
    q.header(at, BlkRequestType.In, 0);
    q.setDesc(0, at, 16, Next, 1);
    q.setDesc(1, at + 0x1000, 1024, Next, 2);
    q.setDesc(2, at + 16, 1, Write);
    q.offer(0);
    // GET_ID with the id buffer device-readable.
    q.header(at + 64, BlkRequestType.GetId, 0);
    q.setDesc(3, at + 64, 16, Next, 4);
    q.setDesc(4, at + 0x1000, 20, Next, 5);
    q.setDesc(5, at + 80, 1, Write);
    q.offer(3);
    q.notify();
    expect(q.takeUsed().map((u) => u.id)).toEqual([0, 3]);
    expect(readable.every((b) => b === 0xa5)).toBe(true);
  });

  it('consumes nothing before DRIVER_OK, then serves what was waiting', () => {
    const q = new RawQueue();
    offerRead(q, 0, q.heap);
    q.notify();
    expect(q.usedIdx()).toBe(0);
    q.driverOk();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 513 }]);
  });

  it('tolerates spurious notifications', () => {
    const q = new RawQueue();
    q.driverOk();
    for (let i = 0; i < 10; i++) q.notify();
    expect(q.usedIdx()).toBe(0);
    expect(q.disk.interruptLevel).toBe(0);
    expectServesNextRequest(q);
  });

  it('EVENT_IDX: interrupts only when used_event is crossed, and publishes avail_event', () => {
    const q = new RawQueue();
    q.driverOk();
    const usedEventAddr = q.avail + 4 + 2 * q.size;
    const availEventAddr = q.used + 4 + 8 * q.size;
    q.memory.writeU16(usedEventAddr, 2); // interrupt when the 3rd completion is published
    offerRead(q, 0, q.heap);
    q.notify();
    expect(q.takeUsed()).toHaveLength(1);
    expect(q.disk.interruptLevel).toBe(0);
    expect(q.memory.readU16(availEventAddr)).toBe(1);
    offerRead(q, 3, q.heap + 0x2000);
    offerRead(q, 6, q.heap + 0x4000);
    q.notify();
    expect(q.takeUsed()).toHaveLength(2);
    expect(q.disk.interruptLevel & MmioInterrupt.UsedBuffer).toBeTruthy();
    expect(q.memory.readU16(availEventAddr)).toBe(3);
  });

  it('without EVENT_IDX: honours VIRTQ_AVAIL_F_NO_INTERRUPT', () => {
    const q = new RawQueue({ features: new RawQueue().offered() & ~(1n << 29n) });
    q.driverOk();
    q.memory.writeU16(q.avail, 1); // NO_INTERRUPT
    offerRead(q, 0, q.heap);
    q.notify();
    expect(q.takeUsed()).toHaveLength(1);
    expect(q.disk.interruptLevel).toBe(0);
    q.memory.writeU16(q.avail, 0);
    offerRead(q, 3, q.heap);
    q.notify();
    expect(q.takeUsed()).toHaveLength(1);
    expect(q.disk.interruptLevel).not.toBe(0);
  });

  it('sets used.len before publishing used.idx: a second thread spinning on used.idx never sees a stale used.len', async () => {
    // On one thread the order of two stores cannot be seen; here the device
    // runs on a worker and this thread watches used.idx like a driver.
    const watched = await watchUsedRing(false);
    expect(watched).toEqual({ checked: WATCHED_REQUESTS, stale: 0, firstStale: [] });
  }, 60_000);

  it('(the watcher itself) catches a device that publishes used.idx before used.len', async () => {
    // The same watch against a deliberately wrong device: if this passed
    // with stale 0, the test above could not fail.
    const watched = await watchUsedRing(true);
    expect(watched.checked).toBe(WATCHED_REQUESTS);
    expect(watched.stale).toBeGreaterThanOrEqual(WATCHED_REQUESTS / 50);
    expect(watched.firstStale[0]!.len).toBe(WATCH_POISON);
  }, 60_000);

  it('a long batch publishes as it goes: the driver sees completions, and its one interrupt, before the batch ends', () => {
    // What the used ring and the interrupt line looked like as each backend read began.
    const seen: Array<{ usedIdx: number; irq: number }> = [];
    let q: RawQueue | null = null;
    const backend = new MemoryBackend(1 << 20);
    const read = backend.read.bind(backend);
    backend.read = (offset, dst) => {
      seen.push({ usedIdx: q!.usedIdx(), irq: q!.disk.interruptLevel });
      read(offset, dst);
    };
    q = new RawQueue({ size: 128, backend });
    q.driverOk();
    q.memory.writeU16(q.avail + 4 + 2 * q.size, 0); // used_event: interrupt at the first completion
    for (let i = 0; i < 40; i++) offerRead(q, i * 3, q.heap + i * 0x400);
    q.notify();
    expect(q.takeUsed()).toHaveLength(40);
    expect(seen).toHaveLength(40);
    expect(seen[0]).toEqual({ usedIdx: 0, irq: 0 });
    // Published in steps while later requests were still to run…
    const firstStep = seen.findIndex((s) => s.usedIdx > 0);
    expect(firstStep).toBeGreaterThan(0);
    expect(firstStep).toBeLessThan(39);
    expect(seen[firstStep]!.usedIdx).toBe(firstStep);
    // …and the interrupt the driver asked for came with the first step.
    expect(seen.findIndex((s) => s.irq !== 0)).toBe(firstStep);
  });
});

/** A read of `n` sectors at sector 0 through an indirect table at `table`: header, n × 512-byte data, status. */
function indirectRead(q: RawQueue, table: number, at: number, n: number): void {
  q.header(at, BlkRequestType.In, 0);
  q.memory.writeU8(at + 16, 0xee);
  q.setDesc(0, at, 16, Next, 1, table);
  for (let i = 1; i <= n; i++) q.setDesc(i, at + 512 * i, 512, Write | Next, i + 1, table);
  q.setDesc(n + 1, at + 16, 1, Write, 0, table);
}

describe('hardening rules: the queue (notes/hardening-rules.md)', () => {
  it('Q1: an indirect table may hold Queue Size descriptors: header + seg_max data + status is served', () => {
    // Device queue size 16: seg_max 14, so Linux sends tables of 16.
    const q = new RawQueue({ size: 16, queueSize: 16 });
    q.driverOk();
    const disk = pattern(14 * 512, 0x01);
    void q.backend.write(0, disk);
    const table = q.heap;
    const at = q.heap + 0x1000;
    indirectRead(q, table, at, 14);
    q.setDesc(0, table, 16 * 16, Indirect);
    q.offer(0);
    q.notify();
    expect(q.inspect(0).queueError).toBeNull();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 14 * 512 + 1 }]);
    expect(q.memory.readU8(at + 16)).toBe(BlkStatus.Ok);
    expect(q.memory.view(at + 512, 14 * 512)).toEqual(disk);
  });

  it('Q1: an indirect table longer than the ring but within the device\'s chain limit is served (Linux on a ring smaller than seg_max + 2)', () => {
    // QueueNumMax 256 (seg_max 254, chain limit 288) and a 16-entry ring:
    // Linux still sizes its tables by seg_max.
    const q = new RawQueue({ size: 16, queueSize: 256 });
    q.driverOk();
    const disk = pattern(40 * 512, 0x17);
    void q.backend.write(0, disk);
    const at = q.heap + 0x1000;
    indirectRead(q, q.heap, at, 40);
    q.setDesc(0, q.heap, 42 * 16, Indirect);
    q.offer(0);
    q.notify();
    expect(q.inspect(0).queueError).toBeNull();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 40 * 512 + 1 }]);
    expect(q.memory.view(at + 512, 40 * 512)).toEqual(disk);
  });

  it('Q1: an indirect table longer than both Queue Size and the device\'s chain limit is malformed (chain-too-long), even if the chain is short', () => {
    // QueueNumMax 16: seg_max 14, chain limit 14 + 34 = 48 entries.
    const q = new RawQueue({ size: 16, queueSize: 16 });
    q.driverOk();
    const at = q.heap + 0x1000;
    // A 3-descriptor chain in a table of 49 entries.
    indirectRead(q, q.heap, at, 1);
    q.setDesc(0, q.heap, 49 * 16, Indirect);
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    // inspect() re-walks without the device's limit, so the device's own count says it refused the chain.
    expect(q.disk.device.stats.malformed).toBe(1);
    expect(q.memory.readU8(at + 16)).toBe(0xee);
    expectServesNextRequest(q);
  });

  it('Q2: direct descriptors followed by one INDIRECT as the last descriptor are accepted (§2.7.5.3.2)', () => {
    const q = new RawQueue();
    q.driverOk();
    const disk = pattern(1024, 0x02);
    void q.backend.write(0, disk);
    const at = q.heap + 0x1000;
    const table = q.heap;
    q.header(at, BlkRequestType.In, 0);
    q.memory.writeU8(at + 16, 0xee);
    // The header direct, then the data and status through the table.
    q.setDesc(0, at, 16, Next, 1);
    q.setDesc(1, table, 3 * 16, Indirect);
    q.setDesc(0, at + 512, 512, Write | Next, 1, table);
    q.setDesc(1, at + 1024, 512, Write | Next, 2, table);
    q.setDesc(2, at + 16, 1, Write, 0, table);
    q.offer(0);
    q.notify();
    expect(q.inspect(0)).toMatchObject({ queueError: null, malformed: null, readableBytes: 16, writableBytes: 1025 });
    expect(q.takeUsed()).toEqual([{ id: 0, len: 1025 }]);
    expect(q.memory.readU8(at + 16)).toBe(BlkStatus.Ok);
    expect(q.memory.view(at + 512, 1024)).toEqual(disk);
  });

  it('Q2: the WRITE flag on an INDIRECT descriptor is ignored, as head or after direct descriptors', () => {
    const q = new RawQueue();
    q.driverOk();
    const disk = pattern(512, 0x03);
    void q.backend.write(0, disk);
    // Head INDIRECT | WRITE: header, data, status in the table.
    indirectRead(q, q.heap, q.heap + 0x1000, 1);
    q.setDesc(0, q.heap, 3 * 16, Indirect | Write);
    q.offer(0);
    // Header direct, then INDIRECT | WRITE with data and status.
    const at = q.heap + 0x3000;
    q.header(at, BlkRequestType.In, 0);
    q.setDesc(1, at, 16, Next, 2);
    q.setDesc(2, q.heap + 0x800, 2 * 16, Indirect | Write);
    q.setDesc(0, at + 512, 512, Write | Next, 1, q.heap + 0x800);
    q.setDesc(1, at + 16, 1, Write, 0, q.heap + 0x800);
    q.offer(1);
    q.notify();
    expect(q.takeUsed()).toEqual([
      { id: 0, len: 513 },
      { id: 1, len: 513 },
    ]);
    expect(q.memory.view(q.heap + 0x1000 + 512, 512)).toEqual(disk);
    expect(q.memory.view(at + 512, 512)).toEqual(disk);
  });

  it('Q2: INDIRECT with NEXT, nested INDIRECT, length 0 or not a multiple of 16 are malformed (used.len 0), also after direct descriptors', () => {
    const q = new RawQueue();
    q.driverOk();
    const at = q.heap + 0x4000;
    const table = q.heap;
    q.header(at, BlkRequestType.In, 0);
    q.memory.writeU8(at + 16, 0xee);
    q.setDesc(0, at + 512, 512, Write | Next, 1, table);
    q.setDesc(1, at + 16, 1, Write, 0, table);
    const nested = q.heap + 0x800;
    q.setDesc(0, table, 2 * 16, Indirect, 0, nested);
    const cases: Array<[string, number, number, number, QueueError]> = [
      ['INDIRECT | NEXT', table, 2 * 16, Indirect | Next, QueueError.IndirectWithNext],
      ['nested INDIRECT', nested, 16, Indirect, QueueError.NestedIndirect],
      ['length 0', table, 0, Indirect, QueueError.IndirectBadLength],
      ['length 24', table, 24, Indirect, QueueError.IndirectBadLength],
    ];
    cases.forEach(([, addr, len, flags], i) => {
      // Descriptors 2i (header, direct) and 2i + 1 (the INDIRECT one); the next of an INDIRECT | NEXT points at a valid status.
      q.setDesc(2 * i, at, 16, Next, 2 * i + 1);
      q.setDesc(2 * i + 1, addr, len, flags, 15);
      q.offer(2 * i);
    });
    q.setDesc(15, at + 16, 1, Write);
    q.notify();
    expect(q.takeUsed()).toEqual(cases.map((_, i) => ({ id: 2 * i, len: 0 })));
    expect(cases.map(([name], i) => [name, q.inspect(i).queueError])).toEqual(cases.map(([name, , , , error]) => [name, error]));
    expect(q.memory.readU8(at + 16)).toBe(0xee);
    expectServesNextRequest(q);
  });

  it("Q3: a chain carrying more segments than the device's limit is malformed ('too-many-segments'), and touches nothing", () => {
    expect(Object.values(QueueError)).toContain('too-many-segments');
    // Three descriptors, but the data buffer crosses 512 regions of 512 bytes:
    // 514 segments against seg_max 14 (device queue size 16).
    const q = new RawQueue({ size: 16, queueSize: 16, ramBytes: 1 << 20, splitRegions: { from: 0x40000, bytes: 512 } });
    q.driverOk();
    void q.backend.write(0, pattern(256 << 10, 0x04));
    const at = q.heap;
    const data = RAW_RAM_BASE + 0x40000;
    q.header(at, BlkRequestType.In, 0);
    q.memory.writeU8(at + 16, 0xee);
    q.memory.fill(data, 256 << 10, 0xcc);
    q.setDesc(0, at, 16, Next, 1);
    q.setDesc(1, data, 256 << 10, Write | Next, 2);
    q.setDesc(2, at + 16, 1, Write);
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expect(q.disk.device.stats.malformed).toBe(1);
    expect(q.memory.readU8(at + 16)).toBe(0xee);
    expect(q.bytes.subarray(0x40000, 0x40000 + (256 << 10)).every((b) => b === 0xcc)).toBe(true);
    expectServesNextRequest(q);
  });

  it('Q3: a chain of seg_max + 2 descriptors (a full direct chain) is served', () => {
    const q = new RawQueue({ size: 16, queueSize: 16 });
    q.driverOk();
    const disk = pattern(14 * 512, 0x05);
    void q.backend.write(0, disk);
    const at = q.heap + 0x1000;
    q.header(at, BlkRequestType.In, 0);
    q.setDesc(0, at, 16, Next, 1);
    for (let i = 1; i <= 14; i++) q.setDesc(i, at + 512 * i, 512, Write | Next, i + 1);
    q.setDesc(15, at + 16, 1, Write);
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 14 * 512 + 1 }]);
    expect(q.memory.view(at + 512, 14 * 512)).toEqual(disk);
  });
});
