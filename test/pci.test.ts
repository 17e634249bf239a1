// The virtio-pci function (src/virtio/pci) in Node over the same-thread host:
// configuration space as a PCI device model must keep it (IDs, read-only
// fields, BAR sizing, the capability list, the PCI_CFG window), BAR0's
// decoding onto the transport core (natural widths, selectors beyond the
// queues, queue_enable), the INTx line, and the project's Linux-style driver
// over PciTransport: negotiation, block I/O, reset, resize.

import { describe, expect, it } from 'vitest';
import { MemoryBackend } from '../src/backends/memory.ts';
import { BlkConfig, BlkFeature, BlkRequestType, BlkStatus } from '../src/block/constants.ts';
import { DiskModel, runWorkload, verifyAgainstModel, workloadBuffers } from '../src/demo/workload.ts';
import { VirtioBlkDriver } from '../src/driver/driver.ts';
import { PciTransport } from '../src/driver/pci-transport.ts';
import { createDisk } from '../src/host/browser/disk.ts';
import { createSameThreadDisk, type SameThreadDisk, type SameThreadDiskOptions } from '../src/host/browser/same-thread.ts';
import { DeviceStatus, VirtioFeature } from '../src/virtio/device.ts';
import { GuestMemory } from '../src/virtio/memory.ts';
import { VirtioPciFunction } from '../src/virtio/pci/function.ts';
import {
  BarRegion,
  CapAt,
  CapField,
  CommonCfg,
  NOTIFY_OFF_MULTIPLIER,
  PCI_CONFIG_SPACE_BYTES,
  PciCommand,
  PciHeader,
  PciStatus,
  VirtioPciCap,
} from '../src/virtio/pci/layout.ts';
import { pattern } from './support/rig.ts';

const RAM_BASE = 0x4000_0000;
const MiB = 1 << 20;
const { Acknowledge: ACK, Driver: DRV, FeaturesOk: FOK, DriverOk: DOK } = DeviceStatus;

function pciDisk(options: Partial<SameThreadDiskOptions> = {}): { disk: SameThreadDisk; pci: VirtioPciFunction; memory: GuestMemory } {
  const memory = new GuestMemory([{ guestAddress: RAM_BASE, source: new ArrayBuffer(16 * MiB) }]);
  const disk = createSameThreadDisk({ memory, backend: new MemoryBackend(4 * MiB), transport: 'pci', ...options });
  return { disk, pci: disk.pci!, memory };
}

async function pciDriver(disk: SameThreadDisk, memory: GuestMemory, refuseFeatures?: bigint): Promise<VirtioBlkDriver> {
  return VirtioBlkDriver.init({
    transport: new PciTransport(disk.pci!),
    memory,
    arena: { addr: RAM_BASE + MiB, len: 8 * MiB },
    waitForInterrupt: () => disk.waitForInterrupt(),
    refuseFeatures,
  });
}

const common = (pci: VirtioPciFunction, field: number, size: number): number => pci.readBar(BarRegion.CommonCfg + field, size);
const setCommon = (pci: VirtioPciFunction, field: number, size: number, value: number): void =>
  pci.writeBar(BarRegion.CommonCfg + field, size, value);

describe('virtio-pci configuration space (§4.1.2, §4.1.4)', () => {
  it('identifies a modern virtio-blk function: 0x1AF4:0x1042 revision 1, class 0x018000, INTA, capability list', () => {
    const { pci } = pciDisk();
    expect(pci.readConfig(PciHeader.VendorId, 2)).toBe(0x1af4);
    expect(pci.readConfig(PciHeader.DeviceId, 2)).toBe(0x1042);
    expect(pci.readConfig(PciHeader.Revision, 1)).toBe(1);
    expect(pci.readConfig(PciHeader.Revision, 4) >>> 8).toBe(0x018000);
    expect(pci.readConfig(PciHeader.HeaderType, 1)).toBe(0);
    expect(pci.readConfig(PciHeader.SubsystemId, 2)).toBeGreaterThanOrEqual(0x40);
    expect(pci.readConfig(PciHeader.InterruptPin, 1)).toBe(1);
    expect(pci.readConfig(PciHeader.Status, 2) & PciStatus.CapabilitiesList).not.toBe(0);
    expect(pci.readConfig(PciHeader.CapabilitiesPointer, 1)).toBe(CapAt.CommonCfg);
    // The image an emulator that keeps config space itself takes is what the function reads.
    const image = pci.configSpaceImage();
    expect(image.length).toBe(PCI_CONFIG_SPACE_BYTES);
    for (let at = 0; at < PCI_CONFIG_SPACE_BYTES; at++) expect(image[at], `byte 0x${at.toString(16)}`).toBe(pci.readConfig(at, 1));
  });

  it('lists the common, notify, ISR, device and PCI_CFG capabilities, all in BAR0', () => {
    const { pci } = pciDisk();
    const found: Array<{ type: number; offset: number; length: number }> = [];
    for (let at = pci.readConfig(PciHeader.CapabilitiesPointer, 1); at !== 0; at = pci.readConfig(at + CapField.Next, 1)) {
      expect(pci.readConfig(at + CapField.Vendor, 1)).toBe(0x09);
      expect(pci.readConfig(at + CapField.Bar, 1)).toBe(0);
      found.push({ type: pci.readConfig(at + 3, 1), offset: pci.readConfig(at + 8, 4), length: pci.readConfig(at + 12, 4) });
      expect(found.length).toBeLessThan(10);
    }
    expect(found.map((c) => c.type)).toEqual([1, 2, 3, 4, 5]);
    for (const c of found.slice(0, 4)) expect(c.offset + c.length).toBeLessThanOrEqual(pci.barSize);
    expect(pci.readConfig(CapAt.NotifyCfg + CapField.NotifyOffMultiplier, 4)).toBe(NOTIFY_OFF_MULTIPLIER);
  });

  it('sizes BAR0 by the all-ones write, for the default size and for v86’s 128 KiB', () => {
    for (const barSize of [undefined, 0x20000]) {
      const { pci } = pciDisk({ pci: { barSize } });
      const size = barSize ?? 0x4000;
      expect(pci.barSize).toBe(size);
      expect(pci.readConfig(PciHeader.Bar0, 4)).toBe(0);
      pci.writeConfig(PciHeader.Bar0, 4, 0xffff_ffff);
      expect(pci.readConfig(PciHeader.Bar0, 4)).toBe((~(size - 1) & ~0xf) >>> 0);
      pci.writeConfig(PciHeader.Bar0, 4, 0xfe00_0000 | 0xf);
      expect(pci.readConfig(PciHeader.Bar0, 4)).toBe(0xfe00_0000);
      expect(pci.barAddress).toBe(0xfe00_0000);
      // BARs 1–5 and the expansion ROM are not implemented: they size to 0.
      for (let bar = 0x14; bar <= PciHeader.Bar5; bar += 4) {
        pci.writeConfig(bar, 4, 0xffff_ffff);
        expect(pci.readConfig(bar, 4)).toBe(0);
      }
    }
    expect(() => pciDisk({ pci: { barSize: 0x3000 } })).toThrow(/power of two/);
    expect(() => pciDisk({ pci: { barSize: 0x2000 } })).toThrow(/power of two/);
  });

  it('keeps read-only fields read-only: all ones written over every byte changes only the writable bits', () => {
    const { pci } = pciDisk();
    const before = pci.configSpaceImage();
    for (let at = 0; at < PCI_CONFIG_SPACE_BYTES; at += 4) pci.writeConfig(at, 4, 0xffff_ffff);
    const writable = new Map<number, number>([
      [PciHeader.Command, PciCommand.MemorySpace | PciCommand.BusMaster],
      [PciHeader.Command + 1, PciCommand.InterruptDisable >> 8],
      [PciHeader.CacheLineSize, 0xff],
      [PciHeader.InterruptLine, 0xff],
    ]);
    for (let i = 0; i < 4; i++) writable.set(PciHeader.Bar0 + i, i === 0 ? 0 : i === 1 ? 0xc0 : 0xff);
    const windowFields = [CapAt.PciCfg + CapField.Bar, ...[8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19].map((i) => CapAt.PciCfg + i)];
    for (let at = 0; at < PCI_CONFIG_SPACE_BYTES; at++) {
      if (windowFields.includes(at)) continue;
      const mask = writable.get(at) ?? 0;
      expect(pci.readConfig(at, 1), `byte 0x${at.toString(16)}`).toBe((before[at]! & ~mask) | (0xff & mask));
    }
  });

  it('reads 0 and writes nothing for misaligned, oversized or out-of-range accesses', () => {
    const { pci } = pciDisk();
    expect(pci.readConfig(PciHeader.VendorId + 1, 2)).toBe(0);
    expect(pci.readConfig(PciHeader.VendorId, 8)).toBe(0);
    expect(pci.readConfig(PCI_CONFIG_SPACE_BYTES, 1)).toBe(0);
    expect(pci.readConfig(-4, 4)).toBe(0);
    expect(pci.readConfig(0.5, 1)).toBe(0);
    pci.writeConfig(PciHeader.Command + 1, 2, 0xffff);
    expect(pci.readConfig(PciHeader.Command, 2)).toBe(0);
  });

  it('reaches BAR0 through the PCI_CFG window (§4.1.4.9)', () => {
    const { pci } = pciDisk();
    const window = CapAt.PciCfg;
    pci.writeConfig(window + CapField.Bar, 1, 0);
    pci.writeConfig(window + CapField.Offset, 4, BarRegion.CommonCfg + CommonCfg.NumQueues);
    pci.writeConfig(window + CapField.RegionLength, 4, 2);
    expect(pci.readConfig(window + CapField.PciCfgData, 4)).toBe(1);
    pci.writeConfig(window + CapField.Offset, 4, BarRegion.CommonCfg + CommonCfg.DeviceStatus);
    pci.writeConfig(window + CapField.RegionLength, 4, 1);
    pci.writeConfig(window + CapField.PciCfgData, 4, ACK);
    expect(common(pci, CommonCfg.DeviceStatus, 1)).toBe(ACK);
    // A window at a BAR other than 0, or of a bad length, reads 0 and writes nothing.
    pci.writeConfig(window + CapField.Bar, 1, 1);
    expect(pci.readConfig(window + CapField.PciCfgData, 4)).toBe(0);
    pci.writeConfig(window + CapField.PciCfgData, 4, 0);
    expect(common(pci, CommonCfg.DeviceStatus, 1)).toBe(ACK);
    pci.writeConfig(window + CapField.Bar, 1, 0);
    pci.writeConfig(window + CapField.RegionLength, 4, 3);
    pci.writeConfig(window + CapField.PciCfgData, 4, 0);
    expect(common(pci, CommonCfg.DeviceStatus, 1)).toBe(ACK);
  });
});

describe('virtio-pci BAR0 over the transport core (§4.1.4.3–§4.1.4.8)', () => {
  it('decodes common config at natural widths only; other widths read 0 and write nothing', () => {
    const { pci } = pciDisk();
    expect(common(pci, CommonCfg.NumQueues, 2)).toBe(1);
    expect(common(pci, CommonCfg.NumQueues, 4)).toBe(0);
    expect(common(pci, CommonCfg.NumQueues, 1)).toBe(0);
    expect(common(pci, CommonCfg.ConfigMsixVector, 2)).toBe(0xffff);
    setCommon(pci, CommonCfg.DeviceStatus, 4, ACK);
    expect(common(pci, CommonCfg.DeviceStatus, 1)).toBe(0);
    setCommon(pci, CommonCfg.DeviceStatus, 1, ACK);
    expect(common(pci, CommonCfg.DeviceStatus, 1)).toBe(ACK);
    setCommon(pci, CommonCfg.QueueSelect, 1, 5);
    expect(common(pci, CommonCfg.QueueSelect, 2)).toBe(0);
    // Past the common config, the ISR byte, the device config and the notify slots: nothing.
    expect(pci.readBar(BarRegion.CommonCfg + 0x38, 4)).toBe(0);
    expect(pci.readBar(pci.barSize - 4, 4)).toBe(0);
    expect(pci.readBar(pci.barSize, 1)).toBe(0);
    expect(pci.readBar(BarRegion.IsrCfg, 4)).toBe(0);
  });

  it('reads features through the selector; driver features read back and freeze at FEATURES_OK', () => {
    const { pci, disk } = pciDisk();
    setCommon(pci, CommonCfg.DeviceFeatureSelect, 4, 1);
    expect(common(pci, CommonCfg.DeviceFeatureSelect, 4)).toBe(1);
    const hi = common(pci, CommonCfg.DeviceFeature, 4);
    setCommon(pci, CommonCfg.DeviceFeatureSelect, 4, 0);
    const lo = common(pci, CommonCfg.DeviceFeature, 4);
    expect(BigInt(lo) | (BigInt(hi) << 32n)).toBe(disk.device.deviceFeatures);
    setCommon(pci, CommonCfg.DeviceFeatureSelect, 4, 2);
    expect(common(pci, CommonCfg.DeviceFeature, 4)).toBe(0);
    setCommon(pci, CommonCfg.DeviceStatus, 1, ACK | DRV);
    setCommon(pci, CommonCfg.DriverFeatureSelect, 4, 1);
    setCommon(pci, CommonCfg.DriverFeature, 4, 1);
    expect(common(pci, CommonCfg.DriverFeature, 4)).toBe(1);
    setCommon(pci, CommonCfg.DeviceStatus, 1, ACK | DRV | FOK);
    expect(common(pci, CommonCfg.DeviceStatus, 1) & FOK).toBe(FOK);
    setCommon(pci, CommonCfg.DriverFeature, 4, 0);
    expect(common(pci, CommonCfg.DriverFeature, 4)).toBe(1);
  });

  it('queue_select beyond the queues: queue_size reads 0 and nothing is writable (§4.1.4.3)', () => {
    const { pci } = pciDisk({ queueSize: 64 });
    expect(common(pci, CommonCfg.QueueSize, 2)).toBe(64);
    for (const sel of [1, 7, 8, 0xffff]) {
      setCommon(pci, CommonCfg.QueueSelect, 2, sel);
      expect(common(pci, CommonCfg.QueueSelect, 2)).toBe(sel);
      expect(common(pci, CommonCfg.QueueSize, 2)).toBe(0);
      setCommon(pci, CommonCfg.QueueSize, 2, 16);
      setCommon(pci, CommonCfg.QueueDescLo, 4, 0x1000);
      setCommon(pci, CommonCfg.QueueEnable, 2, 1);
      expect(common(pci, CommonCfg.QueueSize, 2)).toBe(0);
      expect(common(pci, CommonCfg.QueueDescLo, 4)).toBe(0);
      expect(common(pci, CommonCfg.QueueEnable, 2)).toBe(0);
      expect(common(pci, CommonCfg.QueueNotifyOff, 2)).toBe(0);
    }
    setCommon(pci, CommonCfg.QueueSelect, 2, 0);
    expect(common(pci, CommonCfg.QueueSize, 2)).toBe(64);
    expect(common(pci, CommonCfg.QueueDescLo, 4)).toBe(0);
  });

  it('queue_enable takes only 1, and the geometry is fixed once enabled', () => {
    const { pci } = pciDisk({ queueSize: 64 });
    setCommon(pci, CommonCfg.QueueSize, 2, 32);
    setCommon(pci, CommonCfg.QueueDescLo, 4, RAM_BASE);
    setCommon(pci, CommonCfg.QueueDescHi, 4, 0);
    setCommon(pci, CommonCfg.QueueEnable, 2, 2);
    expect(common(pci, CommonCfg.QueueEnable, 2)).toBe(0);
    setCommon(pci, CommonCfg.QueueEnable, 2, 1);
    expect(common(pci, CommonCfg.QueueEnable, 2)).toBe(1);
    setCommon(pci, CommonCfg.QueueEnable, 2, 0);
    expect(common(pci, CommonCfg.QueueEnable, 2)).toBe(1);
    setCommon(pci, CommonCfg.QueueSize, 2, 16);
    setCommon(pci, CommonCfg.QueueDescLo, 4, RAM_BASE + 0x1000);
    expect(common(pci, CommonCfg.QueueSize, 2)).toBe(32);
    expect(common(pci, CommonCfg.QueueDescLo, 4)).toBe(RAM_BASE);
  });

  it('device config reads at any width inside a field, the 64-bit capacity as two halves', () => {
    const { pci } = pciDisk();
    const sectors = (4 * MiB) / 512;
    expect(pci.readBar(BarRegion.DeviceCfg + BlkConfig.Capacity, 4)).toBe(sectors);
    expect(pci.readBar(BarRegion.DeviceCfg + BlkConfig.Capacity + 4, 4)).toBe(0);
    expect(pci.readBar(BarRegion.DeviceCfg + BlkConfig.Capacity, 2)).toBe(sectors & 0xffff);
    expect(pci.readBar(BarRegion.DeviceCfg + BlkConfig.Capacity + 1, 1)).toBe((sectors >> 8) & 0xff);
    expect(pci.readBar(BarRegion.DeviceCfg + BlkConfig.Capacity + 1, 2)).toBe(0);
    expect(pci.readBar(BarRegion.DeviceCfg + 0xfc, 4)).toBe(0);
  });
});

describe('virtio-pci INTx (§4.1.4.5)', () => {
  it('raises the line with the ISR, lowers it on the ISR read, and masks it with InterruptDisable', async () => {
    const { disk, pci, memory } = pciDisk();
    const levels: boolean[] = [];
    pci.onInterruptLevel = (asserted) => levels.push(asserted);
    const driver = await pciDriver(disk, memory);
    // Linux's own setup (and ours) makes no request yet: nothing raised.
    expect(levels).toEqual([]);
    const id = driver.submit({ type: BlkRequestType.Flush });
    driver.kick();
    await disk.waitForInterrupt();
    expect(levels).toEqual([true]);
    expect(pci.interruptLevel).toBe(true);
    expect(pci.readConfig(PciHeader.Status, 2) & PciStatus.Interrupt).toBe(PciStatus.Interrupt);
    expect(pci.readBar(BarRegion.IsrCfg, 1)).toBe(1);
    expect(levels).toEqual([true, false]);
    expect(pci.readBar(BarRegion.IsrCfg, 1)).toBe(0);
    expect(pci.readConfig(PciHeader.Status, 2) & PciStatus.Interrupt).toBe(0);
    expect(driver.reap().map((c) => c.id)).toEqual([id]);
    // Disabled INTx: the ISR still fills, the line stays low until it is enabled again.
    const command = pci.readConfig(PciHeader.Command, 2);
    pci.writeConfig(PciHeader.Command, 2, command | PciCommand.InterruptDisable);
    driver.submit({ type: BlkRequestType.Flush });
    driver.kick();
    await disk.waitForInterrupt();
    expect(pci.interruptLevel).toBe(false);
    expect(pci.readConfig(PciHeader.Status, 2) & PciStatus.Interrupt).toBe(PciStatus.Interrupt);
    expect(levels).toEqual([true, false]);
    pci.writeConfig(PciHeader.Command, 2, command);
    expect(levels).toEqual([true, false, true]);
    driver.ackInterrupt();
    expect(levels).toEqual([true, false, true, false]);
    await disk.close();
  });

  it('a reset lowers the line with the ISR it clears', async () => {
    const { disk, pci, memory } = pciDisk();
    const levels: boolean[] = [];
    pci.onInterruptLevel = (asserted) => levels.push(asserted);
    const driver = await pciDriver(disk, memory);
    driver.submit({ type: BlkRequestType.Flush });
    driver.kick();
    await disk.waitForInterrupt();
    expect(levels).toEqual([true]);
    await driver.transport.reset();
    expect(levels).toEqual([true, false]);
    expect(pci.readBar(BarRegion.IsrCfg, 1)).toBe(0);
    await disk.close();
  });

  it('scheduleDoorbell defers the device run out of the register write, coalescing doorbells', async () => {
    const queued: Array<() => void> = [];
    const { disk, pci, memory } = pciDisk({ scheduleDoorbell: (run) => queued.push(run) });
    const levels: boolean[] = [];
    pci.onInterruptLevel = (asserted) => levels.push(asserted);
    const driver = await pciDriver(disk, memory);
    // FEATURES_OK and DRIVER_OK rang inside the writes; the device has not run yet.
    expect(disk.transport.active).toBe(false);
    expect(queued.length).toBe(1);
    queued.shift()!();
    expect(disk.transport.active).toBe(true);
    driver.submit({ type: BlkRequestType.Flush });
    driver.kick();
    driver.kick();
    expect(queued.length).toBe(1);
    expect(levels).toEqual([]);
    expect(disk.stats.flushes).toBe(0);
    queued.shift()!();
    await disk.waitForInterrupt();
    expect(levels).toEqual([true]);
    expect(disk.stats.flushes).toBe(1);
    await disk.close();
  });
});

describe('the Linux-style driver over virtio-pci (PciTransport)', () => {
  it('probes by the capability list, sizes and enables BAR0, and reads and writes the disk', async () => {
    const { disk, pci, memory } = pciDisk({ serial: 'pci-disk' });
    const driver = await pciDriver(disk, memory);
    const t = driver.transport as PciTransport;
    expect(t.layout).toMatchObject({
      common: { offset: BarRegion.CommonCfg },
      notify: { offset: BarRegion.NotifyCfg },
      isr: { offset: BarRegion.IsrCfg },
      device: { offset: BarRegion.DeviceCfg },
      notifyOffMultiplier: NOTIFY_OFF_MULTIPLIER,
      barSize: pci.barSize,
    });
    expect(pci.barAddress).toBe(0xfe00_0000);
    expect(pci.command & (PciCommand.MemorySpace | PciCommand.BusMaster)).toBe(PciCommand.MemorySpace | PciCommand.BusMaster);
    expect(driver.status).toBe(ACK | DRV | FOK | DOK);
    expect(await driver.getId()).toBe('pci-disk');
    expect(driver.capacitySectors).toBe((4 * MiB) / 512);
    await driver.write(100, pattern(8192, 1));
    expect(await driver.read(100, 8192)).toEqual(pattern(8192, 1));
    expect(disk.backend).toBeInstanceOf(MemoryBackend);
    await driver.flush();
    expect(await driver.discardOrZero(BlkRequestType.WriteZeroes, [{ sector: 100, sectors: 8 }])).toBe(BlkStatus.Ok);
    expect(await driver.read(100, 4096)).toEqual(new Uint8Array(4096));
    expect(await driver.discardOrZero(BlkRequestType.Discard, [{ sector: 108, sectors: 8 }])).toBe(BlkStatus.Ok);
    expect(disk.stats).toMatchObject({ writes: 1, flushes: 1, ioErrors: 0 });
    expect(disk.stats.reads).toBe(2);
    await disk.close();
  });

  for (const [queueDepth, deferred] of [
    [1, false],
    [16, false],
    [64, true],
  ] as const) {
    it(`a model-checked random workload at queue depth ${queueDepth}${deferred ? ', doorbells in microtasks' : ''} matches the model`, async () => {
      const { disk, memory } = pciDisk({ scheduleDoorbell: deferred ? (run) => queueMicrotask(run) : undefined });
      const driver = await pciDriver(disk, memory);
      const model = new DiskModel(4 * MiB);
      const buffers = workloadBuffers(driver, queueDepth, 16 * 1024);
      const options = { kind: 'verify', queueDepth, blockBytes: 16 * 1024, ops: 1500, seed: queueDepth, flushEvery: 16 } as const;
      const result = await runWorkload(driver, options, buffers, model);
      expect(result).toMatchObject({ completed: 1500, mismatches: 0, ioErrors: 0 });
      expect(result.reads * result.writes * result.flushes).toBeGreaterThan(0);
      expect(result.zeroes + result.discards).toBeGreaterThan(0);
      expect(await verifyAgainstModel(driver, model, buffers[0]!)).toBe(0);
      await disk.close();
    });
  }

  it('negotiates: EVENT_IDX and indirect as offered, a refused VERSION_1 leaves FEATURES_OK clear', async () => {
    const { disk, memory } = pciDisk();
    const driver = await pciDriver(disk, memory);
    expect(driver.features & (1n << VirtioFeature.RingEventIdx)).not.toBe(0n);
    expect(driver.features & (1n << VirtioFeature.Version1)).not.toBe(0n);
    await disk.close();
    const other = pciDisk();
    await expect(pciDriver(other.disk, other.memory, 1n << VirtioFeature.Version1)).rejects.toThrow(/FEATURES_OK/);
    expect(other.disk.transport.active).toBe(false);
  });

  it('a read-only disk offers RO and refuses writes with IOERR', async () => {
    const memory = new GuestMemory([{ guestAddress: RAM_BASE, source: new ArrayBuffer(16 * MiB) }]);
    const disk = createSameThreadDisk({ memory, backend: new MemoryBackend(MiB, { readOnly: true }), transport: 'pci' });
    const driver = await pciDriver(disk, memory);
    expect(driver.readOnly).toBe(true);
    expect(driver.features & (1n << BlkFeature.Ro)).not.toBe(0n);
    await expect(driver.write(0, pattern(512, 3))).rejects.toThrow(/status 1/);
    await disk.close();
  });

  it('resets and initialises again; data written before the reset is still there', async () => {
    const { disk, pci, memory } = pciDisk();
    const driver = await pciDriver(disk, memory);
    await driver.write(8, pattern(4096, 4));
    await driver.transport.reset();
    expect(common(pci, CommonCfg.DeviceStatus, 1)).toBe(0);
    expect(common(pci, CommonCfg.QueueEnable, 2)).toBe(0);
    expect(disk.transport.active).toBe(false);
    const again = await pciDriver(disk, memory);
    expect(await again.read(8, 4096)).toEqual(pattern(4096, 4));
    await disk.close();
  });

  it('a resize raises a config interrupt, bumps config_generation and shows the new capacity', async () => {
    const { disk, pci, memory } = pciDisk();
    const driver = await pciDriver(disk, memory);
    const generation = common(pci, CommonCfg.ConfigGeneration, 1);
    await disk.resize(6 * MiB);
    await disk.waitForInterrupt();
    expect(driver.ackInterrupt() & 2).toBe(2);
    expect(driver.configChanges).toBe(1);
    expect(common(pci, CommonCfg.ConfigGeneration, 1)).toBe((generation + 1) & 0xff);
    expect(driver.capacitySectors).toBe((6 * MiB) / 512);
    await disk.close();
  });

  it('createDisk({transport: "pci"}) gives a Disk with a pci function; an MMIO disk has none', async () => {
    const memory = [{ guestAddress: RAM_BASE, source: new ArrayBuffer(16 * MiB) }];
    const disk = await createDisk({ memory, backend: { kind: 'memory', size: 2 * MiB }, transport: 'pci', pci: { barSize: 0x20000 } });
    expect(disk.pci).toBeInstanceOf(VirtioPciFunction);
    expect(disk.pci!.barSize).toBe(0x20000);
    const driver = await VirtioBlkDriver.init({
      transport: new PciTransport(disk.pci!),
      memory: new GuestMemory(memory),
      arena: { addr: RAM_BASE + MiB, len: 8 * MiB },
      waitForInterrupt: () => disk.waitForInterrupt(),
    });
    await driver.write(0, pattern(1024, 5));
    expect(await driver.read(0, 1024)).toEqual(pattern(1024, 5));
    await disk.close();
    const mmio = await createDisk({ memory, backend: { kind: 'memory', size: MiB } });
    expect(mmio.pci).toBeNull();
    await mmio.close();
  });

  it('the driver refuses what is not a modern virtio-pci function', () => {
    const { pci } = pciDisk();
    const fake = (patch: Map<number, number>) => ({
      readConfig: (o: number, s: number) => patch.get(o) ?? pci.readConfig(o, s),
      writeConfig: (o: number, s: number, v: number) => pci.writeConfig(o, s, v),
      readBar: (o: number, s: number) => pci.readBar(o, s),
      writeBar: (o: number, s: number, v: number) => pci.writeBar(o, s, v),
    });
    expect(() => new PciTransport(fake(new Map([[PciHeader.VendorId, 0x8086]]))).probe()).toThrow(/vendor/);
    expect(() => new PciTransport(fake(new Map([[PciHeader.DeviceId, 0x1001]]))).probe()).toThrow(/modern/);
    expect(() => new PciTransport(fake(new Map([[PciHeader.Status, 0]]))).probe()).toThrow(/capabilities/);
    expect(() => new PciTransport(fake(new Map([[CapAt.CommonCfg + CapField.RegionLength, 8]]))).probe()).toThrow(/length/);
    expect(() => new PciTransport(fake(new Map([[CapAt.IsrCfg + CapField.Offset, 0x10_0000]]))).probe()).toThrow(/outside BAR0/);
    // A capability list that loops is walked a bounded number of times.
    expect(() => new PciTransport(fake(new Map([[CapAt.NotifyCfg + CapField.Next, CapAt.CommonCfg]]))).probe()).toThrow(/capabilities/);
    expect(new PciTransport(pci).probe()).toBe(2);
    expect(VirtioPciCap.PciCfg).toBe(5);
  });
});
