// Hostile register traffic on the virtio-pci function (virtio 1.2 §4.1):
// walking the capability list, sizing BAR0, every width at every offset of
// configuration space and BAR0 with random values, out-of-range offsets,
// queue_select beyond the queues, writes to read-only fields, queues enabled
// with bogus geometry, the PCI_CFG window aimed anywhere. Each case runs on a
// PCI disk (`transport: 'pci'`); the runner then checks the canary over all
// of guest RAM and that, after a reset, the device serves a well-formed read
// through the same function (pci-view.ts). Named P1… after the rule.

import { Random } from '../../src/demo/workload.ts';
import { PciTransport } from '../../src/driver/pci-transport.ts';
import { DeviceStatus } from '../../src/virtio/device.ts';
import { MmioInterrupt, MmioReg } from '../../src/virtio/mmio/mmio.ts';
import type { PciFunctionAccessor } from '../../src/virtio/pci/function.ts';
import {
  BarRegion,
  CapAt,
  CapField,
  CommonCfg,
  DEFAULT_BAR_SIZE,
  NOTIFY_OFF_MULTIPLIER,
  PCI_CONFIG_SPACE_BYTES,
  PciHeader,
  VirtioPciCap,
} from '../../src/virtio/pci/layout.ts';
import { MAX_QUEUES } from '../../src/virtio/transport/layout.ts';
import { LIVE, NEGOTIATED, check, fail, type RawGuest } from './guest.ts';
import type { HostileCase, Verdict } from './runner.ts';
import { nothingConsumed } from './cases-support.ts';

const PCI = { transport: 'pci' } as const;
const WIDTHS = [1, 2, 4] as const;

function pciOf(g: RawGuest): PciFunctionAccessor {
  const pci = g.t.pci;
  if (!pci) fail('not a PCI target');
  return pci;
}

const common = (p: PciFunctionAccessor, field: number, size: number): number => p.readBar(BarRegion.CommonCfg + field, size);
const setCommon = (p: PciFunctionAccessor, field: number, size: number, value: number): void =>
  p.writeBar(BarRegion.CommonCfg + field, size, value);

/** Identity and layout no guest write may change: IDs, class, header type, the capability list, BARs 1–5. */
function fixedConfig(p: PciFunctionAccessor): number[] {
  const out: number[] = [];
  for (const at of [0x00, 0x08, 0x28, 0x2c, 0x30, 0x34]) out.push(p.readConfig(at, 4));
  // Header type and BIST (the cache line size beside them is the driver's to write).
  out.push(p.readConfig(PciHeader.HeaderType, 2));
  out.push(p.readConfig(PciHeader.InterruptPin, 1));
  for (let bar = 0x14; bar <= PciHeader.Bar5; bar += 4) out.push(p.readConfig(bar, 4));
  for (let at = CapAt.CommonCfg; at < CapAt.PciCfg + 4; at += 4) out.push(p.readConfig(at, 4));
  return out;
}

function expectFixed(before: number[], p: PciFunctionAccessor, what: string): void {
  const now = fixedConfig(p);
  const i = before.findIndex((v, k) => v !== now[k]);
  if (i >= 0) fail(`${what}: fixed config entry ${i} was 0x${before[i]!.toString(16)}, now 0x${now[i]!.toString(16)}`);
}

/** The device's offer and queue 0's maximum, which no register write may change. */
function fixedDevice(p: PciFunctionAccessor): number[] {
  const out: number[] = [common(p, CommonCfg.NumQueues, 2)];
  for (const sel of [0, 1]) {
    setCommon(p, CommonCfg.DeviceFeatureSelect, 4, sel);
    out.push(common(p, CommonCfg.DeviceFeature, 4));
  }
  return out;
}

/** Every width at every offset of `bytes`, each a read and a write of a random value. */
function everyAccess(bytes: number, rng: Random, read: Read, write: Write): void {
  for (let offset = 0; offset < bytes; offset++) {
    for (const size of WIDTHS) {
      const value = read(offset, size);
      if (!Number.isInteger(value) || value < 0 || value >= 2 ** (8 * size)) fail(`read(0x${offset.toString(16)}, ${size}) = ${value}`);
      write(offset, size, rng.next());
    }
  }
}

/** The selected queue's size, enable and ring addresses (low halves). */
function selectedQueue(p: PciFunctionAccessor): number[] {
  const fields = [CommonCfg.QueueSize, CommonCfg.QueueEnable, CommonCfg.QueueDescLo, CommonCfg.QueueDriverLo, CommonCfg.QueueDeviceLo];
  return fields.map((f) => common(p, f, f >= CommonCfg.QueueDescLo ? 4 : 2));
}

/** A case on a PCI disk: `run` gets the raw guest and the function. */
function pciCase(name: string, run: (g: RawGuest, p: PciFunctionAccessor) => Promise<Verdict>): HostileCase {
  return { name, options: PCI, run: (g) => run(g, pciOf(g)) };
}

type Read = (offset: number, size: number) => number;
type Write = (offset: number, size: number, value: number) => void;

/** Every width at every offset of a `bytes`-long space, after DRIVER_OK: the identity and the offer survive. */
function randomAccessCase(name: string, seed: number, bytes: number, space: (p: PciFunctionAccessor) => [Read, Write]): HostileCase {
  return pciCase(name, async (g, p) => {
    await g.negotiate();
    const before = fixedConfig(p);
    const device = fixedDevice(p);
    everyAccess(bytes, new Random(seed), ...space(p));
    await g.t.settle();
    expectFixed(before, p, name.slice(0, 2));
    check(fixedDevice(p).join() === device.join(), `${name.slice(0, 2)}: the device offer changed`);
    return 'REJECT';
  });
}

export const pciCases: readonly HostileCase[] = [
  pciCase('P1 (§4.1.4) the capability list walks from Status and the pointer to five vendor capabilities inside BAR0, and ends', async (_g, p) => {
    const types: number[] = [];
    for (let at = p.readConfig(PciHeader.CapabilitiesPointer, 1), n = 0; at !== 0; at = p.readConfig(at + CapField.Next, 1), n++) {
      check(n < 48, 'the capability list does not end');
      check(at >= 0x40 && at % 4 === 0, `capability at 0x${at.toString(16)}`);
      types.push(p.readConfig(at + CapField.CfgType, 1));
      const offset = p.readConfig(at + CapField.Offset, 4);
      const length = p.readConfig(at + CapField.RegionLength, 4);
      check(offset + length <= DEFAULT_BAR_SIZE, `capability ${types.at(-1)} reaches past BAR0`);
    }
    check(types.join() === [1, 2, 3, 4, 5].join(), `capability types ${types.join()}`);
    // The project's driver finds the same regions as Linux's probe would.
    const layout = new PciTransport(p);
    check(layout.probe() === 2, 'device ID');
    check(layout.layout.notify.offset === BarRegion.NotifyCfg && layout.layout.notifyOffMultiplier === NOTIFY_OFF_MULTIPLIER, 'notify region');
    return 'PASS';
  }),
  pciCase('P2 (PCI 3.0 §6.2.5.1) BAR sizing: all ones read back the size mask, the address restores, BARs 1-5 and the ROM size to 0', async (_g, p) => {
    const before = fixedConfig(p);
    p.writeConfig(PciHeader.Bar0, 4, 0xffff_ffff);
    const mask = p.readConfig(PciHeader.Bar0, 4);
    check(mask === (~(DEFAULT_BAR_SIZE - 1) & ~0xf) >>> 0, `BAR0 size mask 0x${mask.toString(16)}`);
    p.writeConfig(PciHeader.Bar0, 4, 0xfebf_f000);
    check(p.readConfig(PciHeader.Bar0, 4) === 0xfebf_c000, 'BAR0 keeps its size alignment');
    for (let bar = 0x14; bar <= PciHeader.ExpansionRom; bar += 4) {
      if (bar > PciHeader.Bar5 && bar < PciHeader.ExpansionRom) continue;
      p.writeConfig(bar, 4, 0xffff_ffff);
      check(p.readConfig(bar, 4) === 0, `BAR at 0x${bar.toString(16)} is implemented`);
    }
    expectFixed(before, p, 'P2');
    return 'PASS';
  }),
  randomAccessCase(
    'P3 every width at every config-space offset, random values: identity and capabilities unchanged, nothing thrown, RAM untouched',
    0x9c1,
    PCI_CONFIG_SPACE_BYTES,
    // Random writes aim the PCI_CFG window anywhere in BAR0, so they reach its registers too.
    (p) => [(o, s) => p.readConfig(o, s), (o, s, v) => p.writeConfig(o, s, v)],
  ),
  randomAccessCase(
    'P4 every width at every BAR0 offset, random values, while live: nothing thrown, the offer unchanged, RAM untouched',
    0xba0,
    DEFAULT_BAR_SIZE,
    (p) => [(o, s) => p.readBar(o, s), (o, s, v) => p.writeBar(o, s, v)],
  ),
  pciCase('P5 out-of-range offsets (negative, past the end, non-integer, huge) and widths 0, 3, 8 read 0 and write nothing', async (g, p) => {
    await g.negotiate({ driverOk: false });
    const offsets = [-1, -4, 0.5, 1.5, PCI_CONFIG_SPACE_BYTES, DEFAULT_BAR_SIZE, DEFAULT_BAR_SIZE + 4, 2 ** 31, 2 ** 32, 2 ** 53, Number.NaN, Infinity];
    for (const o of offsets) {
      for (const s of [0, 1, 2, 3, 4, 8, -1]) {
        check(p.readConfig(o, s) === 0, `readConfig(${o}, ${s})`);
        check(p.readBar(o, s) === 0, `readBar(${o}, ${s})`);
        p.writeConfig(o, s, 0xffff_ffff);
        p.writeBar(o, s, 0);
      }
    }
    for (const s of [0, 3, 8]) {
      p.writeBar(BarRegion.CommonCfg + CommonCfg.DeviceStatus, s, 0);
      check(p.readBar(BarRegion.CommonCfg + CommonCfg.DeviceFeature, s) === 0, `device_feature at width ${s}`);
    }
    check(common(p, CommonCfg.DeviceStatus, 1) === NEGOTIATED, 'an out-of-range write reached device_status');
    return 'REJECT';
  }),
  pciCase('P6 (§4.1.4.3) queue_select beyond the queues: queue_size reads 0, every queue field ignores writes, queue 0 keeps its setup', async (g, p) => {
    await g.negotiate({ driverOk: false });
    const q0 = selectedQueue(p);
    for (const sel of [1, 2, MAX_QUEUES - 1, MAX_QUEUES, 0x8000, 0xffff]) {
      setCommon(p, CommonCfg.QueueSelect, 2, sel);
      check(common(p, CommonCfg.QueueSize, 2) === 0, `queue_size for queue ${sel}`);
      for (const f of [CommonCfg.QueueSize, CommonCfg.QueueMsixVector, CommonCfg.QueueEnable, CommonCfg.QueueNotifyOff]) setCommon(p, f, 2, 1);
      for (let f: number = CommonCfg.QueueDescLo; f <= CommonCfg.QueueDeviceHi; f += 4) setCommon(p, f, 4, g.base);
      check(common(p, CommonCfg.QueueSize, 2) === 0 && common(p, CommonCfg.QueueEnable, 2) === 0, `queue ${sel} took a write`);
      check(common(p, CommonCfg.QueueNotifyOff, 2) === 0 && common(p, CommonCfg.QueueDescLo, 4) === 0, `queue ${sel} reads non-zero`);
      check(common(p, CommonCfg.QueueMsixVector, 2) === 0xffff, 'queue_msix_vector');
    }
    setCommon(p, CommonCfg.QueueSelect, 2, 0);
    const now = selectedQueue(p);
    check(now.join() === q0.join(), `queue 0 changed: ${q0.join()} → ${now.join()}`);
    // Every notify slot, before DRIVER_OK and for queues that do not exist: nothing consumed.
    for (let q = 0; q < MAX_QUEUES; q++) p.writeBar(BarRegion.NotifyCfg + q * NOTIFY_OFF_MULTIPLIER, 2, q);
    await nothingConsumed(g, 'P6 notify before DRIVER_OK');
    return 'REJECT';
  }),
  pciCase('P7 writes to read-only fields (IDs, class, capabilities, device_feature, num_queues, config_generation, queue_notify_off, ISR) change nothing', async (g, p) => {
    await g.negotiate();
    const before = fixedConfig(p);
    const device = fixedDevice(p);
    const generation = common(p, CommonCfg.ConfigGeneration, 1);
    for (let at = 0; at < PCI_CONFIG_SPACE_BYTES; at += 4) p.writeConfig(at, 4, 0);
    setCommon(p, CommonCfg.DeviceFeature, 4, 0);
    setCommon(p, CommonCfg.NumQueues, 2, 7);
    setCommon(p, CommonCfg.ConfigGeneration, 1, generation + 1);
    setCommon(p, CommonCfg.QueueNotifyOff, 2, 5);
    setCommon(p, CommonCfg.ConfigMsixVector, 2, 0);
    p.writeBar(BarRegion.IsrCfg, 1, 3);
    expectFixed(before, p, 'P7');
    check(fixedDevice(p).join() === device.join(), 'P7: the device offer changed');
    check(common(p, CommonCfg.ConfigGeneration, 1) === generation, 'config_generation moved');
    setCommon(p, CommonCfg.QueueSelect, 2, 0);
    check(common(p, CommonCfg.QueueNotifyOff, 2) === 0, 'queue_notify_off moved');
    check(common(p, CommonCfg.ConfigMsixVector, 2) === 0xffff, 'config_msix_vector took a vector');
    check(p.readBar(BarRegion.IsrCfg, 1) === 0, 'an ISR write set a cause');
    return 'REJECT';
  }),
  ...(
    [
      ['outside RAM', (base: number) => ({ desc: 0x1000, avail: base + 0x2000, used: base + 0x3000, size: 16 })],
      ['misaligned used ring', (base: number) => ({ desc: base + 0x1000, avail: base + 0x2000, used: base + 0x3002, size: 16 })],
      ['past the end of RAM', (base: number) => ({ desc: base + 0x3_fff0, avail: base + 0x2000, used: base + 0x3000, size: 16 })],
      ['size 0', (base: number) => ({ desc: base + 0x1000, avail: base + 0x2000, used: base + 0x3000, size: 0 })],
      ['size 12 (not a power of two)', (base: number) => ({ desc: base + 0x1000, avail: base + 0x2000, used: base + 0x3000, size: 12 })],
      ['high halves set', (base: number) => ({ desc: base + 0x1000 + 2 ** 40, avail: base + 0x2000, used: base + 0x3000, size: 16 })],
    ] as const
  ).map(
    ([what, rings]): HostileCase =>
      pciCase(`P8 (§4.1.4.3.2) queue_enable with bogus geometry (${what}): DEVICE_NEEDS_RESET at DRIVER_OK, nothing written`, async (g, p) => {
        await g.negotiate({ queueSize: null, driverOk: false });
        const r = rings(g.base);
        setCommon(p, CommonCfg.QueueSelect, 2, 0);
        setCommon(p, CommonCfg.QueueSize, 2, r.size);
        for (const [lo, addr] of [
          [CommonCfg.QueueDescLo, r.desc],
          [CommonCfg.QueueDriverLo, r.avail],
          [CommonCfg.QueueDeviceLo, r.used],
        ] as const) {
          setCommon(p, lo, 4, addr % 2 ** 32);
          setCommon(p, lo + 4, 4, Math.floor(addr / 2 ** 32));
        }
        setCommon(p, CommonCfg.QueueEnable, 2, 1);
        setCommon(p, CommonCfg.DeviceStatus, 1, LIVE);
        p.writeBar(BarRegion.NotifyCfg, 2, 0);
        await g.t.settle();
        // The rings were never valid: the runner's canary over all of RAM is the check that nothing was written.
        check(common(p, CommonCfg.DeviceStatus, 1) & DeviceStatus.DeviceNeedsReset, `P8 ${what}: no DEVICE_NEEDS_RESET`);
        const interrupted = await g.waitFor(() => (g.reg(MmioReg.InterruptStatus) & MmioInterrupt.ConfigChange) !== 0);
        check(interrupted, `P8 ${what}: DEVICE_NEEDS_RESET without a config interrupt`);
        return 'REJECT';
      }),
  ),
  pciCase('P9 (§4.1.4.9) the PCI_CFG window aimed anywhere (BAR 1-255, misaligned, past BAR0, length 0/3/8) reads 0 and writes nothing', async (g, p) => {
    await g.negotiate({ driverOk: false });
    const w = CapAt.PciCfg;
    const aim = (bar: number, offset: number, length: number): void => {
      p.writeConfig(w + CapField.Bar, 1, bar);
      p.writeConfig(w + CapField.Offset, 4, offset);
      p.writeConfig(w + CapField.RegionLength, 4, length);
    };
    const status = BarRegion.CommonCfg + CommonCfg.DeviceStatus;
    for (const [bar, offset, length] of [
      [1, status, 1],
      [255, status, 1],
      [0, status, 0],
      [0, status, 3],
      [0, status, 8],
      [0, CommonCfg.NumQueues + 1, 2],
      [0, DEFAULT_BAR_SIZE, 1],
      [0, 0xffff_fffc, 4],
    ] as const) {
      aim(bar, offset, length);
      check(p.readConfig(w + CapField.PciCfgData, 4) === 0, `window (${bar}, 0x${offset.toString(16)}, ${length}) read non-zero`);
      p.writeConfig(w + CapField.PciCfgData, 4, 0);
    }
    check(common(p, CommonCfg.DeviceStatus, 1) === NEGOTIATED, 'a bad window reached device_status');
    // A good window works, so the ones above were refused, not broken.
    aim(0, status, 1);
    check(p.readConfig(w + CapField.PciCfgData, 1) === NEGOTIATED, 'the window does not read device_status');
    check(p.readConfig(CapAt.PciCfg + CapField.CfgType, 1) === VirtioPciCap.PciCfg, 'the window capability changed type');
    setCommon(p, CommonCfg.DeviceStatus, 1, DeviceStatus.DriverOk | NEGOTIATED);
    return 'REJECT';
  }),
];
