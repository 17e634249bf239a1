import { describe, expect, it } from 'vitest';
import { MemoryBackend } from '../src/backends/memory.ts';
import { BlkConfig } from '../src/block/constants.ts';
import { VirtioBlkDevice } from '../src/block/device.ts';
import { DeviceStatus } from '../src/virtio/device.ts';
import { GuestMemory } from '../src/virtio/memory.ts';
import { MMIO_MAGIC, MmioDevice, MmioInterrupt, MmioReg, MmioRegisters, createMmioState } from '../src/virtio/mmio/mmio.ts';
import { RAW_RAM_BASE, RAW_RAM_BYTES, RawQueue } from './support/raw-queue.ts';

function rig() {
  const state = createMmioState(false);
  const device = new VirtioBlkDevice(new MemoryBackend(1 << 20), { queueSize: 64 });
  const transport = new MmioDevice(state, device, GuestMemory.of(new ArrayBuffer(1 << 20), 0x4000_0000));
  const mmio = new MmioRegisters(state);
  mmio.onDoorbell = () => transport.poll();
  return { mmio, device, transport };
}

/** A GET_ID with no id buffer (header + status only), completed before returning. */
function completeStatusOnlyGetId(q: RawQueue): void {
  q.header(q.heap, 8, 0);
  q.setDesc(0, q.heap, 16, 1, 1);
  q.setDesc(1, q.heap + 16, 1, 2);
  q.offer(0);
  q.notify();
}

const { Acknowledge: ACK, Driver: DRV, FeaturesOk: FOK, DriverOk: DOK } = DeviceStatus;

describe('virtio-mmio v2 register file (§4.2.2)', () => {
  it('identifies itself: MagicValue, Version 2, DeviceID 2', () => {
    const { mmio } = rig();
    expect(mmio.read(MmioReg.MagicValue, 4)).toBe(MMIO_MAGIC);
    expect(mmio.read(MmioReg.MagicValue, 4)).toBe(0x74726976);
    expect(mmio.read(MmioReg.Version, 4)).toBe(2);
    expect(mmio.read(MmioReg.DeviceId, 4)).toBe(2);
    expect(mmio.read(MmioReg.VendorId, 4)).not.toBe(0);
    expect(MmioRegisters.registerName(MmioReg.QueueNotify)).toBe('QueueNotify');
  });

  it('registers need 32-bit aligned accesses; others read 0 and writes are ignored', () => {
    const { mmio } = rig();
    expect(mmio.read(MmioReg.MagicValue, 2)).toBe(0);
    expect(mmio.read(MmioReg.MagicValue + 1, 4)).toBe(0);
    mmio.write(MmioReg.Status, ACK, 1);
    expect(mmio.read(MmioReg.Status, 4)).toBe(0);
    expect(mmio.read(0x0f0, 4)).toBe(0); // unknown register
  });

  it('selects device feature words with DeviceFeaturesSel', () => {
    const { mmio, device } = rig();
    mmio.write(MmioReg.DeviceFeaturesSel, 0, 4);
    const lo = mmio.read(MmioReg.DeviceFeatures, 4);
    mmio.write(MmioReg.DeviceFeaturesSel, 1, 4);
    const hi = mmio.read(MmioReg.DeviceFeatures, 4);
    mmio.write(MmioReg.DeviceFeaturesSel, 2, 4);
    expect(mmio.read(MmioReg.DeviceFeatures, 4)).toBe(0);
    expect(BigInt(lo) | (BigInt(hi) << 32n)).toBe(device.deviceFeatures);
  });

  it('refuses FEATURES_OK for features the device did not offer, and without VERSION_1', () => {
    const { mmio, device } = rig();
    const negotiate = (features: bigint): number => {
      mmio.write(MmioReg.Status, 0, 4);
      mmio.write(MmioReg.Status, ACK | DRV, 4);
      mmio.write(MmioReg.DriverFeaturesSel, 0, 4);
      mmio.write(MmioReg.DriverFeatures, Number(features & 0xffff_ffffn), 4);
      mmio.write(MmioReg.DriverFeaturesSel, 1, 4);
      mmio.write(MmioReg.DriverFeatures, Number(features >> 32n), 4);
      mmio.write(MmioReg.Status, ACK | DRV | FOK, 4);
      return mmio.read(MmioReg.Status, 4);
    };
    expect(negotiate(device.deviceFeatures) & FOK).toBe(FOK);
    expect(negotiate(device.deviceFeatures | (1n << 12n)) & FOK).toBe(0); // MQ: not offered
    expect(negotiate(device.deviceFeatures & ~(1n << 32n)) & FOK).toBe(0); // no VERSION_1
    expect(negotiate(1n << 32n) & FOK).toBe(FOK); // the bare minimum is fine
  });

  it('ignores DriverFeatures writes after FEATURES_OK', () => {
    const q = new RawQueue();
    q.disk.mmio.write(MmioReg.DriverFeaturesSel, 0, 4);
    q.disk.mmio.write(MmioReg.DriverFeatures, 0, 4);
    q.driverOk();
    // EVENT_IDX stayed negotiated: avail_event gets written after a batch.
    q.memory.writeU16(q.used + 4 + 8 * q.size, 0xabcd);
    q.notify();
    expect(q.memory.readU16(q.used + 4 + 8 * q.size)).toBe(0);
  });

  it('reports QueueNumMax, and 0 for queues that do not exist', () => {
    const { mmio } = rig();
    expect(mmio.read(MmioReg.QueueNumMax, 4)).toBe(64);
    mmio.write(MmioReg.QueueSel, 1, 4);
    expect(mmio.read(MmioReg.QueueNumMax, 4)).toBe(0);
    expect(mmio.read(MmioReg.QueueReady, 4)).toBe(0);
  });

  it('snapshots queue geometry at QueueReady: later register writes cannot move a live queue', () => {
    const q = new RawQueue();
    const m = q.disk.mmio;
    m.write(MmioReg.QueueDescLow, 0x4000_0000 + 0x3000_00, 4); // ignored: queue is ready
    m.write(MmioReg.QueueNum, 4, 4);
    q.driverOk();
    q.header(q.heap, 8, 0);
    q.setDesc(0, q.heap, 16, 1, 1);
    q.setDesc(1, q.heap + 64, 20, 2 | 1, 2);
    q.setDesc(2, q.heap + 16, 1, 2);
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 21 }]);
  });

  it('reset clears InterruptStatus, QueueReady, features and Status; the device can be brought up again', () => {
    const q = new RawQueue();
    q.driverOk();
    completeStatusOnlyGetId(q);
    const m = q.disk.mmio;
    expect(m.read(MmioReg.InterruptStatus, 4)).not.toBe(0);
    m.write(MmioReg.Status, 0, 4);
    expect(m.read(MmioReg.Status, 4)).toBe(0);
    expect(m.read(MmioReg.InterruptStatus, 4)).toBe(0);
    expect(m.read(MmioReg.QueueReady, 4)).toBe(0);
    // Notifications after reset consume nothing.
    q.offer(0);
    q.notify();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 1 }]);
    expect(q.usedIdx()).toBe(1);
  });

  it('InterruptACK clears only the acknowledged bits', () => {
    const q = new RawQueue();
    q.driverOk();
    completeStatusOnlyGetId(q);
    void q.disk.resize(2 << 20);
    const m = q.disk.mmio;
    expect(m.read(MmioReg.InterruptStatus, 4)).toBe(MmioInterrupt.UsedBuffer | MmioInterrupt.ConfigChange);
    m.write(MmioReg.InterruptAck, MmioInterrupt.UsedBuffer, 4);
    expect(m.read(MmioReg.InterruptStatus, 4)).toBe(MmioInterrupt.ConfigChange);
    m.write(MmioReg.InterruptAck, MmioInterrupt.ConfigChange, 4);
    expect(q.disk.interruptLevel).toBe(0);
  });

  it('config space: reads at widths 1, 2, 4; out-of-range reads 0; only `writeback` is writable', () => {
    const q = new RawQueue({ diskBytes: 3 << 20 });
    q.driverOk();
    const m = q.disk.mmio;
    expect(m.read(MmioReg.Config + BlkConfig.Capacity, 4)).toBe(6144);
    expect(m.read(MmioReg.Config + BlkConfig.Capacity, 2)).toBe(6144);
    expect(m.read(MmioReg.Config + BlkConfig.Capacity + 1, 1)).toBe(6144 >> 8);
    expect(m.read(MmioReg.Config + 60, 4)).toBe(0);
    m.write(MmioReg.Config + BlkConfig.BlkSize, 4096, 4);
    expect(m.read(MmioReg.Config + BlkConfig.BlkSize, 4)).toBe(512);
    m.write(MmioReg.Config + BlkConfig.Writeback, 0, 1);
    expect(m.read(MmioReg.Config + BlkConfig.Writeback, 1)).toBe(0);
    expect(q.disk.device.writeback).toBe(false);
  });

  it('ConfigGeneration changes when the config changes', async () => {
    const q = new RawQueue();
    q.driverOk();
    const before = q.disk.mmio.read(MmioReg.ConfigGeneration, 4);
    await q.disk.resize(2 << 20);
    expect(q.disk.mmio.read(MmioReg.ConfigGeneration, 4)).toBe(before + 1);
  });

  it('QueueNotify with a queue index that does not exist is ignored', () => {
    const q = new RawQueue();
    q.driverOk();
    q.disk.mmio.write(MmioReg.QueueNotify, 5, 4);
    expect(q.disk.transport.stats.notifications).toBe(0);
  });

  it('a queue whose rings lie outside guest memory sets DEVICE_NEEDS_RESET at DRIVER_OK', () => {
    const q = new RawQueue();
    q.disk.mmio.write(MmioReg.Status, 0, 4);
    const m = q.disk.mmio;
    m.write(MmioReg.Status, ACK | DRV, 4);
    m.write(MmioReg.DriverFeaturesSel, 1, 4);
    m.write(MmioReg.DriverFeatures, 1, 4);
    m.write(MmioReg.Status, ACK | DRV | FOK, 4);
    m.write(MmioReg.QueueNum, 16, 4);
    m.write(MmioReg.QueueDescLow, 0x1000, 4); // below RAM
    m.write(MmioReg.QueueReady, 1, 4);
    m.write(MmioReg.Status, ACK | DRV | FOK | DOK, 4);
    expect(m.read(MmioReg.Status, 4) & DeviceStatus.DeviceNeedsReset).toBeTruthy();
    expect(q.disk.transport.active).toBe(false);
  });
});

// ---- hardening rules (notes/hardening-rules.md, R1-R7) ----------------------

const READABLE = [
  MmioReg.MagicValue,
  MmioReg.Version,
  MmioReg.DeviceId,
  MmioReg.VendorId,
  MmioReg.DeviceFeatures,
  MmioReg.QueueNumMax,
  MmioReg.QueueReady,
  MmioReg.InterruptStatus,
  MmioReg.Status,
  MmioReg.ShmLenLow,
  MmioReg.ShmLenHigh,
  MmioReg.ShmBaseLow,
  MmioReg.ShmBaseHigh,
  MmioReg.QueueReset,
  MmioReg.ConfigGeneration,
];

/** Everything a driver can read back, with both selectors at 0 (and DeviceFeatures word 1), then selectors restored to 0. */
function registerSnapshot(m: MmioRegisters): Record<string, number> {
  const out: Record<string, number> = {};
  m.write(MmioReg.QueueSel, 0, 4);
  m.write(MmioReg.DeviceFeaturesSel, 0, 4);
  for (const r of READABLE) out[MmioRegisters.registerName(r)!] = m.read(r, 4);
  m.write(MmioReg.DeviceFeaturesSel, 1, 4);
  out.DeviceFeaturesHi = m.read(MmioReg.DeviceFeatures, 4);
  m.write(MmioReg.DeviceFeaturesSel, 0, 4);
  for (let i = 0; i < 60; i++) out[`config${i}`] = m.read(MmioReg.Config + i, 1);
  return out;
}

const QUEUE_REGS = [
  MmioReg.QueueNum,
  MmioReg.QueueDescLow,
  MmioReg.QueueDescHigh,
  MmioReg.QueueDriverLow,
  MmioReg.QueueDriverHigh,
  MmioReg.QueueDeviceLow,
  MmioReg.QueueDeviceHigh,
  MmioReg.QueueReady,
];

/** A read of sector `sector` through descriptors d..d+2 at `at`; returns its used elements and whether the data is right. */
function serveRead(q: RawQueue, d: number, at: number, sector = 1): { used: Array<{ id: number; len: number }>; dataOk: boolean } {
  const data = new Uint8Array(512).map((_, i) => (i * 7 + sector) & 0xff);
  void q.backend.write(sector * 512, data);
  q.memory.fill(at + 512, 512, 0);
  q.header(at, 0, sector);
  q.memory.writeU8(at + 16, 0xee);
  q.setDesc(d, at, 16, 1, d + 1);
  q.setDesc(d + 1, at + 512, 512, 2 | 1, d + 2);
  q.setDesc(d + 2, at + 16, 1, 2);
  q.offer(d);
  q.notify();
  const used = q.takeUsed();
  const got = q.memory.view(at + 512, 512)!;
  return { used, dataOk: q.memory.readU8(at + 16) === 0 && got.every((b, i) => b === data[i]) };
}

/** A read of sector 0 at the heap through descriptors 0..2, status byte 0xee until written; offered and notified. */
function submitRead(q: RawQueue): void {
  q.header(q.heap, 0, 0);
  q.memory.writeU8(q.heap + 16, 0xee);
  q.setDesc(0, q.heap, 16, 1, 1);
  q.setDesc(1, q.heap + 512, 512, 2 | 1, 2);
  q.setDesc(2, q.heap + 16, 1, 2);
  q.offer(0);
  q.notify();
}

/** A memory backend whose reads park until released (while `hold` is set). */
class ParkedReads extends MemoryBackend {
  parked: Array<() => void> = [];
  hold = true;
  override read(offset: number, dst: Uint8Array): void | Promise<void> {
    if (!this.hold) return super.read(offset, dst);
    return new Promise((resolve) => this.parked.push(() => (super.read(offset, dst), resolve())));
  }
}

/**
 * Let every promise chain a released backend call started run to its end:
 * Node drains the microtask queue before the next macrotask, and the device
 * uses no timers here. Callers then check `inFlight` to see that it did.
 */
function drainMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

describe('hardening rules: the register file (notes/hardening-rules.md)', () => {
  it('R1: QueueSel ≥ queue count selects nothing (§4.2.2): queue registers read 0, writes change nothing', () => {
    const q = new RawQueue();
    const m = q.disk.mmio;
    const before = registerSnapshot(m);
    for (const sel of [1, 7, 8, 31, 32, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_fff0, 0xffff_ffff]) {
      m.write(MmioReg.QueueSel, sel, 4);
      for (const value of [0, 1, 0x1234_5678, 0xffff_ffff]) {
        for (const reg of QUEUE_REGS) m.write(reg, value, 4);
        expect([m.read(MmioReg.QueueNumMax, 4), m.read(MmioReg.QueueReady, 4)], `QueueSel 0x${sel.toString(16)}`).toEqual([0, 0]);
      }
    }
    expect(registerSnapshot(m)).toEqual(before);
    // Queue 0 kept its geometry: it is served at DRIVER_OK.
    q.driverOk();
    expect(serveRead(q, 0, q.heap)).toEqual({ used: [{ id: 0, len: 513 }], dataOk: true });
  });

  it('R1: no register write changes another register; MagicValue, Version, DeviceID, VendorID and DeviceFeatures never change', () => {
    const q = new RawQueue();
    const m = q.disk.mmio;
    const identity = (): number[] => {
      m.write(MmioReg.DeviceFeaturesSel, 0, 4);
      const lo = m.read(MmioReg.DeviceFeatures, 4);
      m.write(MmioReg.DeviceFeaturesSel, 1, 4);
      const hi = m.read(MmioReg.DeviceFeatures, 4);
      m.write(MmioReg.QueueSel, 0, 4);
      return [m.read(MmioReg.MagicValue, 4), m.read(MmioReg.Version, 4), m.read(MmioReg.DeviceId, 4), m.read(MmioReg.VendorId, 4), lo, hi, m.read(MmioReg.QueueNumMax, 4)];
    };
    const expected = identity();
    expect(expected.slice(0, 3)).toEqual([MMIO_MAGIC, 2, 2]);
    for (const sel of [0, 1, 0xffff_fffe, 0xffff_ffff]) {
      for (let offset = 0; offset < MmioReg.Config; offset += 4) {
        for (const value of [0, 1, 0x8000_0000, 0xffff_fffe, 0xffff_ffff]) {
          m.write(MmioReg.QueueSel, sel, 4);
          m.write(MmioReg.DeviceFeaturesSel, sel, 4);
          m.write(offset, value, 4);
          expect(identity(), `write 0x${value.toString(16)} to 0x${offset.toString(16)} with selectors 0x${sel.toString(16)}`).toEqual(expected);
        }
      }
    }
  });

  it('R2: QueueReady reads back the last value written', () => {
    const q = new RawQueue();
    const m = q.disk.mmio;
    expect(m.read(MmioReg.QueueReady, 4)).toBe(1);
    m.write(MmioReg.QueueReady, 0, 4);
    expect(m.read(MmioReg.QueueReady, 4)).toBe(0);
    m.write(MmioReg.QueueReady, 1, 4);
    expect(m.read(MmioReg.QueueReady, 4)).toBe(1);
    q.driverOk();
    m.write(MmioReg.QueueReady, 0, 4);
    expect(m.read(MmioReg.QueueReady, 4)).toBe(0);
  });

  it('R2: QueueReady=0 after DRIVER_OK stops the queue: nothing more is popped or published', () => {
    const q = new RawQueue();
    q.driverOk();
    expect(serveRead(q, 0, q.heap).used).toEqual([{ id: 0, len: 513 }]);
    q.disk.mmio.write(MmioReg.QueueReady, 0, 4);
    const before = q.bytes.slice();
    const { used } = serveRead(q, 3, q.heap + 0x1000);
    expect(used).toEqual([]);
    expect(q.usedIdx()).toBe(1);
    expect(q.memory.readU8(q.heap + 0x1000 + 16)).toBe(0xee); // no status byte
    // Besides what the test itself wrote (the new request), guest memory is as it was.
    expect(q.bytes.subarray(0x3000, 0x4000)).toEqual(before.subarray(0x3000, 0x4000)); // the used ring
    expect(q.status & DeviceStatus.DeviceNeedsReset).toBe(0);
  });

  it('R2: requests in flight on a queue stopped by QueueReady=0 complete without a used entry', async () => {
    const backend = new ParkedReads(1 << 20);
    const q = new RawQueue({ backend });
    q.driverOk();
    submitRead(q);
    expect(backend.parked).toHaveLength(1);
    q.disk.mmio.write(MmioReg.QueueReady, 0, 4);
    backend.parked[0]!();
    await drainMicrotasks();
    expect(q.disk.device.inFlight).toBe(0);
    expect(q.usedIdx()).toBe(0);
    expect(q.memory.readU8(q.heap + 16)).toBe(0xee);
  });

  it('R2: queue registers written while QueueReady=1 are ignored, before and after DRIVER_OK (§4.2.3.2)', () => {
    const q = new RawQueue();
    const m = q.disk.mmio;
    const scribble = (): void => {
      m.write(MmioReg.QueueNum, 4, 4);
      m.write(MmioReg.QueueDescLow, q.heap + 0x8000, 4);
      m.write(MmioReg.QueueDriverLow, q.heap + 0x9000, 4);
      m.write(MmioReg.QueueDeviceLow, q.heap + 0xa000, 4);
      m.write(MmioReg.QueueDescHigh, 1, 4);
    };
    scribble();
    q.driverOk();
    scribble();
    expect(serveRead(q, 0, q.heap).used).toEqual([{ id: 0, len: 513 }]);
    expect(serveRead(q, 5, q.heap + 0x1000)).toEqual({ used: [{ id: 5, len: 513 }], dataOk: true });
  });

  it('R2: a queue enabled only after DRIVER_OK is served with the geometry it has then', () => {
    const q = new RawQueue();
    const m = q.disk.mmio;
    m.write(MmioReg.QueueReady, 0, 4);
    q.driverOk();
    expect(serveRead(q, 0, q.heap).used).toEqual([]);
    m.write(MmioReg.QueueReady, 1, 4);
    // The chain offered before it was enabled is served now or at the next notify.
    q.notify();
    const used = q.takeUsed();
    expect(used).toEqual([{ id: 0, len: 513 }]);
    expect(serveRead(q, 3, q.heap + 0x1000)).toEqual({ used: [{ id: 3, len: 513 }], dataOk: true });
  });

  it('R2: a queue stopped, re-programmed onto new rings and enabled again is served there, from index 0', () => {
    const q = new RawQueue();
    const m = q.disk.mmio;
    q.driverOk();
    expect(serveRead(q, 0, q.heap).used).toEqual([{ id: 0, len: 513 }]);
    m.write(MmioReg.QueueReady, 0, 4);
    // New rings (zeroed, as a driver allocates them), size 8.
    const desc = RAW_RAM_BASE + 0x5000;
    const avail = RAW_RAM_BASE + 0x6000;
    const used = RAW_RAM_BASE + 0x7000;
    q.memory.fill(desc, 0x3000, 0);
    m.write(MmioReg.QueueNum, 8, 4);
    m.write(MmioReg.QueueDescLow, desc, 4);
    m.write(MmioReg.QueueDriverLow, avail, 4);
    m.write(MmioReg.QueueDeviceLow, used, 4);
    m.write(MmioReg.QueueReady, 1, 4);
    const at = q.heap + 0x2000;
    q.header(at, 8, 0);
    q.setDesc(0, at, 16, 1, 1, desc);
    q.setDesc(1, at + 32, 20, 2 | 1, 2, desc);
    q.setDesc(2, at + 16, 1, 2, 0, desc);
    q.memory.writeU16(avail + 4, 0);
    q.memory.writeU16(avail + 2, 1);
    m.write(MmioReg.QueueNotify, 0, 4);
    expect(q.memory.readU16(used + 2)).toBe(1);
    expect([q.memory.readU32(used + 4), q.memory.readU32(used + 8)]).toEqual([0, 21]);
    expect(q.usedIdx()).toBe(1); // the old ring is left alone
  });

  it('R2: enabling a queue with a bad geometry after DRIVER_OK sets DEVICE_NEEDS_RESET and a config interrupt', () => {
    const bad: Array<[string, number, number]> = [
      ['size 0', MmioReg.QueueNum, 0],
      ['size 3', MmioReg.QueueNum, 3],
      ['size above QueueNumMax', MmioReg.QueueNum, 512],
      ['misaligned descriptor table', MmioReg.QueueDescLow, RAW_RAM_BASE + 0x1008],
      ['used ring outside RAM', MmioReg.QueueDeviceLow, RAW_RAM_BASE + RAW_RAM_BYTES - 8],
    ];
    for (const [name, reg, value] of bad) {
      const q = new RawQueue();
      const m = q.disk.mmio;
      m.write(MmioReg.QueueReady, 0, 4);
      q.driverOk();
      m.write(reg, value, 4);
      m.write(MmioReg.QueueReady, 1, 4);
      q.notify();
      expect([name, q.status & DeviceStatus.DeviceNeedsReset, m.read(MmioReg.InterruptStatus, 4) & MmioInterrupt.ConfigChange]).toEqual([
        name,
        DeviceStatus.DeviceNeedsReset,
        MmioInterrupt.ConfigChange,
      ]);
    }
  });

  it('R2: QueueNum 0, not a power of two or above QueueNumMax with QueueReady=1 sets DEVICE_NEEDS_RESET at DRIVER_OK', () => {
    for (const size of [0, 3, 12, 512, 0xffff_ffff]) {
      const q = new RawQueue();
      const m = q.disk.mmio;
      m.write(MmioReg.QueueReady, 0, 4);
      m.write(MmioReg.QueueNum, size, 4);
      m.write(MmioReg.QueueReady, 1, 4);
      offerGetId(q);
      q.driverOk();
      q.notify();
      expect([size, q.status & DeviceStatus.DeviceNeedsReset, m.read(MmioReg.InterruptStatus, 4) & MmioInterrupt.ConfigChange, q.usedIdx()]).toEqual([
        size,
        DeviceStatus.DeviceNeedsReset,
        MmioInterrupt.ConfigChange,
        0,
      ]);
    }
  });

  it('R3: an idle reset is immediate and clears InterruptStatus, QueueReady, features, selectors and the config (writeback)', () => {
    const q = new RawQueue();
    const m = q.disk.mmio;
    q.driverOk();
    completeStatusOnlyGetId(q);
    m.write(MmioReg.Config + BlkConfig.Writeback, 0, 1);
    expect(m.read(MmioReg.Config + BlkConfig.Writeback, 1)).toBe(0);
    m.write(MmioReg.DeviceFeaturesSel, 1, 4);
    m.write(MmioReg.QueueSel, 1, 4);
    expect(m.read(MmioReg.InterruptStatus, 4)).not.toBe(0);
    m.write(MmioReg.Status, 0, 4);
    expect(m.read(MmioReg.Status, 4)).toBe(0);
    expect(m.read(MmioReg.InterruptStatus, 4)).toBe(0);
    // Selectors back at 0: queue 0's QueueNumMax and feature word 0 show.
    expect(m.read(MmioReg.QueueNumMax, 4)).toBe(q.disk.device.queueMaxSize);
    expect(m.read(MmioReg.DeviceFeatures, 4)).toBe(Number(q.disk.device.deviceFeatures & 0xffff_ffffn));
    expect(m.read(MmioReg.QueueReady, 4)).toBe(0);
    expect(m.read(MmioReg.Config + BlkConfig.Writeback, 1)).toBe(1);
    // Features forgotten: FEATURES_OK without writing any is refused (no VERSION_1).
    m.write(MmioReg.Status, ACK | DRV, 4);
    m.write(MmioReg.Status, ACK | DRV | FOK, 4);
    expect(m.read(MmioReg.Status, 4) & FOK).toBe(0);
  });

  it('R3: a busy reset: Status keeps its old value and ignores other writes until the work is dropped; then 0, nothing written after, and a new initialisation is served', async () => {
    const backend = new ParkedReads(1 << 20);
    const q = new RawQueue({ backend });
    const m = q.disk.mmio;
    q.driverOk();
    submitRead(q);
    const old = q.status;
    m.write(MmioReg.Status, 0, 4);
    expect(q.status).toBe(old);
    m.write(MmioReg.Status, ACK, 4);
    m.write(MmioReg.Status, ACK | DRV | FOK | DOK, 4);
    expect(q.status).toBe(old);
    backend.parked[0]!();
    await drainMicrotasks();
    expect(q.disk.device.inFlight).toBe(0);
    expect(q.status).toBe(0);
    expect(m.read(MmioReg.InterruptStatus, 4)).toBe(0);
    expect(m.read(MmioReg.QueueReady, 4)).toBe(0);
    expect(q.usedIdx()).toBe(0);
    expect(q.memory.readU8(q.heap + 16)).toBe(0xee);
    const ram = q.bytes.slice();
    q.notify();
    expect(firstChange(ram, q.bytes)).toBe(-1);
    backend.hold = false;
    q.reinit();
    q.driverOk();
    expect(serveRead(q, 0, q.heap + 0x1000)).toEqual({ used: [{ id: 0, len: 513 }], dataOk: true });
  });

  it('R4: bits above 7 of a Status write are ignored: 0x100 changes nothing and does not reset', () => {
    const q = new RawQueue();
    q.driverOk();
    completeStatusOnlyGetId(q);
    expect(q.takeUsed()).toEqual([{ id: 0, len: 1 }]);
    const before = registerSnapshot(q.disk.mmio);
    q.disk.mmio.write(MmioReg.Status, 0x100, 4);
    expect(registerSnapshot(q.disk.mmio)).toEqual(before);
    expect(q.status).toBe(ACK | DRV | FOK | DOK);
    expect(serveRead(q, 3, q.heap + 0x1000)).toEqual({ used: [{ id: 3, len: 513 }], dataOk: true });
  });

  it('R4: status bits are only added until reset (§2.1.1); the driver cannot set DEVICE_NEEDS_RESET', () => {
    const { mmio: m } = rig();
    m.write(MmioReg.Status, ACK, 4);
    m.write(MmioReg.Status, ACK | DRV, 4);
    m.write(MmioReg.Status, ACK, 4);
    expect(m.read(MmioReg.Status, 4)).toBe(ACK | DRV);
    m.write(MmioReg.Status, DRV, 4);
    expect(m.read(MmioReg.Status, 4)).toBe(ACK | DRV);
    m.write(MmioReg.Status, ACK | DRV | DeviceStatus.DeviceNeedsReset, 4);
    expect(m.read(MmioReg.Status, 4)).toBe(ACK | DRV);
    m.write(MmioReg.Status, 0xff & ~DeviceStatus.DeviceNeedsReset & ~DOK & ~FOK, 4);
    expect(m.read(MmioReg.Status, 4) & DeviceStatus.DeviceNeedsReset).toBe(0);
  });

  it('R4: FEATURES_OK stays clear when the features are not a subset of the offer or lack VERSION_1 (§3.1.1, §6.1)', () => {
    const q = new RawQueue({ features: (1n << 32n) | (1n << 12n) });
    expect(q.status & FOK).toBe(0);
    const q2 = new RawQueue({ features: new RawQueue().offered() & ~(1n << 32n) });
    expect(q2.status & FOK).toBe(0);
  });

  it('R4: DRIVER_OK without an accepted FEATURES_OK sets DEVICE_NEEDS_RESET and a config interrupt, and serves nothing', () => {
    // Never asked for FEATURES_OK, and asked but refused.
    for (const features of [null, (1n << 32n) | (1n << 12n)]) {
      const q = new RawQueue();
      const m = q.disk.mmio;
      m.write(MmioReg.Status, 0, 4);
      m.write(MmioReg.Status, ACK | DRV, 4);
      if (features !== null) {
        m.write(MmioReg.DriverFeaturesSel, 1, 4);
        m.write(MmioReg.DriverFeatures, Number(features >> 32n), 4);
        m.write(MmioReg.DriverFeaturesSel, 0, 4);
        m.write(MmioReg.DriverFeatures, Number(features & 0xffff_ffffn), 4);
        m.write(MmioReg.Status, ACK | DRV | FOK, 4);
        expect(m.read(MmioReg.Status, 4) & FOK).toBe(0);
      }
      q.setUpQueue();
      offerGetId(q);
      m.write(MmioReg.Status, ACK | DRV | DOK, 4);
      q.notify();
      expect(q.status & DeviceStatus.DeviceNeedsReset).toBe(DeviceStatus.DeviceNeedsReset);
      expect(m.read(MmioReg.InterruptStatus, 4) & MmioInterrupt.ConfigChange).toBe(MmioInterrupt.ConfigChange);
      expect(q.usedIdx()).toBe(0);
    }
  });

  it('R4: DriverFeatures writes after FEATURES_OK are ignored', () => {
    const q = new RawQueue({ features: (1n << 32n) | (1n << 29n) }); // VERSION_1 + EVENT_IDX
    const m = q.disk.mmio;
    m.write(MmioReg.DriverFeaturesSel, 0, 4);
    m.write(MmioReg.DriverFeatures, 0, 4);
    m.write(MmioReg.DriverFeaturesSel, 1, 4);
    m.write(MmioReg.DriverFeatures, 0xffff_ffff, 4);
    q.driverOk();
    expect(q.status & DeviceStatus.DeviceNeedsReset).toBe(0);
    // EVENT_IDX stayed on: the device writes avail_event.
    q.memory.writeU16(q.used + 4 + 8 * q.size, 0xabcd);
    expect(serveRead(q, 0, q.heap).used).toEqual([{ id: 0, len: 513 }]);
    expect(q.memory.readU16(q.used + 4 + 8 * q.size)).toBe(1);
  });

  it('R5: config writes before FEATURES_OK are ignored; after FEATURES_OK and before DRIVER_OK they are honoured (§3.1.1 step 7)', () => {
    const q = new RawQueue();
    const m = q.disk.mmio;
    const wb = MmioReg.Config + BlkConfig.Writeback;
    m.write(MmioReg.Status, 0, 4);
    m.write(MmioReg.Status, ACK | DRV, 4);
    m.write(MmioReg.DriverFeaturesSel, 0, 4);
    m.write(MmioReg.DriverFeatures, Number(q.offered() & 0xffff_ffffn), 4);
    m.write(MmioReg.DriverFeaturesSel, 1, 4);
    m.write(MmioReg.DriverFeatures, Number(q.offered() >> 32n), 4);
    m.write(wb, 0, 1);
    expect(m.read(wb, 1)).toBe(1);
    m.write(MmioReg.Status, ACK | DRV | FOK, 4);
    m.write(wb, 0, 1);
    expect(m.read(wb, 1)).toBe(0);
    q.setUpQueue();
    q.driverOk();
    expect(m.read(wb, 1)).toBe(0);
    expect(q.disk.device.writeback).toBe(false);
  });

  it('R5: only `writeback` is writable, and only with CONFIG_WCE; every other byte reads back the device value', () => {
    const withWce = new RawQueue();
    withWce.driverOk();
    const noWce = new RawQueue({ features: withWce.offered() & ~(1n << BlkConfigWce) });
    noWce.driverOk();
    for (const q of [withWce, noWce]) {
      const m = q.disk.mmio;
      const before = registerSnapshot(m);
      for (let offset = 0; offset < 60; offset++) {
        if (offset === BlkConfig.Writeback) continue;
        for (const width of [1, 2, 4]) if (offset % width === 0) m.write(MmioReg.Config + offset, 0xa5a5_a5a5, width);
      }
      expect(registerSnapshot(m)).toEqual(before);
    }
    noWce.disk.mmio.write(MmioReg.Config + BlkConfig.Writeback, 0, 1);
    expect(noWce.disk.mmio.read(MmioReg.Config + BlkConfig.Writeback, 1)).toBe(1);
    withWce.disk.mmio.write(MmioReg.Config + BlkConfig.Writeback, 0, 1);
    expect(withWce.disk.mmio.read(MmioReg.Config + BlkConfig.Writeback, 1)).toBe(0);
  });

  it('R6: registers need width 4 and 4-byte alignment; config widths 1, 2, 4 aligned inside it; anything else reads 0, writes nothing, throws nothing', () => {
    const q = new RawQueue();
    const m = q.disk.mmio;
    const before = registerSnapshot(m);
    const ram = q.bytes.slice();
    const reads: Array<[number, number]> = [
      [MmioReg.MagicValue, 1],
      [MmioReg.MagicValue, 2],
      [MmioReg.MagicValue, 8],
      [MmioReg.MagicValue + 1, 4],
      [MmioReg.MagicValue + 2, 4],
      [MmioReg.DeviceId, 3],
      [MmioReg.Config + 1, 2],
      [MmioReg.Config + 2, 4],
      [MmioReg.Config + 58, 4],
      [MmioReg.Config + 59, 2],
      [MmioReg.Config + 60, 1],
      [MmioReg.Config, 8],
      [MmioReg.Config, 3],
      [MmioReg.Config, 0],
      [0x200, 4],
      [0x1fc, 4],
      [0x1000, 4],
      [-4, 4],
      [-0x100, 1],
      [0.5, 4],
      [MmioReg.Config + 0.5, 1],
      [Number.NaN, 4],
      [Number.POSITIVE_INFINITY, 4],
      [2 ** 53, 4],
      [MmioReg.Config, Number.NaN],
      [MmioReg.Status, Number.NaN],
    ];
    for (const [offset, width] of reads) {
      expect(() => m.read(offset, width)).not.toThrow();
      expect(m.read(offset, width), `read(${offset}, ${width})`).toBe(0);
    }
    for (const [offset, width] of [...reads, [MmioReg.Status, 1], [MmioReg.Status, 2], [MmioReg.QueueSel + 1, 4], [MmioReg.Config + BlkConfig.Writeback - 1, 2], [MmioReg.Config + BlkConfig.Writeback - 2, 4]] as Array<[number, number]>) {
      for (const value of [0, 1, 0xff, 0xffff_ffff, -1, 1.5, Number.NaN]) expect(() => m.write(offset, value, width)).not.toThrow();
    }
    expect(registerSnapshot(m)).toEqual(before);
    expect(firstChange(ram, q.bytes)).toBe(-1);
  });

  it('R7: notifying a queue that does not exist, is not ready, or before DRIVER_OK is ignored and harmless', () => {
    const q = new RawQueue();
    const m = q.disk.mmio;
    offerGetId(q);
    const ram = q.bytes.slice();
    // Before DRIVER_OK.
    for (const value of [0, 1, 7, 8, 0xffff_ffff, -1]) m.write(MmioReg.QueueNotify, value, 4);
    expect(firstChange(ram, q.bytes)).toBe(-1);
    expect(q.status & DeviceStatus.DeviceNeedsReset).toBe(0);
    // After DRIVER_OK, queues that do not exist.
    q.driverOk();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 1 }]);
    const ram2 = q.bytes.slice();
    const irq = m.read(MmioReg.InterruptStatus, 4);
    for (const value of [1, 7, 8, 0x8000_0000, 0xffff_ffff, -1]) m.write(MmioReg.QueueNotify, value, 4);
    expect(firstChange(ram2, q.bytes)).toBe(-1);
    expect(m.read(MmioReg.InterruptStatus, 4)).toBe(irq);
    // A stopped queue: a chain offered on it is not touched.
    m.write(MmioReg.QueueReady, 0, 4);
    offerGetId(q, 3);
    const ram3 = q.bytes.slice();
    for (let i = 0; i < 5; i++) m.write(MmioReg.QueueNotify, 0, 4);
    expect(firstChange(ram3, q.bytes)).toBe(-1);
    expect(q.status & DeviceStatus.DeviceNeedsReset).toBe(0);
  });
});

const BlkConfigWce = 11n;

/** The guest address of the first byte that differs (-1: none); toEqual on 4 MiB arrays is slow to report. */
function firstChange(before: Uint8Array, after: Uint8Array): number {
  for (let i = 0; i < before.length; i++) if (before[i] !== after[i]) return RAW_RAM_BASE + i;
  return -1;
}


/** A status-only GET_ID through descriptors d, d+1 (offered, not notified). */
function offerGetId(q: RawQueue, d = 0): void {
  q.header(q.heap + 0x100 * d, 8, 0);
  q.setDesc(d, q.heap + 0x100 * d, 16, 1, d + 1);
  q.setDesc(d + 1, q.heap + 0x100 * d + 16, 1, 2);
  q.offer(d);
}
