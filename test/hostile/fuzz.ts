// A seeded fuzzer over what a hostile guest controls: register writes (any
// offset, value and width) around a negotiation with random features and
// queue size, a random descriptor table and indirect table, random headers,
// avail entries, avail.idx and used_event. After every case, the same checks
// as the hand-written cases: nothing reached the host, guest RAM is unchanged
// outside the device-writable buffers and used rings the case set up, a
// read-only disk is unchanged, and after a reset the device serves a
// well-formed read with the right data.
//
// The device runs on the same thread over a synchronous backend, so a case is
// deterministic: fast-check's seed and path replay it exactly
// (scripts/fuzz.ts). Environment-neutral.
//
// `pciFuzzProperty` runs the same cases on a virtio-pci disk: the MMIO-named
// register writes reach the function's fields through pci-view.ts, and raw
// writes of any offset, width and value to configuration space and BAR0 come
// before and after the rings are offered. The used ring the device may write
// is read back from the function after every raw write (a write through the
// PCI_CFG window can move it too).

import fc from 'fast-check';
import { VirtioFeature } from '../../src/virtio/device.ts';
import { MmioReg } from '../../src/virtio/mmio/mmio.ts';
import type { PciFunctionAccessor } from '../../src/virtio/pci/function.ts';
import { BarRegion, CapAt, CapField, CommonCfg, DEFAULT_BAR_SIZE, PciHeader } from '../../src/virtio/pci/layout.ts';
import { CaseFailure, LIVE, RawGuest, layoutFor } from './guest.ts';
import { expectServes } from './runner.ts';
import { fillDisk, sameThreadTarget } from './target.ts';

const RAM = 64 << 10;
/** Where the case's buffers, headers and indirect table live (offsets into RAM). */
const FIELD = 0x8000;
const FIELD_BYTES = 0x4000;
const TABLE = FIELD + 0x3000;
const HEADERS = [FIELD, FIELD + 0x100, FIELD + 0x200, FIELD + 0x300];
const DEVICE_MAX_QUEUE = 256;

const REGISTERS = [...Object.values(MmioReg), 0x100 + 32, 0x100 + 33, 0x101, 0x13c, 0x1fc, 0x200, -4, 0x0fd];

const regWrite = fc.record({
  offset: fc.oneof(fc.constantFrom(...REGISTERS), fc.integer({ min: -8, max: 0x210 })),
  value: fc.oneof(
    fc.constantFrom(0, 1, 2, 3, 4, 7, 8, 0x0f, 0x40, 0x80, 0x100, 0xffff, 0x7fff_ffff, 0xffff_ffff, 0xffff_fffe, 0xffff_fff0, 0x8000_0000),
    fc.nat(),
  ),
  width: fc.constantFrom(1, 2, 4, 4, 4, 4, 8, 3),
});
type RegWrite = typeof regWrite extends fc.Arbitrary<infer W> ? W : never;

const QUEUE_REGISTERS = [
  MmioReg.QueueNumMax, MmioReg.QueueNum, MmioReg.QueueReady, MmioReg.QueueDescLow, MmioReg.QueueDescHigh,
  MmioReg.QueueDriverLow, MmioReg.QueueDriverHigh, MmioReg.QueueDeviceLow, MmioReg.QueueDeviceHigh, MmioReg.QueueReset,
];

/** A selector (often one that names no queue), then writes to queue registers through it (R1). */
const selectedWrites = fc
  .tuple(
    fc.oneof(fc.constantFrom(0, 1, 7, 8, 0xffff_ffff, 0xffff_fffe, 0xffff_fff0, 0x8000_0000), fc.nat()),
    fc.array(fc.record({ offset: fc.constantFrom(...QUEUE_REGISTERS), value: regWrite.map((w) => w.value), width: fc.constant(4) }), {
      minLength: 1,
      maxLength: 4,
    }),
  )
  .map(([sel, writes]): RegWrite[] => [{ offset: MmioReg.QueueSel, value: sel, width: 4 }, ...writes]);

const regWrites = fc.array(fc.oneof(regWrite.map((w) => [w]), selectedWrites), { maxLength: 3 }).map((groups) => groups.flat());

const addr = fc.oneof(
  { weight: 6, arbitrary: fc.nat(FIELD_BYTES - 1).map((o) => BigInt(FIELD + o)) },
  { weight: 2, arbitrary: fc.constantFrom(...HEADERS).map(BigInt) },
  { weight: 1, arbitrary: fc.nat(600).map((back) => BigInt(RAM - back)) },
  { weight: 1, arbitrary: fc.constant(BigInt(TABLE)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(-0x4000_0000n, -16n, 2n ** 64n - 0x4000_0000n - 8n, 2n ** 53n, 2n ** 64n - 1n, 0x1000n, 0x2000n, 0x3000n),
  },
);

const desc = fc.record({
  addr,
  len: fc.oneof(fc.nat(1100), fc.constantFrom(0, 1, 15, 16, 17, 20, 32, 48, 512, 513, 1024, 0x8000_0000, 0xffff_ffff)),
  flags: fc.oneof({ weight: 8, arbitrary: fc.nat(7) }, { weight: 1, arbitrary: fc.nat(0xffff) }),
  next: fc.oneof(fc.nat(17), fc.constant(0xffff)),
});
type Desc = typeof desc extends fc.Arbitrary<infer D> ? D : never;

const header = fc.record({
  type: fc.oneof(fc.constantFrom(0, 0, 1, 1, 4, 8, 11, 13, 14, 10), fc.nat()),
  sector: fc.oneof(fc.nat(140).map(BigInt), fc.constantFrom(2n ** 64n - 1n, 2n ** 55n, 2n ** 53n + 1n, 127n, 128n)),
});

export const fuzzCase = fc.record({
  readOnly: fc.boolean(),
  /** Bits cleared from the offer; a few set beyond it. */
  dropFeatures: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((m) => m & ((1n << 40n) - 1n)),
  extraFeature: fc.option(fc.nat(63), { freq: 8 }),
  queueSize: fc.constantFrom(16, 16, 16, 16, 8, 4, 2, 1, 0, 3, 256, 512),
  pre: regWrites,
  descs: fc.array(desc, { minLength: 16, maxLength: 16 }),
  table: fc.array(desc, { maxLength: 18 }),
  headers: fc.array(header, { minLength: 4, maxLength: 4 }),
  heads: fc.array(fc.oneof({ weight: 9, arbitrary: fc.nat(15) }, { weight: 1, arbitrary: fc.constantFrom(16, 0xffff) }), { maxLength: 18 }),
  availIdx: fc.option(fc.nat(0xffff), { freq: 6 }),
  usedEvent: fc.nat(0xffff),
  post: regWrites,
});
export type FuzzCase = typeof fuzzCase extends fc.Arbitrary<infer C> ? C : never;

/** Offsets a PCI fuzz write aims at often: every common-config field, ISR, device config, notify, header, window. */
const PCI_BAR_OFFSETS = [
  ...Object.values(CommonCfg).map((o) => BarRegion.CommonCfg + o),
  BarRegion.IsrCfg,
  BarRegion.DeviceCfg + 32,
  BarRegion.NotifyCfg,
  BarRegion.NotifyCfg + 4,
];
const PCI_CONFIG_OFFSETS = [
  PciHeader.Command,
  PciHeader.Status,
  PciHeader.Bar0,
  PciHeader.InterruptLine,
  ...Object.values(CapField).map((o) => CapAt.PciCfg + o),
];

const pciWrite = fc.record({
  config: fc.boolean(),
  offset: fc.oneof(fc.constantFrom(...PCI_BAR_OFFSETS, ...PCI_CONFIG_OFFSETS), fc.integer({ min: -8, max: DEFAULT_BAR_SIZE + 8 })),
  value: regWrite.map((w) => w.value),
  width: fc.constantFrom(1, 2, 4, 4, 8, 3),
});
type PciWrite = typeof pciWrite extends fc.Arbitrary<infer W> ? W : never;

/** A fuzz case for a PCI disk: the MMIO-named case plus raw configuration-space and BAR0 writes. */
export const pciFuzzCase = fc.record({
  base: fuzzCase,
  pre: fc.array(pciWrite, { maxLength: 4 }),
  post: fc.array(pciWrite, { maxLength: 4 }),
});
export type PciFuzzCase = typeof pciFuzzCase extends fc.Arbitrary<infer C> ? C : never;

/** Queue 0's used ring as the function now holds it (reading common config has no side effects). */
function allowPciUsedRing(g: RawGuest, p: PciFunctionAccessor): void {
  const sel = p.readBar(BarRegion.CommonCfg + CommonCfg.QueueSelect, 2);
  p.writeBar(BarRegion.CommonCfg + CommonCfg.QueueSelect, 2, 0);
  const lo = p.readBar(BarRegion.CommonCfg + CommonCfg.QueueDeviceLo, 4);
  const hi = p.readBar(BarRegion.CommonCfg + CommonCfg.QueueDeviceHi, 4);
  p.writeBar(BarRegion.CommonCfg + CommonCfg.QueueSelect, 2, sel);
  g.allow(lo + hi * 2 ** 32, 6 + 8 * DEVICE_MAX_QUEUE);
}

function writePci(g: RawGuest, p: PciFunctionAccessor, writes: readonly PciWrite[]): void {
  for (const w of writes) {
    if (w.config) p.writeConfig(w.offset, w.width, w.value);
    else p.writeBar(w.offset, w.width, w.value);
    allowPciUsedRing(g, p);
  }
}

/** The used ring a register write may legitimately move the queue to (R2: re-programmed after QueueReady=0). */
function trackUsedRing(g: RawGuest, w: RegWrite, model: { lo: number; hi: number }): void {
  if (w.width !== 4 || w.offset % 4 !== 0) return;
  if (w.offset === MmioReg.QueueDeviceLow) model.lo = w.value >>> 0;
  else if (w.offset === MmioReg.QueueDeviceHigh) model.hi = w.value >>> 0;
  else return;
  g.allow(model.lo + model.hi * 2 ** 32, 6 + 8 * DEVICE_MAX_QUEUE);
}

function writeDesc(g: RawGuest, i: number, d: Desc, table: number): void {
  const at = table + 16 * i;
  g.w64(at, d.addr + BigInt(g.base));
  g.w32(at + 8, d.len);
  g.w16(at + 12, d.flags);
  g.w16(at + 14, d.next);
  // Device-writable, and not an indirect table (its WRITE flag is ignored, Q2).
  if (d.flags & 2 && !(d.flags & 4)) g.allow(Number(d.addr) + g.base, d.len);
}

/**
 * What no write may change (R1, R5): identity, the offer, QueueNumMax, and every config byte but writeback.
 * On PCI, queue_size stands for QueueNumMax and is the driver's to write, so it is left out; the PCI IDs
 * and the capability list are in instead.
 */
function fixedRegisters(g: RawGuest): number[] {
  g.setReg(MmioReg.QueueSel, 0);
  const registers: number[] = [MmioReg.MagicValue, MmioReg.Version, MmioReg.DeviceId, MmioReg.VendorId];
  if (!g.t.pci) registers.push(MmioReg.QueueNumMax);
  const out = registers.map((r) => g.reg(r));
  const p = g.t.pci;
  if (p) for (let at = 0; at < CapAt.PciCfg + 4; at += 4) if (at !== PciHeader.Command && at !== 0x0c && at !== PciHeader.Bar0 && at !== 0x3c) out.push(p.readConfig(at, 4));
  out.push(Number(g.offered() & 0xffff_ffffn), Number(g.offered() >> 32n));
  for (let i = 0; i < 60; i++) if (i !== 32) out.push(g.reg(0x100 + i, 1));
  return out;
}

/** Run one case; throws CaseFailure (FAIL or WEDGED) when the device misbehaves. With `pci`, on a PCI disk. */
export async function runFuzzCase(c: FuzzCase, pci?: { pre: readonly PciWrite[]; post: readonly PciWrite[] }): Promise<void> {
  const t = await sameThreadTarget({ ramBytes: RAM, diskBytes: 64 << 10, readOnly: c.readOnly, hangMs: 250, transport: pci ? 'pci' : 'mmio' });
  fillDisk(t.disk);
  const g = new RawGuest(t);
  g.diskBefore.set(t.disk);
  try {
    await g.reset();
    const fixed = fixedRegisters(g);
    g.setReg(MmioReg.Status, 1);
    g.setReg(MmioReg.Status, 3);
    let features = g.offered() & ~c.dropFeatures;
    if (c.extraFeature !== null) features |= 1n << BigInt(c.extraFeature);
    if (c.dropFeatures & 1n) features |= 1n << VirtioFeature.Version1;
    g.writeFeatures(features);
    g.setReg(MmioReg.Status, 11);
    const layout = layoutFor(g.base, Math.max(c.queueSize, 16));
    const model = { lo: layout.used, hi: 0 };
    for (const w of c.pre) {
      g.setReg(w.offset, w.value, w.width);
      trackUsedRing(g, w, model);
    }
    if (pci && t.pci) writePci(g, t.pci, pci.pre);
    g.programQueue({ ...layout, size: c.queueSize });
    g.allow(layout.used, 6 + 8 * DEVICE_MAX_QUEUE);
    c.headers.forEach((h, k) => g.header(g.base + HEADERS[k]!, h.type, h.sector));
    c.descs.forEach((d, i) => writeDesc(g, i, d, layout.desc));
    c.table.forEach((d, i) => writeDesc(g, i, d, g.base + TABLE));
    const ringSize = Math.max(1, Math.min(c.queueSize, 256));
    c.heads.forEach((h, i) => g.w16(layout.avail + 4 + 2 * (i % ringSize), h));
    g.w16(layout.avail + 4 + 2 * ringSize, c.usedEvent);
    g.setAvailIdx(c.availIdx ?? c.heads.length);
    g.setReg(MmioReg.Status, g.status | LIVE);
    g.notify();
    for (const w of c.post) {
      g.setReg(w.offset, w.value, w.width);
      trackUsedRing(g, w, model);
    }
    if (pci && t.pci) writePci(g, t.pci, pci.post);
    // A synchronous backend on the same thread: the device has done all it will inside the writes above.
    g.notify();
    if (t.hostErrors.length) throw new CaseFailure('FAIL', `an exception reached the host: ${t.hostErrors[0]}`);
    const bad = g.canaryViolations();
    if (bad.length) throw new CaseFailure('FAIL', `the device wrote guest RAM it was not given: ${bad.join(', ')}`);
    if (c.readOnly) g.expectDiskUnchanged('read-only disk');
    const now = fixedRegisters(g);
    const changed = fixed.findIndex((v, i) => v !== now[i]);
    if (changed >= 0) throw new CaseFailure('FAIL', `fixed register ${changed} changed: 0x${fixed[changed]!.toString(16)} → 0x${now[changed]!.toString(16)}`);
    await expectServes(g, 'after a reset');
    if (t.hostErrors.length) throw new CaseFailure('FAIL', `an exception reached the host: ${t.hostErrors[0]}`);
    const after = g.canaryViolations();
    if (after.length) throw new CaseFailure('FAIL', `after the reset, the device wrote guest RAM: ${after.join(', ')}`);
  } finally {
    await t.close();
  }
}

export const fuzzProperty = fc.asyncProperty(fuzzCase, (c) => runFuzzCase(c));
export const pciFuzzProperty = fc.asyncProperty(pciFuzzCase, (c) => runFuzzCase(c.base, c));
