// One test per MUST rule of DESIGN.md ("What the device must honour"),
// driven through hand-built rings.
import { describe, expect, it } from 'vitest';
import { BlkRequestType, BlkStatus } from '../src/block/constants.ts';
import { DeviceStatus } from '../src/virtio/device.ts';
import { DescFlag } from '../src/virtio/queue.ts';
import { MmioInterrupt, MmioReg } from '../src/virtio/mmio.ts';
import { MemoryBackend } from '../src/backends/memory.ts';
import { RAW_RAM_BASE, RAW_RAM_BYTES, RawQueue } from './support/raw-queue.ts';

const { Next, Write, Indirect } = DescFlag;

/** A well-formed 3-descriptor read of one sector at descriptors d, d+1, d+2. */
function offerRead(q: RawQueue, d: number, at: number): void {
  q.header(at, BlkRequestType.In, 0);
  q.setDesc(d, at, 16, Next, d + 1);
  q.setDesc(d + 1, at + 512, 512, Write | Next, d + 2);
  q.setDesc(d + 2, at + 16, 1, Write);
  q.offer(d);
}

function expectServesNextRequest(q: RawQueue): void {
  const at = q.heap + 0x8000;
  q.memory.writeU8(at + 16, 0xff);
  offerRead(q, 10, at);
  q.notify();
  const used = q.takeUsed();
  expect(used.at(-1)).toEqual({ id: 10, len: 513 });
  expect(q.memory.readU8(at + 16)).toBe(BlkStatus.Ok);
}

describe('virtqueue MUST rules', () => {
  it('chain walk TTL = queue size: a descriptor loop completes with used.len 0', () => {
    const q = new RawQueue();
    q.driverOk();
    q.header(q.heap, BlkRequestType.In, 0);
    q.setDesc(0, q.heap, 16, Next, 1);
    q.setDesc(1, q.heap + 512, 512, Write | Next, 0); // loops back to 0
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expectServesNextRequest(q);
  });

  it('total chain length must not exceed 2^32 bytes', () => {
    const q = new RawQueue();
    q.driverOk();
    q.setDesc(0, RAW_RAM_BASE, 0xffff_ffff, Next, 1);
    q.setDesc(1, RAW_RAM_BASE, 0xffff_ffff, Write);
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 0 }]);
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
    // It stays stopped until reset, then serves again.
    q.notify();
    expect(q.takeUsed()).toEqual([]);
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
  });

  it('descriptor indices must be below the queue size; a head out of range breaks the ring', () => {
    const q = new RawQueue();
    q.driverOk();
    q.header(q.heap, BlkRequestType.In, 0);
    q.setDesc(0, q.heap, 16, Next, q.size); // next out of range
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 0 }]);
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

  it('sets used.len before publishing used.idx: every published element has its final length', () => {
    const q = new RawQueue();
    q.driverOk();
    for (let i = 0; i < 5; i++) offerRead(q, i * 3, q.heap + i * 0x1000);
    q.notify();
    expect(q.takeUsed()).toEqual([0, 3, 6, 9, 12].map((id) => ({ id, len: 513 })));
  });

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
