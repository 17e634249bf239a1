import { describe, expect, it } from 'vitest';
import { MemoryBackend } from '../src/backends/memory.ts';
import { BlkConfig } from '../src/block/constants.ts';
import { VirtioBlkDevice } from '../src/block/device.ts';
import { DeviceStatus } from '../src/virtio/device.ts';
import { GuestMemory } from '../src/virtio/memory.ts';
import { MMIO_MAGIC, MmioDevice, MmioInterrupt, MmioReg, MmioRegisters, createMmioState } from '../src/virtio/mmio.ts';
import { RawQueue } from './support/raw-queue.ts';

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
