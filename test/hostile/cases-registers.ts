// Hostile register traffic: queue selectors out of range, queue geometry
// (bad, changed late, re-programmed), the status and reset handshake, feature
// negotiation, odd access widths, config space, notifications, the ring
// indices and EVENT_IDX. Named after hardening-rules.md (R1–R7, B1–B2) or the
// virtio 1.2 section.

import { BlkConfig, BlkFeature, BlkRequestType as T } from '../../src/block/constants.ts';
import { DeviceStatus, VirtioFeature } from '../../src/virtio/device.ts';
import { MmioInterrupt, MmioReg } from '../../src/virtio/mmio/mmio.ts';
import { Indirect, LIVE, NEGOTIATED, check, layoutFor, type QueueLayout, type RawGuest } from './guest.ts';
import type { HostileCase, Verdict } from './runner.ts';
import { expectDiskData, expectSameRegisters, needsReset, nothingConsumed, served, snapshotRegisters } from './cases-support.ts';

const CFG = MmioReg.Config;
const WRITEBACK = CFG + BlkConfig.Writeback;
const { Acknowledge: ACK, Driver: DRIVER, DriverOk: DRIVER_OK, FeaturesOk: FEATURES_OK } = DeviceStatus;

/** Offer a one-sector read at descriptors 0–2; returns what is needed to check it. */
function offerRead(g: RawGuest, sector: number) {
  const r = g.request(T.In, sector, [512], true);
  const head = g.chain(0, r.segs);
  g.offer(head);
  return { r, head };
}

/** Submit a read and check it is served with the right data. */
async function expectRead(g: RawGuest, sector: number, what: string): Promise<Verdict> {
  const { r, head } = offerRead(g, sector);
  g.notify();
  const v = served(g, await g.outcome(what), head, r, 513, what);
  expectDiskData(g, sector, [[r.data[0]!, 512]], what);
  return v;
}

/** Up to FEATURES_OK with the default features (and a queue when `queue`), no DRIVER_OK. */
async function upToFeaturesOk(g: RawGuest, features?: bigint, queue = true): Promise<void> {
  await g.negotiate({ features, queueSize: queue ? 16 : null, driverOk: false });
}

/** Writes a hostile driver makes to every queue register. */
function writeEveryQueueRegister(g: RawGuest, value: number): void {
  for (const reg of [
    MmioReg.QueueNumMax,
    MmioReg.QueueNum,
    MmioReg.QueueDescLow,
    MmioReg.QueueDescHigh,
    MmioReg.QueueDriverLow,
    MmioReg.QueueDriverHigh,
    MmioReg.QueueDeviceLow,
    MmioReg.QueueDeviceHigh,
    MmioReg.QueueReset,
    MmioReg.QueueReady,
  ]) {
    g.setReg(reg, value);
  }
}

/** R1: a selector that selects nothing reads 0 and writes nothing, with a live queue 0 beside it. */
function selectorCase(sel: number): HostileCase {
  return {
    name: `R1 (§4.2.2) QueueSel = 0x${sel.toString(16)}: queue registers read 0, writes change nothing anywhere`,
    async run(g) {
      await g.negotiate();
      g.setReg(MmioReg.QueueSel, 0);
      const before = snapshotRegisters(g);
      g.setReg(MmioReg.QueueSel, sel);
      check(g.reg(MmioReg.QueueNumMax) === 0, `R1: QueueNumMax reads ${g.reg(MmioReg.QueueNumMax)} with QueueSel 0x${sel.toString(16)}`);
      check(g.reg(MmioReg.QueueReady) === 0, `R1: QueueReady reads ${g.reg(MmioReg.QueueReady)} with QueueSel 0x${sel.toString(16)}`);
      for (const v of [1, 0xffff_ffff, 0x1234_5678, 0]) {
        writeEveryQueueRegister(g, v);
        check(g.reg(MmioReg.QueueNumMax) === 0 && g.reg(MmioReg.QueueReady) === 0, `R1: a queue register of selector 0x${sel.toString(16)} took a write`);
      }
      g.setReg(MmioReg.QueueSel, 0);
      expectSameRegisters(before, snapshotRegisters(g), `R1 (QueueSel 0x${sel.toString(16)})`);
      check(g.reg(MmioReg.DeviceId) === 2 && g.reg(MmioReg.MagicValue) === 0x74726976 && g.reg(MmioReg.Version) === 2, 'R1: identity registers changed');
      await nothingConsumed(g, 'R1');
      return expectRead(g, 3, 'R1: queue 0 after the writes');
    },
  };
}

/** R2: a geometry the device cannot use sets DEVICE_NEEDS_RESET at DRIVER_OK. */
function badGeometryCase(name: string, change: (g: RawGuest, l: QueueLayout) => void): HostileCase {
  return {
    name,
    async run(g) {
      await upToFeaturesOk(g, undefined, false);
      const l = layoutFor(g.base, 16);
      g.programQueue(l, false);
      change(g, l);
      g.setReg(MmioReg.QueueReady, 1);
      offerRead(g, 0);
      g.setReg(MmioReg.Status, LIVE);
      g.notify();
      check(await g.waitFor(() => (g.status & 64) !== 0), `${name}: no DEVICE_NEEDS_RESET`);
      return await needsReset(g, null, name);
    },
  };
}

/** §2.7.6: a broken avail ring stops the queue with DEVICE_NEEDS_RESET. */
function brokenRingCase(name: string, spoil: (g: RawGuest) => void): HostileCase {
  return {
    name,
    async run(g) {
      await g.negotiate();
      offerRead(g, 0);
      spoil(g);
      g.notify();
      const v = await needsReset(g, await g.outcome(name), name);
      // It stays stopped until a reset.
      g.notify();
      await nothingConsumed(g, name);
      return v;
    },
  };
}

/** R4: features the device cannot accept leave FEATURES_OK clear; DRIVER_OK then serves nothing. */
function refusedFeaturesCase(name: string, features: (g: RawGuest) => bigint): HostileCase {
  return {
    name,
    async run(g) {
      await g.reset();
      g.setReg(MmioReg.Status, ACK | DRIVER);
      g.writeFeatures(features(g));
      g.setReg(MmioReg.Status, NEGOTIATED);
      check(!(g.status & FEATURES_OK), `${name}: FEATURES_OK accepted`);
      g.programQueue(layoutFor(g.base, 16));
      offerRead(g, 0);
      g.setReg(MmioReg.Status, g.status | DRIVER_OK);
      g.notify();
      await nothingConsumed(g, name);
      return 'REJECT';
    },
  };
}

/** Let the device take config writes and publish its view of the config space. */
async function configSettled(g: RawGuest): Promise<void> {
  await g.t.settle();
  await g.t.settle();
}

export const registerCases: HostileCase[] = [
  ...[0xffff_ffff, 0xffff_fffe, 8, 1].map(selectorCase),
  {
    name: 'R1 (§4.2.2) QueueSel = 0xffffffff before any queue is set up: a whole initialisation afterwards works',
    async run(g) {
      await g.reset();
      const before = snapshotRegisters(g);
      for (const sel of [0xffff_ffff, 0x8000_0000, 0xffff_fffe, 7, 8, 9, 1]) {
        g.setReg(MmioReg.QueueSel, sel);
        writeEveryQueueRegister(g, 0xffff_ffff);
        writeEveryQueueRegister(g, 1);
      }
      g.setReg(MmioReg.QueueSel, 0);
      expectSameRegisters(before, snapshotRegisters(g), 'R1 before init');
      await g.negotiate();
      return expectRead(g, 2, 'R1 before init');
    },
  },
  // ---- R2: queue geometry ----
  badGeometryCase('R2 (§2.7) QueueNum 0 with QueueReady 1: DEVICE_NEEDS_RESET at DRIVER_OK', (g) => g.setReg(MmioReg.QueueNum, 0)),
  badGeometryCase('R2 (§2.7) QueueNum 3 (not a power of two): DEVICE_NEEDS_RESET at DRIVER_OK', (g) => g.setReg(MmioReg.QueueNum, 3)),
  badGeometryCase('R2 (§4.2.3.2) QueueNum above QueueNumMax: DEVICE_NEEDS_RESET at DRIVER_OK', (g) => g.setReg(MmioReg.QueueNum, 2 * g.reg(MmioReg.QueueNumMax))),
  badGeometryCase('R2 (§4.2.3.2) QueueNum 0xffffffff: DEVICE_NEEDS_RESET at DRIVER_OK', (g) => g.setReg(MmioReg.QueueNum, 0xffff_ffff)),
  badGeometryCase('R2 (§2.7) descriptor table below RAM (address 0): DEVICE_NEEDS_RESET', (g) => g.setReg(MmioReg.QueueDescLow, 0)),
  badGeometryCase('R2 (§2.7) descriptor table at 2^32 × 0xffffffff (far outside RAM): DEVICE_NEEDS_RESET', (g) => g.setReg(MmioReg.QueueDescHigh, 0xffff_ffff)),
  badGeometryCase('R2 (§2.7) avail ring straddling the end of RAM: DEVICE_NEEDS_RESET', (g) => g.setReg(MmioReg.QueueDriverLow, g.end - 8)),
  badGeometryCase('R2 (§2.7) used ring straddling the end of RAM: DEVICE_NEEDS_RESET', (g) => g.setReg(MmioReg.QueueDeviceLow, g.end - 64)),
  badGeometryCase('R2 (§2.7.2) descriptor table misaligned (8 bytes): DEVICE_NEEDS_RESET', (g, l) => g.setReg(MmioReg.QueueDescLow, l.desc + 8)),
  badGeometryCase('R2 (§2.7.2) used ring misaligned (2 bytes): DEVICE_NEEDS_RESET', (g, l) => g.setReg(MmioReg.QueueDeviceLow, l.used + 2)),
  {
    name: 'R2 (§4.2.3.2) every queue register written after QueueReady=1 (before DRIVER_OK) is ignored',
    async run(g) {
      await upToFeaturesOk(g);
      const elsewhere = g.alloc(0x4000, 0x1000);
      g.setReg(MmioReg.QueueNum, 4);
      g.setReg(MmioReg.QueueDescLow, elsewhere);
      g.setReg(MmioReg.QueueDriverLow, elsewhere + 0x1000);
      g.setReg(MmioReg.QueueDeviceLow, elsewhere + 0x2000);
      g.setReg(MmioReg.QueueDeviceHigh, 1);
      check(g.reg(MmioReg.QueueReady) === 1, 'R2: QueueReady no longer reads 1');
      g.setReg(MmioReg.Status, LIVE);
      return expectRead(g, 4, 'R2 frozen geometry');
    },
  },
  {
    name: 'R2 (§4.2.3.2) every queue register written after DRIVER_OK is ignored: the live queue keeps its rings',
    async run(g) {
      await g.negotiate();
      await expectRead(g, 1, 'R2 before the writes');
      const elsewhere = g.alloc(0x4000, 0x1000);
      g.setReg(MmioReg.QueueNum, 2);
      g.setReg(MmioReg.QueueDescLow, elsewhere);
      g.setReg(MmioReg.QueueDriverLow, elsewhere + 0x1000);
      g.setReg(MmioReg.QueueDeviceLow, elsewhere + 0x2000);
      g.setReg(MmioReg.QueueReset, 1);
      return expectRead(g, 5, 'R2 after the writes');
    },
  },
  {
    name: 'R2 (§4.2.2) QueueReady reads back 0 immediately after writing 0',
    async run(g) {
      await upToFeaturesOk(g);
      g.setReg(MmioReg.QueueReady, 0);
      check(g.reg(MmioReg.QueueReady) === 0, 'R2: QueueReady reads 1 after writing 0 (before DRIVER_OK)');
      g.setReg(MmioReg.QueueReady, 1);
      g.setReg(MmioReg.Status, LIVE);
      g.setReg(MmioReg.QueueReady, 0);
      check(g.reg(MmioReg.QueueReady) === 0, 'R2: QueueReady reads 1 after writing 0 (after DRIVER_OK)');
      return 'REJECT';
    },
  },
  {
    name: 'R2 (§4.2.3.2) QueueReady=0 after DRIVER_OK stops the queue; re-programmed and QueueReady=1 it serves the new rings',
    async run(g) {
      await g.negotiate();
      await expectRead(g, 1, 'R2 before the stop');
      const old = { ...g.q };
      const oldUsedIdx = g.usedIdx();
      g.setReg(MmioReg.QueueReady, 0);
      offerRead(g, 2);
      g.notify();
      await nothingConsumed(g, 'R2 stopped queue');
      // New rings elsewhere, a different size.
      const at = g.alloc(0x3000, 0x1000);
      g.programQueue({ size: 8, desc: at, avail: at + 0x1000, used: at + 0x2000 });
      check(g.r16(old.used + 2) === oldUsedIdx, 'R2: the old used ring was written after QueueReady=0');
      const v = await expectRead(g, 6, 'R2 re-programmed queue');
      check(g.r16(old.used + 2) === oldUsedIdx, 'R2: the old used ring was written after re-programming');
      return v;
    },
  },
  {
    name: 'R2 (§4.2.3.2) QueueReady=1 after DRIVER_OK with QueueNum 0: DEVICE_NEEDS_RESET',
    async run(g) {
      await g.negotiate();
      g.setReg(MmioReg.QueueReady, 0);
      g.setReg(MmioReg.QueueNum, 0);
      g.setReg(MmioReg.QueueReady, 1);
      g.notify();
      check(await g.waitFor(() => (g.status & 64) !== 0), 'R2: no DEVICE_NEEDS_RESET for QueueNum 0 enabled late');
      return await needsReset(g, null, 'R2 late bad geometry');
    },
  },
  {
    name: 'R2 (§4.2.3.2) a queue left disabled at DRIVER_OK and enabled later is served',
    async run(g) {
      await g.negotiate({ queueSize: null });
      g.programQueue(layoutFor(g.base, 16));
      return expectRead(g, 7, 'R2 late queue');
    },
  },
  {
    name: 'R2 (§4.2.3.2) a request in flight when QueueReady=0 completes without a used element',
    options: { gateOps: ['read'] },
    async run(g) {
      await g.negotiate();
      offerRead(g, 3);
      g.notify();
      check(await g.t.gate!.waitStarted(1, g.t.hangMs), 'R2: the read never reached the backend');
      g.setReg(MmioReg.QueueReady, 0);
      g.t.gate!.open();
      await nothingConsumed(g, 'R2 in-flight on a stopped queue');
      return 'REJECT';
    },
  },
  // ---- R3: reset ----
  {
    name: 'R3 (§2.4) reset mid-I/O with a slow backend: Status stays non-zero until work is dropped, nothing is written after, the device is reusable',
    options: { gateOps: ['read', 'write'] },
    async run(g) {
      await g.negotiate({ features: g.defaultFeatures() | (1n << BlkFeature.ConfigWce) });
      g.setReg(WRITEBACK, 0, 1);
      const w = g.request(T.Out, 4, [1024], false);
      g.offer(g.chain(0, w.segs));
      const r = g.request(T.In, 8, [512], true);
      g.offer(g.chain(4, r.segs));
      g.notify();
      const gate = g.t.gate!;
      check(await gate.waitStarted(2, g.t.hangMs), `R3: ${gate.started} of 2 requests reached the backend`);
      g.setReg(MmioReg.Status, 0);
      check(g.status !== 0, 'R3: Status read 0 while requests were still in flight');
      g.setReg(MmioReg.Status, ACK);
      check(g.status === LIVE, `R3: a Status write during a pending reset took effect (0x${g.status.toString(16)})`);
      gate.open();
      check(await g.waitFor(() => g.status === 0), 'R3: Status never read 0 after the work was released');
      const atReset = g.t.ram.slice();
      check(g.reg(MmioReg.InterruptStatus) === 0, 'R3: InterruptStatus not cleared by the reset');
      check(g.reg(MmioReg.QueueReady) === 0, 'R3: QueueReady not cleared by the reset');
      check(g.reg(WRITEBACK, 1) === 1, 'B2: writeback not restored to 1 by a busy reset');
      await g.t.settle();
      await g.t.settle();
      const now = g.t.ram;
      for (let i = 0; i < now.length; i++) check(now[i] === atReset[i], `R3: guest RAM at 0x${(g.base + i).toString(16)} written after the reset completed`);
      check(g.usedIdx() === 0, 'R3: requests dropped by the reset were published');
      return 'REJECT';
    },
  },
  {
    name: 'R3 (§2.4) an idle reset is immediate: Status reads 0 at once',
    sameThreadOnly: true,
    async run(g) {
      await g.negotiate();
      await expectRead(g, 1, 'R3 idle');
      g.setReg(MmioReg.Status, 0);
      check(g.status === 0, `R3: Status reads 0x${g.status.toString(16)} right after an idle reset`);
      return 'REJECT';
    },
  },
  {
    name: 'R3 (§4.2.2.1) reset clears InterruptStatus, QueueReady, features and selectors',
    async run(g) {
      await g.negotiate();
      offerRead(g, 1);
      g.notify();
      await g.waitUsed(1, 'R3 clear');
      check(g.reg(MmioReg.InterruptStatus) !== 0, 'R3: no interrupt for the read');
      g.setReg(MmioReg.DeviceFeaturesSel, 0);
      const lo = g.reg(MmioReg.DeviceFeatures);
      g.setReg(MmioReg.DeviceFeaturesSel, 1);
      await g.reset();
      check(g.reg(MmioReg.InterruptStatus) === 0, 'R3: InterruptStatus survived the reset');
      check(g.reg(MmioReg.QueueReady) === 0, 'R3: QueueReady survived the reset');
      check(g.reg(MmioReg.DeviceFeatures) === lo, 'R3: DeviceFeaturesSel survived the reset');
      return 'REJECT';
    },
  },
  // ---- R4: status and features ----
  refusedFeaturesCase('R4 (§3.1.1) driver features beyond the offer: FEATURES_OK stays clear, DRIVER_OK serves nothing', () => 0xffff_ffff_ffff_ffffn),
  refusedFeaturesCase('R4 (§6.1) FEATURES_OK without VIRTIO_F_VERSION_1 stays clear, DRIVER_OK serves nothing', (g) => g.defaultFeatures() & ~(1n << VirtioFeature.Version1)),
  {
    name: 'R4 (§2.1) Status 0x100 changes nothing and does not reset',
    async run(g) {
      await g.negotiate();
      g.setReg(MmioReg.Status, 0x100);
      check(g.status === LIVE, `R4: Status 0x100 made Status 0x${g.status.toString(16)}`);
      return expectRead(g, 2, 'R4 after 0x100');
    },
  },
  {
    name: 'R4 (§2.1.1) the driver cannot set DEVICE_NEEDS_RESET',
    async run(g) {
      await g.negotiate();
      g.setReg(MmioReg.Status, LIVE | DeviceStatus.DeviceNeedsReset);
      check(g.status === LIVE, `R4: Status reads 0x${g.status.toString(16)} after the driver wrote DEVICE_NEEDS_RESET`);
      return expectRead(g, 2, 'R4 after NEEDS_RESET write');
    },
  },
  {
    name: 'R4 (§2.1.2) status bits are never cleared by the driver until reset',
    async run(g) {
      await g.negotiate();
      g.setReg(MmioReg.Status, ACK);
      check(g.status === LIVE, `R4: writing ACK alone made Status 0x${g.status.toString(16)}`);
      return expectRead(g, 3, 'R4 after clearing bits');
    },
  },
  {
    name: 'R4 (§3.1.1) DRIVER_OK without FEATURES_OK: DEVICE_NEEDS_RESET and a config interrupt, nothing served',
    async run(g) {
      await g.reset();
      g.setReg(MmioReg.Status, ACK | DRIVER);
      g.writeFeatures(g.defaultFeatures());
      g.programQueue(layoutFor(g.base, 16));
      offerRead(g, 0);
      g.setReg(MmioReg.Status, ACK | DRIVER | DRIVER_OK);
      g.notify();
      check(await g.waitFor(() => (g.status & 64) !== 0), `R4: no DEVICE_NEEDS_RESET (status 0x${g.status.toString(16)})`);
      await needsReset(g, null, 'R4 DRIVER_OK without FEATURES_OK');
      await nothingConsumed(g, 'R4 DRIVER_OK without FEATURES_OK');
      return 'REJECT';
    },
  },
  {
    name: 'R4 (§3.1.1) DriverFeatures written after FEATURES_OK are ignored (INDIRECT smuggled in later is refused)',
    async run(g) {
      const features = g.defaultFeatures() & ~(1n << VirtioFeature.RingIndirectDesc);
      await upToFeaturesOk(g, features);
      g.writeFeatures(features | (1n << VirtioFeature.RingIndirectDesc));
      g.setReg(MmioReg.Status, LIVE);
      const r = g.request(T.In, 0, [512], true);
      const table = g.alloc(48);
      g.chain(0, r.segs, table);
      g.desc(0, table, 48, Indirect);
      const o = await g.submit(0, 'R4 late features');
      check(o.used && o.used.len === 0, `R4: an INDIRECT chain was served though INDIRECT was never accepted (used.len ${o.used?.len})`);
      return 'REJECT';
    },
  },
  // ---- R5 / B1 / B2: config space ----
  {
    name: 'R5 (§3.1.1) config writes before FEATURES_OK are ignored',
    async run(g) {
      await g.reset();
      g.setReg(MmioReg.Status, ACK | DRIVER);
      g.writeFeatures(g.defaultFeatures() | (1n << BlkFeature.ConfigWce));
      g.setReg(WRITEBACK, 0, 1);
      await configSettled(g);
      check(g.reg(WRITEBACK, 1) === 1, `R5: writeback reads ${g.reg(WRITEBACK, 1)} after a write before FEATURES_OK`);
      return 'REJECT';
    },
  },
  {
    name: 'R5 (§5.2.4) only writeback is writable: every other config byte reads back the device\'s value',
    async run(g) {
      await upToFeaturesOk(g, g.defaultFeatures() | (1n << BlkFeature.ConfigWce));
      const before = Array.from({ length: 60 }, (_, i) => g.reg(CFG + i, 1));
      for (let i = 0; i < 60; i++) if (i !== BlkConfig.Writeback) g.setReg(CFG + i, before[i]! ^ 0xff, 1);
      for (let i = 0; i < 60; i += 4) if (i !== BlkConfig.Writeback) g.setReg(CFG + i, 0xdead_beef, 4);
      await configSettled(g);
      for (let i = 0; i < 60; i++) check(g.reg(CFG + i, 1) === before[i], `R5: config byte ${i} reads ${g.reg(CFG + i, 1)}, was ${before[i]}`);
      g.setReg(MmioReg.Status, LIVE);
      return expectRead(g, 1, 'R5 after config writes');
    },
  },
  {
    name: 'R5 (§3.1.1 step 7) with CONFIG_WCE, writeback written between FEATURES_OK and DRIVER_OK is honoured',
    async run(g) {
      await upToFeaturesOk(g, g.defaultFeatures() | (1n << BlkFeature.ConfigWce));
      check(g.reg(WRITEBACK, 1) === 1, `R5: writeback reads ${g.reg(WRITEBACK, 1)} before the write`);
      g.setReg(WRITEBACK, 0, 1);
      await configSettled(g);
      check(g.reg(WRITEBACK, 1) === 0, 'R5: writeback 0 not honoured');
      g.setReg(MmioReg.Status, LIVE);
      await configSettled(g);
      check(g.reg(WRITEBACK, 1) === 0, 'R5: writeback reverted at DRIVER_OK');
      return expectRead(g, 1, 'R5 write-through');
    },
  },
  {
    name: 'R5 (§5.2.5) without CONFIG_WCE a writeback write is ignored',
    async run(g) {
      await upToFeaturesOk(g, g.defaultFeatures() & ~(1n << BlkFeature.ConfigWce));
      g.setReg(WRITEBACK, 0, 1);
      await configSettled(g);
      check(g.reg(WRITEBACK, 1) === 1, `R5: writeback reads ${g.reg(WRITEBACK, 1)} without CONFIG_WCE`);
      return 'REJECT';
    },
  },
  {
    name: 'B1 (§5.2.5.2) CONFIG_WCE without FLUSH: writeback reads 0 and stays 0',
    async run(g) {
      await upToFeaturesOk(g, (g.defaultFeatures() | (1n << BlkFeature.ConfigWce)) & ~(1n << BlkFeature.Flush));
      check(g.reg(WRITEBACK, 1) === 0, `B1: writeback reads ${g.reg(WRITEBACK, 1)} with CONFIG_WCE and no FLUSH`);
      g.setReg(WRITEBACK, 1, 1);
      await configSettled(g);
      check(g.reg(WRITEBACK, 1) === 0, 'B1: writeback 1 accepted without FLUSH');
      g.setReg(MmioReg.Status, LIVE);
      await configSettled(g);
      check(g.reg(WRITEBACK, 1) === 0, 'B1: writeback reads 1 after DRIVER_OK without FLUSH');
      return 'REJECT';
    },
  },
  {
    name: 'B2 (§2.4) an idle reset restores writeback to 1 before re-initialisation',
    async run(g) {
      await upToFeaturesOk(g, g.defaultFeatures() | (1n << BlkFeature.ConfigWce));
      g.setReg(WRITEBACK, 0, 1);
      g.setReg(MmioReg.Status, LIVE);
      await configSettled(g);
      check(g.reg(WRITEBACK, 1) === 0, 'B2: writeback 0 not honoured');
      await g.reset();
      check(g.reg(WRITEBACK, 1) === 1, `B2: writeback reads ${g.reg(WRITEBACK, 1)} after a reset`);
      return 'REJECT';
    },
  },
  // ---- R6: widths and offsets ----
  {
    name: 'R6 (§4.2.2.2) odd widths, unaligned, out-of-window, negative and non-integer accesses read 0 and write nothing',
    async run(g) {
      await g.negotiate();
      await expectRead(g, 1, 'R6 before');
      g.ackInterrupts();
      g.setReg(MmioReg.QueueSel, 0);
      const before = snapshotRegisters(g);
      const reads: Array<[number, number]> = [
        [0x000, 1], [0x000, 2], [0x001, 4], [0x002, 4], [0x000, 8], [0x000, 3], [0x000, 0], [0x000, -4],
        [0x070, 1], [0x070, 2], [0x008, 2], [0x200, 4], [0x1000, 4], [-4, 4], [-0x100, 1], [0.5, 4], [NaN, 4],
        [Infinity, 4], [0x100 + 58, 4], [0x100 + 1, 2], [0x100 + 2, 4], [0x100 + 60, 1], [0x1fc, 4], [0x100, 8],
        [0x100, 3], [2 ** 53, 4], [0xffff_ffff, 4],
      ];
      for (const [off, width] of reads) {
        const v = g.reg(off, width);
        check(v === 0, `R6: read(${off}, ${width}) = 0x${v.toString(16)}, want 0`);
      }
      const writes: Array<[number, number, number]> = [
        [0x070, 0, 1], [0x070, 0, 2], [0x071, 0, 1], [0x072, 0, 4], [0x070, 0, 8], [0x070, 0, 3], [0x050, 0, 2],
        [0x051, 0, 4], [0x064, 0xff, 1], [0x030, 5, 2], [0x044, 0, 1], [0x100 + 32, 0, 8], [0x100 + 33, 0, 2],
        [0x100 + 58, 0, 4], [0x100 + 60, 0, 1], [-4, 0, 4], [NaN, 0, 4], [0.5, 0, 4], [0x200, 0, 4], [0x270, 0, 4],
        [0x1070, 0, 4], [-0x190, 0, 4], [0x070 + 2 ** 32, 0, 4], [Infinity, 0, 4], [-Infinity, 0, 4], [112.5, 0, 4], [0x030, -1.5, 4],
      ];
      for (const [off, value, width] of writes) g.setReg(off, value, width);
      await g.t.settle();
      check(g.status === LIVE, `R6: Status is 0x${g.status.toString(16)} after odd-width writes`);
      g.setReg(MmioReg.QueueSel, 0);
      expectSameRegisters(before, snapshotRegisters(g), 'R6');
      return expectRead(g, 2, 'R6 after');
    },
  },
  // ---- R7: notifications ----
  {
    name: 'R7 (§3.1.1) a notify before DRIVER_OK consumes nothing; the chain is served after DRIVER_OK',
    async run(g) {
      await upToFeaturesOk(g);
      const w = g.request(T.Out, 3, [512], false);
      for (let i = 0; i < 512; i++) g.w8(w.data[0]! + i, 0xa5);
      const head = g.chain(0, w.segs);
      g.offer(head);
      g.notify();
      await nothingConsumed(g, 'R7 before DRIVER_OK');
      g.expectDiskUnchanged('R7 before DRIVER_OK');
      g.setReg(MmioReg.Status, LIVE);
      g.notify();
      const v = served(g, await g.outcome('R7 after DRIVER_OK'), head, w, 1, 'R7 after DRIVER_OK');
      expectDiskData(g, 3, [[w.data[0]!, 512]], 'R7 after DRIVER_OK');
      return v;
    },
  },
  {
    name: 'R7 (§4.2.3.3) notifying queues that do not exist (1, 8, 31, 32, 0x80000000, 0xffffffff) is harmless',
    async run(g) {
      await g.negotiate();
      // Let the device finish its DRIVER_OK pass first: it may serve whatever
      // is available then (a notification is a hint, §2.7.13.3), and on the
      // worker host that pass runs on its own time.
      await g.t.settle();
      await g.t.settle();
      const { r, head } = offerRead(g, 5);
      for (const q of [1, 8, 31, 32, 33, 0x8000_0000, 0xffff_ffff]) g.notify(q);
      await nothingConsumed(g, 'R7 notify of missing queues');
      g.notify(0);
      return served(g, await g.outcome('R7 real notify'), head, r, 513, 'R7 real notify');
    },
  },
  // ---- the avail ring (§2.7.6) ----
  brokenRingCase('§2.7.6 avail.idx jumps queue size + 1 ahead: DEVICE_NEEDS_RESET, nothing consumed', (g) => g.setAvailIdx(17)),
  brokenRingCase('§2.7.6 avail.idx moves backwards (0 → 0xffff): DEVICE_NEEDS_RESET, nothing consumed', (g) => g.setAvailIdx(0xffff)),
  brokenRingCase('§2.7.6 a head equal to the queue size: DEVICE_NEEDS_RESET', (g) => g.w16(g.q.avail + 4, 16)),
  brokenRingCase('§2.7.6 a head of 0xffff: DEVICE_NEEDS_RESET', (g) => g.w16(g.q.avail + 4, 0xffff)),
  {
    name: '§2.7.6 avail.idx exactly queue size ahead: all sixteen chains are served',
    async run(g) {
      await g.negotiate();
      const reqs = [];
      for (let i = 0; i < 16; i++) {
        const r = g.request(T.In, i, [512], true);
        const table = g.alloc(48);
        g.chain(0, r.segs, table);
        g.desc(i, table, 48, Indirect);
        reqs.push(r);
        g.w16(g.q.avail + 4 + 2 * i, i);
      }
      g.setAvailIdx(16);
      g.notify();
      const used = await g.waitUsed(16, 'sixteen chains');
      check(used.length === 16, `${used.length} used elements`);
      const ids = new Set(used.map((u) => u.id));
      check(ids.size === 16 && used.every((u) => u.len === 513), `sixteen chains: ${JSON.stringify(used)}`);
      reqs.forEach((r, i) => expectDiskData(g, i, [[r.data[0]!, 512]], `chain ${i}`));
      return 'PASS';
    },
  },
  // ---- EVENT_IDX (§2.7.7.2, §2.7.10) ----
  {
    name: '§2.7.10 EVENT_IDX across the u16 wrap: used_event is honoured at 0x8000 and 0xffff, avail_event follows the wrap',
    options: { ramBytes: 512 << 10 },
    async run(g) {
      const size = 256;
      await g.negotiate({ features: g.offered(), queueSize: size });
      const usedEvent = g.q.avail + 4 + 2 * size;
      const availEvent = g.q.used + 4 + 8 * size;
      // 128 FLUSH requests, descriptors 2k and 2k+1, reused every batch.
      const status = g.alloc(128);
      for (let k = 0; k < 128; k++) {
        const header = g.alloc(16);
        g.header(header, T.Flush, 0);
        g.chain(2 * k, [{ addr: header, len: 16 }, { addr: status + k, len: 1, write: true }]);
      }
      const batch = async (count: number, event: number): Promise<boolean> => {
        g.ackInterrupts();
        g.w16(usedEvent, event);
        for (let k = 0; k < count; k++) g.offer(2 * k);
        g.notify();
        await g.waitUsed(count, `batch to 0x${g.availIdx.toString(16)}`);
        await g.t.settle();
        const avail = g.r16(availEvent);
        check(avail === g.availIdx, `avail_event 0x${avail.toString(16)}, want 0x${g.availIdx.toString(16)}`);
        return (g.reg(MmioReg.InterruptStatus) & MmioInterrupt.UsedBuffer) !== 0;
      };
      const fired: number[] = [];
      for (let b = 0; b < 511; b++) if (await batch(128, 0x8000)) fired.push(b);
      // vring_need_event: the interrupt comes with the batch that publishes entry used_event (0x8000 → 0x8001).
      check(fired.length === 1 && fired[0] === 256, `used_event 0x8000: interrupts after batches ${fired.join(', ')}, want only 256`);
      check(g.usedIdx() === 0xff80, `used.idx 0x${g.usedIdx().toString(16)}`);
      check(await batch(128, 0xffff), 'used_event 0xffff: no interrupt when used.idx wrapped past it');
      check(g.usedIdx() === 0, 'used.idx did not wrap to 0');
      check(!(await batch(64, 0xfff0)), 'used_event behind used.idx (0xfff0): an interrupt anyway');
      check(await batch(64, 74), 'used_event 74 inside the batch 64..128: no interrupt');
      return 'PASS';
    },
  },
  {
    name: '§2.7.7.2 without EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT suppresses the interrupt',
    async run(g) {
      await g.negotiate();
      g.ackInterrupts();
      g.w16(g.q.avail, 1);
      const { r, head } = offerRead(g, 1);
      g.notify();
      const used = await g.waitUsed(1, 'NO_INTERRUPT');
      await g.t.settle();
      check(used[0]!.id === head && used[0]!.len === 513 && g.r8(r.status) === 0, `NO_INTERRUPT: ${JSON.stringify(used)}`);
      check(g.reg(MmioReg.InterruptStatus) === 0, 'NO_INTERRUPT: the device interrupted anyway');
      return 'PASS';
    },
  },
];
