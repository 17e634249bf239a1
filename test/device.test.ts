import { describe, expect, it, vi } from 'vitest';
import { MemoryBackend } from '../src/backends/memory.ts';
import type { BlockBackend } from '../src/backends/backend.ts';
import { BlkConfig, BlkFeature, BlkRequestType, BlkStatus, WRITE_ZEROES_FLAG_UNMAP } from '../src/block/constants.ts';
import { CacheMode, VirtioBlkDevice } from '../src/block/device.ts';
import { MalformedRequest } from '../src/block/request.ts';
import type { SameThreadDisk } from '../src/host/browser/same-thread.ts';
import { VirtioBlkDriver } from '../src/driver/driver.ts';
import { DeviceStatus, VirtioFeature, hasFeature } from '../src/virtio/device.ts';
import { DescFlag } from '../src/virtio/queue.ts';
import { MmioInterrupt, MmioReg } from '../src/virtio/mmio/mmio.ts';
import { RawQueue } from './support/raw-queue.ts';
import { RAM_BASE, makeRig, pattern } from './support/rig.ts';

const { Next, Write } = DescFlag;

describe('virtio-blk features and config space (§5.2.3, §5.2.4)', () => {
  it('offers the documented features, DISCARD/WRITE_ZEROES only when the backend supports them', () => {
    const dev = new VirtioBlkDevice(new MemoryBackend(1 << 20));
    const bits = [
      VirtioFeature.Version1,
      VirtioFeature.RingEventIdx,
      VirtioFeature.RingIndirectDesc,
      BlkFeature.BlkSize,
      BlkFeature.SegMax,
      BlkFeature.SizeMax,
      BlkFeature.Topology,
      BlkFeature.Flush,
      BlkFeature.ConfigWce,
      BlkFeature.Discard,
      BlkFeature.WriteZeroes,
    ];
    expect(dev.deviceFeatures).toBe(bits.reduce((f, b) => f | (1n << b), 0n));
    const plain: BlockBackend = Object.assign(new MemoryBackend(1 << 20), { supportsDiscard: false, supportsWriteZeroes: false });
    const f = new VirtioBlkDevice(plain).deviceFeatures;
    expect(f & (1n << BlkFeature.Discard)).toBe(0n);
    expect(f & (1n << BlkFeature.WriteZeroes)).toBe(0n);
    const ro = new VirtioBlkDevice(new MemoryBackend(1 << 20, { readOnly: true })).deviceFeatures;
    expect(ro & (1n << BlkFeature.Ro)).not.toBe(0n);
    expect(ro & (1n << BlkFeature.Discard)).toBe(0n);
  });

  it('fills the config space byte for byte, padding zero', () => {
    const dev = new VirtioBlkDevice(new MemoryBackend(3 * 512 + 100), { queueSize: 128 });
    const v = new DataView(dev.config.buffer);
    expect(dev.config.length).toBe(60);
    expect(v.getBigUint64(BlkConfig.Capacity, true)).toBe(3n);
    expect(v.getUint32(BlkConfig.SizeMax, true)).toBe(1 << 20);
    expect(v.getUint32(BlkConfig.SegMax, true)).toBe(126);
    expect(v.getUint32(BlkConfig.GeometryCylinders, true)).toBe(0);
    expect(v.getUint32(BlkConfig.BlkSize, true)).toBe(512);
    expect(v.getUint8(BlkConfig.PhysicalBlockExp)).toBe(3);
    expect(v.getUint8(BlkConfig.AlignmentOffset)).toBe(0);
    expect(v.getUint16(BlkConfig.MinIoSize, true)).toBe(8);
    expect(v.getUint32(BlkConfig.OptIoSize, true)).toBe(0);
    expect(v.getUint8(BlkConfig.Writeback)).toBe(1);
    expect(v.getUint8(33)).toBe(0);
    expect(v.getUint16(BlkConfig.NumQueues, true)).toBe(0);
    expect(v.getUint32(BlkConfig.MaxDiscardSectors, true)).toBe(1 << 22);
    expect(v.getUint32(BlkConfig.MaxDiscardSeg, true)).toBe(32);
    expect(v.getUint32(BlkConfig.DiscardSectorAlignment, true)).toBe(8);
    expect(v.getUint32(BlkConfig.MaxWriteZeroesSectors, true)).toBe(1 << 22);
    expect(v.getUint32(BlkConfig.MaxWriteZeroesSeg, true)).toBe(32);
    expect(v.getUint8(BlkConfig.WriteZeroesMayUnmap)).toBe(1);
    expect(Array.from(dev.config.subarray(57, 60))).toEqual([0, 0, 0]);
  });

  it('the driver reads capacity and features through the register file', async () => {
    const { driver } = await makeRig({ diskBytes: 5 << 20 });
    expect(driver.capacitySectors).toBe(10240);
    expect(driver.readOnly).toBe(false);
  });
});

describe('virtio-blk requests (§5.2.6)', () => {
  it('IN / OUT round-trip with many segments and an indirect table', async () => {
    const { driver, memory } = await makeRig();
    const buf = driver.allocate(64 * 1024);
    const data = pattern(64 * 1024, 3);
    memory.write(buf.addr, data);
    const segs = Array.from({ length: 16 }, (_, i) => ({ addr: buf.addr + i * 4096, len: 4096 }));
    const w = await driver.run({ type: BlkRequestType.Out, sector: 100, out: segs, indirect: true });
    expect(w).toMatchObject({ status: BlkStatus.Ok, usedLen: 1 });
    memory.fill(buf.addr, 64 * 1024, 0);
    const r = await driver.run({ type: BlkRequestType.In, sector: 100, in: segs, indirect: false });
    expect(r).toMatchObject({ status: BlkStatus.Ok, usedLen: 64 * 1024 + 1 });
    const back = new Uint8Array(64 * 1024);
    memory.read(buf.addr, back);
    expect(back).toEqual(data);
  });

  it('accepts any framing: header split across descriptors, status inside the last data descriptor', async () => {
    const { driver } = await makeRig();
    await driver.write(0, pattern(512, 9));
    const id = await driver.run({ type: BlkRequestType.GetId, in: [{ addr: driver.allocate(20).addr, len: 20 }], splitHeader: true });
    expect(id.status).toBe(BlkStatus.Ok);

    // Status as the last byte of a descriptor that also carries data.
    const q = new RawQueue();
    q.driverOk();
    q.backend.write(0, pattern(512, 4));
    const at = q.heap;
    q.header(at, BlkRequestType.In, 0);
    q.setDesc(0, at, 3, Next, 1);
    q.setDesc(1, at + 3, 13, Next, 2);
    q.setDesc(2, at + 1024, 100, Write | Next, 3);
    q.setDesc(3, at + 1124, 413, Write); // 412 data bytes + status
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 513 }]);
    expect(q.memory.readU8(at + 1124 + 412)).toBe(BlkStatus.Ok);
    expect(q.memory.view(at + 1024, 512)).toEqual(pattern(512, 4));
  });

  it('ignores the reserved header field (Linux ioprio)', async () => {
    const { driver } = await makeRig();
    const buf = driver.allocate(512);
    const c = await driver.run({ type: BlkRequestType.In, sector: 0, in: [buf], ioprio: 0x6003 });
    expect(c.status).toBe(BlkStatus.Ok);
  });

  it('sector ranges beyond capacity → IOERR, nothing written', async () => {
    const backend = new MemoryBackend(8 * 512);
    const { driver, memory } = await makeRig({ backend });
    const buf = driver.allocate(1024);
    memory.fill(buf.addr, 1024, 0x77);
    const c = await driver.run({ type: BlkRequestType.Out, sector: 7, out: [buf] });
    expect(c).toMatchObject({ status: BlkStatus.IoErr, usedLen: 1 });
    expect(backend.bytes.every((b) => b === 0)).toBe(true);
    expect((await driver.run({ type: BlkRequestType.In, sector: 2 ** 52, in: [buf] })).status).toBe(BlkStatus.IoErr);
    // The last sector is fine.
    expect((await driver.run({ type: BlkRequestType.Out, sector: 7, out: [{ addr: buf.addr, len: 512 }] })).status).toBe(BlkStatus.Ok);
  });

  it('data that is not whole sectors → IOERR', async () => {
    const { driver } = await makeRig();
    const buf = driver.allocate(4096);
    expect((await driver.run({ type: BlkRequestType.In, sector: 0, in: [{ addr: buf.addr, len: 100 }] })).status).toBe(BlkStatus.IoErr);
  });

  it('writes when RO was offered → IOERR, nothing written; reads and flush still work', async () => {
    const backend = new MemoryBackend(1 << 20, { readOnly: true, data: pattern(1 << 20, 5) });
    const { driver, memory } = await makeRig({ backend });
    expect(driver.readOnly).toBe(true);
    const buf = driver.allocate(4096);
    memory.fill(buf.addr, 4096, 0);
    expect((await driver.run({ type: BlkRequestType.Out, sector: 0, out: [buf] })).status).toBe(BlkStatus.IoErr);
    expect(backend.bytes.subarray(0, 4096)).toEqual(pattern(1 << 20, 5).subarray(0, 4096));
    expect(await driver.read(0, 4096)).toEqual(pattern(1 << 20, 5).subarray(0, 4096));
    await driver.flush();
    expect(await driver.discardOrZero(BlkRequestType.WriteZeroes, [{ sector: 0, sectors: 8 }])).not.toBe(BlkStatus.Ok);
  });

  it('GET_ID returns 20 bytes, zero-padded; a shorter buffer gets what fits', async () => {
    const { driver, memory } = await makeRig({ serial: 'disk-1' });
    expect(await driver.getId()).toBe('disk-1');
    const buf = driver.allocate(20);
    memory.fill(buf.addr, 20, 0xee);
    const c = await driver.run({ type: BlkRequestType.GetId, in: [{ addr: buf.addr, len: 20 }] });
    expect(c.usedLen).toBe(21);
    expect(Array.from(memory.view(buf.addr + 6, 14)!)).toEqual(new Array(14).fill(0));
    const short = await driver.run({ type: BlkRequestType.GetId, in: [{ addr: buf.addr, len: 4 }] });
    expect(short).toMatchObject({ status: BlkStatus.Ok, usedLen: 5 });
    const { driver: long } = await makeRig({ serial: 'a-serial-longer-than-twenty' });
    expect(await long.getId()).toBe('a-serial-longer-than');
  });

  it('unknown request types → UNSUPP', async () => {
    const { driver } = await makeRig();
    for (const type of [2, 3, 7, BlkRequestType.GetLifetime, BlkRequestType.SecureErase, 0xdead]) {
      expect((await driver.run({ type, in: [driver.allocate(512)] })).status).toBe(BlkStatus.Unsupp);
    }
  });

  it('WRITE_ZEROES with and without UNMAP: reads return zeroes', async () => {
    const { driver } = await makeRig();
    await driver.write(0, pattern(64 * 512, 6));
    expect(await driver.discardOrZero(BlkRequestType.WriteZeroes, [{ sector: 4, sectors: 8 }, { sector: 20, sectors: 4, flags: WRITE_ZEROES_FLAG_UNMAP }])).toBe(BlkStatus.Ok);
    const back = await driver.read(0, 64 * 512);
    const expected = pattern(64 * 512, 6);
    expected.fill(0, 4 * 512, 12 * 512);
    expected.fill(0, 20 * 512, 24 * 512);
    expect(back).toEqual(expected);
  });

  it('DISCARD / WRITE_ZEROES with unknown flags → UNSUPP; DISCARD with UNMAP → UNSUPP; nothing changes', async () => {
    const { driver } = await makeRig();
    await driver.write(0, pattern(8 * 512, 7));
    expect(await driver.discardOrZero(BlkRequestType.WriteZeroes, [{ sector: 0, sectors: 8, flags: 2 }])).toBe(BlkStatus.Unsupp);
    expect(await driver.discardOrZero(BlkRequestType.Discard, [{ sector: 0, sectors: 8, flags: WRITE_ZEROES_FLAG_UNMAP }])).toBe(BlkStatus.Unsupp);
    // A bad second segment fails the whole request before the first is applied.
    expect(await driver.discardOrZero(BlkRequestType.WriteZeroes, [{ sector: 0, sectors: 4 }, { sector: 0, sectors: 4, flags: 8 }])).toBe(BlkStatus.Unsupp);
    expect(await driver.read(0, 8 * 512)).toEqual(pattern(8 * 512, 7));
    expect(await driver.discardOrZero(BlkRequestType.Discard, [{ sector: 0, sectors: 8 }])).toBe(BlkStatus.Ok);
    expect(await driver.discardOrZero(BlkRequestType.Discard, [{ sector: 1 << 30, sectors: 8 }])).toBe(BlkStatus.IoErr);
  });

  it('used.len counts bytes written into device-writable buffers including the status byte', async () => {
    const { driver } = await makeRig();
    const buf = driver.allocate(8192);
    expect((await driver.run({ type: BlkRequestType.In, sector: 0, in: [buf] })).usedLen).toBe(8193);
    expect((await driver.run({ type: BlkRequestType.Out, sector: 0, out: [buf] })).usedLen).toBe(1);
    expect((await driver.run({ type: BlkRequestType.Flush })).usedLen).toBe(1);
  });

  it('a chain with no writable byte completes with used.len 0 and the device goes on', async () => {
    const q = new RawQueue();
    q.driverOk();
    q.header(q.heap, BlkRequestType.Out, 0);
    q.setDesc(0, q.heap, 16, Next, 1);
    q.setDesc(1, q.heap + 512, 512, 0);
    q.offer(0);
    q.setDesc(2, q.heap, 8, Next, 3); // short header
    q.setDesc(3, q.heap + 16, 1, Write);
    q.offer(2);
    q.notify();
    expect(q.takeUsed()).toEqual([
      { id: 0, len: 0 },
      { id: 2, len: 0 },
    ]);
    expect(q.disk.device.stats.malformed).toBe(2);
    // Well-formed chains, each malformed as a request: why.
    expect(q.inspect(0)).toMatchObject({ queueError: null, malformed: MalformedRequest.NoStatus });
    expect(q.inspect(1)).toMatchObject({ queueError: null, malformed: MalformedRequest.ShortHeader });
    expect(q.memory.readU8(q.heap + 16)).toBe(0); // the short header's status byte stays unwritten
  });
});

/** A memory backend that counts flushes and logs every write-side call in order. */
function counting(): MemoryBackend & { flushes: number; log: string[] } {
  const b = new MemoryBackend(1 << 20) as MemoryBackend & { flushes: number; log: string[] };
  b.flushes = 0;
  b.log = [];
  const write = b.write.bind(b);
  const discard = b.discard.bind(b);
  const writeZeroes = b.writeZeroes.bind(b);
  b.write = (offset, src) => (b.log.push('write'), write(offset, src));
  b.discard = (offset, length) => (b.log.push('discard'), discard(offset, length));
  b.writeZeroes = (offset, length) => (b.log.push('writeZeroes'), writeZeroes(offset, length));
  b.flush = () => {
    b.log.push('flush');
    b.flushes++;
  };
  return b;
}

describe('cache modes and FLUSH', () => {

  it('writeback: FLUSH reaches the backend; writes alone do not flush', async () => {
    const backend = counting();
    const { driver } = await makeRig({ backend });
    await driver.write(0, pattern(4096, 1));
    expect(backend.flushes).toBe(0);
    await driver.flush();
    expect(backend.flushes).toBe(1);
  });

  it('writethrough (driver clears writeback via CONFIG_WCE): every write is flushed before it completes', async () => {
    const backend = counting();
    const { driver, disk } = await makeRig({ backend });
    driver.setWriteback(false);
    expect(disk.mmio.read(MmioReg.Config + BlkConfig.Writeback, 1)).toBe(0);
    await driver.write(0, pattern(4096, 1));
    expect(backend.flushes).toBe(1);
    // Read-only bytes of the config space stay as the device set them.
    disk.mmio.write(MmioReg.Config + BlkConfig.Capacity, 1, 4);
    expect(driver.capacitySectors).toBe(2048);
  });

  it('unsafe: FLUSH completes without touching the backend', async () => {
    const backend = counting();
    const { driver } = await makeRig({ backend, cacheMode: CacheMode.Unsafe });
    await driver.write(0, pattern(4096, 1));
    await driver.flush();
    expect(backend.flushes).toBe(0);
  });
});

/** Resolves when the device next finishes a reset it had to wait for (in-flight work dropped). */
function nextResetDone(disk: SameThreadDisk): Promise<void> {
  const transport = disk.transport;
  const previous = transport.onResetDone;
  return new Promise((resolve) => {
    transport.onResetDone = () => {
      transport.onResetDone = previous;
      previous?.();
      resolve();
    };
  });
}

/** A backend whose every call parks until the test releases it (while `hold` is set). */
class ParkedBackend extends MemoryBackend {
  parked: Array<() => void> = [];
  /** Unset: calls go straight through (asynchronously), parking nothing. */
  hold = true;
  #parkedWaiters: Array<() => void> = [];
  constructor(size: number) {
    super(size);
  }
  #park(fn: () => void): Promise<void> {
    if (!this.hold) return Promise.resolve().then(fn);
    return new Promise((resolve) => {
      this.parked.push(() => (fn(), resolve()));
      for (const w of this.#parkedWaiters.splice(0)) w();
    });
  }
  /** Resolves once a call is parked (at once if one is). */
  whenParked(): Promise<void> {
    if (this.parked.length > 0) return Promise.resolve();
    return new Promise((resolve) => this.#parkedWaiters.push(resolve));
  }
  override read(offset: number, dst: Uint8Array): Promise<void> {
    return this.#park(() => super.read(offset, dst));
  }
  override write(offset: number, src: Uint8Array): Promise<void> {
    const copy = src.slice();
    return this.#park(() => super.write(offset, copy));
  }
  override flush(): Promise<void> {
    return this.#park(() => {});
  }
  release(index: number): void {
    this.parked.splice(index, 1)[0]!();
  }
}

describe('asynchronous backends', () => {
  it('completes requests out of order', async () => {
    const backend = new ParkedBackend(1 << 20);
    backend.write(0, pattern(512, 1));
    backend.release(0);
    await Promise.resolve();
    const { driver } = await makeRig({ backend });
    const a = driver.submit({ type: BlkRequestType.In, sector: 0, in: [driver.allocate(512)] });
    const b = driver.submit({ type: BlkRequestType.Flush });
    driver.kick();
    expect(backend.parked).toHaveLength(2);
    expect(driver.reap()).toEqual([]);
    backend.release(1); // the flush first
    // wait() returns on the interrupt its completion raises.
    expect((await driver.wait()).map((c) => c.id)).toEqual([b]);
    backend.release(0);
    expect((await driver.wait()).map((c) => c.id)).toEqual([a]);
  });

  it('concurrent driver.run callers all get their completions, whoever reaps them', async () => {
    // Reads park; the test releases them one at a time in a seeded random
    // order, each as soon as one is parked: completions interleave across
    // callers without any timer.
    const backend = new ParkedBackend(1 << 20);
    backend.hold = false;
    backend.write(0, pattern(400 * 512, 8));
    const { driver } = await makeRig({ backend });
    backend.hold = true;
    let finished = false;
    const callers = Array.from({ length: 16 }, async (_, i) => {
      const buf = driver.allocate(512);
      let ok = 0;
      for (let k = 0; k < 25; k++) {
        const sector = i * 25 + k;
        const c = await driver.run({ type: BlkRequestType.In, sector, in: [buf] });
        const got = new Uint8Array(512);
        driver.memory.read(buf.addr, got);
        if (c.status === BlkStatus.Ok && got.every((b, j) => b === backend.bytes[sector * 512 + j])) ok++;
      }
      return ok;
    });
    const all = Promise.all(callers).finally(() => (finished = true));
    let seed = 7;
    let released = 0;
    while (!finished) {
      await Promise.race([backend.whenParked(), all]);
      if (backend.parked.length === 0) continue;
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      backend.release(seed % backend.parked.length);
      released++;
    }
    expect(await all).toEqual(Array(16).fill(25));
    expect(released).toBe(16 * 25);
  });

  it('reset in the middle of I/O: Status reads non-zero until in-flight work is dropped; nothing is written after', async () => {
    const backend = new ParkedBackend(1 << 20);
    const { driver, disk, memory } = await makeRig({ backend });
    const buf = driver.allocate(4096);
    memory.fill(buf.addr, 4096, 0x11);
    driver.submit({ type: BlkRequestType.In, sector: 0, in: [buf] });
    driver.kick();
    const statusBefore = disk.mmio.read(MmioReg.Status, 4);
    const resetDone = nextResetDone(disk);
    disk.mmio.write(MmioReg.Status, 0, 4);
    expect(disk.mmio.read(MmioReg.Status, 4)).toBe(statusBefore);
    // Writes to Status while the reset is pending are ignored.
    disk.mmio.write(MmioReg.Status, 1, 4);
    expect(disk.mmio.read(MmioReg.Status, 4)).toBe(statusBefore);
    const snapshot = new Uint8Array(16 << 20);
    memory.read(memory.extents[0]!.start, snapshot);
    backend.release(0); // the read lands in guest RAM (the backend's own copy), then the device drops it
    await resetDone;
    expect(disk.mmio.read(MmioReg.Status, 4)).toBe(0);
    expect(disk.mmio.read(MmioReg.InterruptStatus, 4)).toBe(0);
    const after = new Uint8Array(16 << 20);
    memory.read(memory.extents[0]!.start, after);
    // Only the data buffer the backend filled may differ: no status byte, no used ring entry.
    const diff: number[] = [];
    for (let i = 0; i < after.length; i++) if (after[i] !== snapshot[i]) diff.push(i + memory.extents[0]!.start);
    expect(diff.length).toBeGreaterThan(0); // the backend did fill the buffer...
    expect(diff.every((a) => a >= buf.addr && a < buf.addr + 4096)).toBe(true); // ...and nothing else changed
    expect(disk.device.stats.completed).toBe(0);
    // The same device comes back up for a new driver, and serves it.
    backend.hold = false;
    const again = await VirtioBlkDriver.init({
      mmio: disk.mmio,
      memory,
      arena: { addr: RAM_BASE + (1 << 20), len: (16 << 20) - (1 << 20) },
      waitForInterrupt: () => disk.waitForInterrupt(),
    });
    expect(await again.getId()).toBe('virtio-blk-web');
    await again.write(8, pattern(4096, 12));
    expect(await again.read(8, 4096)).toEqual(pattern(4096, 12));
    expect(backend.bytes.subarray(8 * 512, 8 * 512 + 4096)).toEqual(pattern(4096, 12));
    expect(disk.mmio.read(MmioReg.Status, 4) & DeviceStatus.DeviceNeedsReset).toBe(0);
  });

  it('a storage error becomes IOERR for that request and the device keeps serving', async () => {
    const backend = new MemoryBackend(1 << 20);
    const onStorageError = vi.fn();
    const { driver } = await makeRig({ backend, onStorageError });
    const realRead = backend.read.bind(backend);
    backend.read = () => {
      throw new DOMException('gone', 'InvalidStateError');
    };
    const buf = driver.allocate(512);
    expect((await driver.run({ type: BlkRequestType.In, sector: 0, in: [buf] })).status).toBe(BlkStatus.IoErr);
    expect(onStorageError).toHaveBeenCalledWith(expect.objectContaining({ code: 'closed' }));
    backend.read = realRead;
    expect((await driver.run({ type: BlkRequestType.In, sector: 0, in: [buf] })).status).toBe(BlkStatus.Ok);
    backend.write = () => Promise.reject(new DOMException('full', 'QuotaExceededError'));
    expect((await driver.run({ type: BlkRequestType.Out, sector: 0, out: [buf] })).status).toBe(BlkStatus.IoErr);
    expect(onStorageError).toHaveBeenLastCalledWith(expect.objectContaining({ code: 'quota-exceeded' }));
  });
});

describe('resize', () => {
  it('sends a config interrupt, bumps ConfigGeneration, and the driver sees the new capacity', async () => {
    let changes = 0;
    const { driver, disk } = await makeRig({ driver: { onConfigChange: () => changes++ } });
    const gen = disk.mmio.read(MmioReg.ConfigGeneration, 4);
    await disk.resize(8 << 20);
    expect(disk.mmio.read(MmioReg.InterruptStatus, 4) & MmioInterrupt.ConfigChange).toBeTruthy();
    expect(disk.mmio.read(MmioReg.ConfigGeneration, 4)).not.toBe(gen);
    driver.ackInterrupt();
    expect(changes).toBe(1);
    expect(driver.capacitySectors).toBe(16384);
    await driver.write(16383, pattern(512, 2));
    expect(await driver.read(16383, 512)).toEqual(pattern(512, 2));
  });
});

describe('vectored backends', () => {
  /** A memory backend with readv / writev that counts its calls. */
  class VectoredBackend extends MemoryBackend {
    calls = { read: 0, write: 0, readv: 0, writev: 0 };
    override read(offset: number, dst: Uint8Array): void {
      this.calls.read++;
      super.read(offset, dst);
    }
    override write(offset: number, src: Uint8Array): void {
      this.calls.write++;
      super.write(offset, src);
    }
    readv(offset: number, dsts: Uint8Array[]): Promise<void> {
      this.calls.readv++;
      for (const d of dsts) {
        super.read(offset, d);
        offset += d.length;
      }
      return Promise.resolve();
    }
    writev(offset: number, srcs: Uint8Array[]): void {
      this.calls.writev++;
      for (const s of srcs) {
        super.write(offset, s);
        offset += s.length;
      }
    }
  }

  it('serve a many-segment request with one call, sync or async; single segments keep read/write', async () => {
    const backend = new VectoredBackend(1 << 20);
    const { driver, memory } = await makeRig({ backend });
    const buf = driver.allocate(128 * 1024);
    const data = pattern(128 * 1024, 11);
    memory.write(buf.addr, data);
    // Pages in reverse order, as a page cache would hand them out.
    const pages = Array.from({ length: 32 }, (_, i) => ({ addr: buf.addr + (31 - i) * 4096, len: 4096 }));
    expect((await driver.run({ type: BlkRequestType.Out, sector: 64, out: pages })).status).toBe(BlkStatus.Ok);
    expect(backend.calls).toMatchObject({ writev: 1, write: 0 });
    const expected = new Uint8Array(128 * 1024);
    pages.forEach((p, i) => expected.set(data.subarray(p.addr - buf.addr, p.addr - buf.addr + 4096), i * 4096));
    expect(backend.bytes.subarray(64 * 512, 64 * 512 + 128 * 1024)).toEqual(expected);
    memory.fill(buf.addr, 128 * 1024, 0);
    const c = await driver.run({ type: BlkRequestType.In, sector: 64, in: pages });
    expect(c).toMatchObject({ status: BlkStatus.Ok, usedLen: 128 * 1024 + 1 });
    expect(backend.calls).toMatchObject({ readv: 1, read: 0 });
    const back = new Uint8Array(128 * 1024);
    memory.read(buf.addr, back);
    expect(back).toEqual(data);
    await driver.read(0, 4096);
    expect(backend.calls.read).toBe(1);
  });
});

describe('hardening rules: the block device (notes/hardening-rules.md)', () => {
  const writebackAt = MmioReg.Config + BlkConfig.Writeback;

  it('B1: CONFIG_WCE negotiated without FLUSH: writeback reads 0, stays 0, and the device writes through (§5.2.5.2)', async () => {
    const backend = counting();
    const { driver, disk } = await makeRig({ backend, driver: { refuseFeatures: 1n << BlkFeature.Flush } });
    expect(hasFeature(driver.features, BlkFeature.ConfigWce)).toBe(true);
    expect(hasFeature(driver.features, BlkFeature.Flush)).toBe(false);
    expect(disk.mmio.read(writebackAt, 1)).toBe(0);
    disk.mmio.write(writebackAt, 1, 1);
    expect(disk.mmio.read(writebackAt, 1)).toBe(0);
    expect(disk.device.writeback).toBe(false);
    await driver.write(0, pattern(4096, 1));
    expect(backend.log).toEqual(['write', 'flush']);
  });

  it('B2: an idle reset restores the config to defaults: writeback reads 1 again before re-init', async () => {
    const { driver, disk } = await makeRig();
    driver.setWriteback(false);
    expect(disk.mmio.read(writebackAt, 1)).toBe(0);
    disk.mmio.write(MmioReg.Status, 0, 4);
    expect(disk.mmio.read(MmioReg.Status, 4)).toBe(0);
    expect(disk.mmio.read(writebackAt, 1)).toBe(1);
    // And a new driver that leaves it alone gets a writeback cache.
    const backend = disk.device.backend as MemoryBackend;
    const again = await VirtioBlkDriver.init({
      mmio: disk.mmio,
      memory: driver.memory,
      arena: { addr: RAM_BASE + (1 << 20), len: (16 << 20) - (1 << 20) },
      waitForInterrupt: () => disk.waitForInterrupt(),
    });
    expect(disk.mmio.read(writebackAt, 1)).toBe(1);
    expect(disk.device.writeback).toBe(true);
    await again.write(0, pattern(512, 2));
    expect(backend.bytes.subarray(0, 512)).toEqual(pattern(512, 2));
  });

  it('B2: a reset that waits for in-flight work restores the config too', async () => {
    const backend = new ParkedBackend(1 << 20);
    const { driver, disk } = await makeRig({ backend });
    driver.setWriteback(false);
    driver.submit({ type: BlkRequestType.In, sector: 0, in: [driver.allocate(512)] });
    driver.kick();
    const done = nextResetDone(disk);
    disk.mmio.write(MmioReg.Status, 0, 4);
    expect(disk.mmio.read(MmioReg.Status, 4)).not.toBe(0);
    backend.release(0);
    await done;
    expect(disk.mmio.read(MmioReg.Status, 4)).toBe(0);
    expect(disk.mmio.read(writebackAt, 1)).toBe(1);
  });

  for (const type of [BlkRequestType.WriteZeroes, BlkRequestType.Discard]) {
    const name = type === BlkRequestType.Discard ? 'DISCARD' : 'WRITE_ZEROES';
    it(`B3: ${name} segments are copied once: the guest rewriting them during the request changes nothing`, async () => {
      const backend = counting();
      backend.write(0, pattern(128 * 512, 3));
      const { driver, memory } = await makeRig({ backend });
      const segs = driver.allocate(32);
      memory.writeU64(segs.addr, 0);
      memory.writeU32(segs.addr + 8, 8);
      memory.writeU32(segs.addr + 12, 0);
      memory.writeU64(segs.addr + 16, 16);
      memory.writeU32(segs.addr + 24, 8);
      memory.writeU32(segs.addr + 28, 0);
      // A second vCPU rewrites the second segment while the device is in the
      // backend for the first: another sector, and flags it would refuse.
      const calls: Array<[number, number]> = [];
      const apply = type === BlkRequestType.Discard ? 'discard' : 'writeZeroes';
      const original = backend[apply].bind(backend);
      backend[apply] = (offset: number, length: number) => {
        calls.push([offset, length]);
        if (calls.length === 1) {
          memory.writeU64(segs.addr + 16, 64);
          memory.writeU32(segs.addr + 24, 16);
          memory.writeU32(segs.addr + 28, 0x80);
        }
        return original(offset, length);
      };
      const c = await driver.run({ type, out: [{ addr: segs.addr, len: 32 }] });
      expect(c.status).toBe(BlkStatus.Ok);
      expect(calls).toEqual([
        [0, 8 * 512],
        [16 * 512, 8 * 512],
      ]);
      // Sectors 64.. were never part of the request.
      expect(backend.bytes.subarray(64 * 512, 80 * 512)).toEqual(pattern(128 * 512, 3).subarray(64 * 512, 80 * 512));
      if (type === BlkRequestType.WriteZeroes) expect(backend.bytes.subarray(16 * 512, 24 * 512).every((b) => b === 0)).toBe(true);
    });
  }

  it('B4: in write-through mode DISCARD and WRITE_ZEROES are followed by a backend flush before they complete', async () => {
    // Writeback cleared through CONFIG_WCE, and FLUSH not negotiated at all.
    for (const refuse of [0n, (1n << BlkFeature.Flush) | (1n << BlkFeature.ConfigWce)]) {
      const backend = counting();
      const { driver, disk } = await makeRig({ backend, driver: { refuseFeatures: refuse } });
      if (refuse === 0n) driver.setWriteback(false);
      expect(disk.device.writeback).toBe(false);
      expect(await driver.discardOrZero(BlkRequestType.WriteZeroes, [{ sector: 0, sectors: 8 }])).toBe(BlkStatus.Ok);
      expect(await driver.discardOrZero(BlkRequestType.Discard, [{ sector: 8, sectors: 8 }])).toBe(BlkStatus.Ok);
      expect(backend.log).toEqual(['writeZeroes', 'flush', 'discard', 'flush']);
    }
    // The completion waits for the flush: with the flush parked, nothing is in the used ring.
    const parked = new ParkedBackend(1 << 20);
    const { driver } = await makeRig({ backend: parked });
    driver.setWriteback(false);
    const buf = driver.allocate(16);
    driver.memory.writeU64(buf.addr, 0);
    driver.memory.writeU32(buf.addr + 8, 8);
    driver.memory.writeU32(buf.addr + 12, 0);
    const id = driver.submit({ type: BlkRequestType.WriteZeroes, out: [{ addr: buf.addr, len: 16 }] });
    driver.kick();
    expect(parked.parked).toHaveLength(1); // the flush
    expect(driver.reap()).toEqual([]);
    parked.release(0);
    expect(await driver.wait()).toEqual([expect.objectContaining({ id, status: BlkStatus.Ok })]);
  });

  it('B4: in writeback mode DISCARD and WRITE_ZEROES do not flush', async () => {
    const backend = counting();
    const { driver } = await makeRig({ backend });
    expect(await driver.discardOrZero(BlkRequestType.WriteZeroes, [{ sector: 0, sectors: 8 }])).toBe(BlkStatus.Ok);
    expect(await driver.discardOrZero(BlkRequestType.Discard, [{ sector: 8, sectors: 8 }])).toBe(BlkStatus.Ok);
    expect(backend.log).toEqual(['writeZeroes', 'discard']);
  });

  it('B5: queueSize is a power of two from 4 to 1024, else RangeError; seg_max = min(queueSize − 2, 254)', () => {
    const backend = new MemoryBackend(1 << 20);
    for (const bad of [0, 1, 2, 3, 6, 100, 2048, 4096, 32768, 65536, 1.5, -4, Number.NaN]) {
      expect(() => new VirtioBlkDevice(backend, { queueSize: bad }), `queueSize ${bad}`).toThrow(RangeError);
    }
    for (const [size, segMax] of [
      [4, 2],
      [16, 14],
      [128, 126],
      [256, 254],
      [512, 254],
      [1024, 254],
    ] as const) {
      const dev = new VirtioBlkDevice(backend, { queueSize: size });
      expect(dev.queueMaxSize).toBe(size);
      expect(new DataView(dev.config.buffer).getUint32(BlkConfig.SegMax, true), `seg_max for ${size}`).toBe(segMax);
    }
  });
});
