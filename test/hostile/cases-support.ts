// Verdict helpers shared by the case files: each checks one outcome and
// returns the verdict it stands for, or fails the case saying what it saw.

import { BlkStatus } from '../../src/block/constants.ts';
import { MmioInterrupt, MmioReg } from '../../src/virtio/mmio/mmio.ts';
import { check, fail, type Outcome, type RawGuest, type Req, type Seg } from './guest.ts';
import type { Verdict } from './runner.ts';

export const SECTOR = 512;

export function describe(o: Outcome): string {
  return `${o.used ? `used {id: ${o.used.id}, len: ${o.used.len}}` : 'no used element'}${o.needsReset ? ', DEVICE_NEEDS_RESET' : ''}`;
}

/** Completed with `status` and used.len `len` (data bytes written + 1). */
export function served(g: RawGuest, o: Outcome, head: number, r: Req, len: number, what: string, status: number = BlkStatus.Ok): Verdict {
  check(o.used && !o.needsReset, `${what}: want a completion, got ${describe(o)}`);
  check(o.used.id === head, `${what}: used.id ${o.used.id}, want ${head}`);
  check(o.used.len === len, `${what}: used.len ${o.used.len}, want ${len}`);
  const s = g.r8(r.status);
  check(s === status, `${what}: status ${s}, want ${status}`);
  return 'PASS';
}

/** Every byte of `data` (guest addresses with lengths) equals the disk from `sector`. */
export function expectDiskData(g: RawGuest, sector: number, data: ReadonlyArray<readonly [number, number]>, what: string): void {
  let at = sector * SECTOR;
  for (const [addr, len] of data) {
    const got = g.bytes(addr, len);
    for (let i = 0; i < len; i++) {
      if (got[i] !== g.t.disk[at + i]) fail(`${what}: wrong data at disk byte ${at + i}`);
    }
    at += len;
  }
}

/** A malformed chain: completed with used.len 0 and none of its writable bytes touched (§2.7.5, Q rules). */
export function malformed(g: RawGuest, o: Outcome, head: number, what: string, segs: ReadonlyArray<Seg> = []): Verdict {
  check(o.used && !o.needsReset, `${what}: want used.len 0, got ${describe(o)}`);
  check(o.used.id === head && o.used.len === 0, `${what}: used {id: ${o.used.id}, len: ${o.used.len}}, want {id: ${head}, len: 0}`);
  for (const s of segs) {
    if (s.write && typeof s.addr === 'number') check(g.unchanged(s.addr, s.len), `${what}: a malformed chain's buffer at 0x${s.addr.toString(16)} was written`);
  }
  return 'REJECT';
}

/** Refused with an error status in one of `statuses` and used.len 1 (nothing but the status written). */
export function refused(g: RawGuest, o: Outcome, head: number, r: Req, what: string, statuses: readonly number[] = [BlkStatus.IoErr]): Verdict {
  check(o.used && !o.needsReset, `${what}: want an error status, got ${describe(o)}`);
  check(o.used.id === head, `${what}: used.id ${o.used.id}, want ${head}`);
  const s = g.r8(r.status);
  check(statuses.includes(s), `${what}: status ${s}, want one of ${statuses.join(', ')}`);
  check(o.used.len === 1, `${what}: used.len ${o.used.len} for a refused request, want 1`);
  return 'REJECT';
}

/** The ring (or the device) was declared unusable: DEVICE_NEEDS_RESET, a config interrupt, nothing published (§2.1.2). */
export async function needsReset(g: RawGuest, o: Outcome | null, what: string): Promise<Verdict> {
  if (o) check(o.needsReset && !o.used, `${what}: want DEVICE_NEEDS_RESET, got ${describe(o)}`);
  else check(g.status & 64, `${what}: want DEVICE_NEEDS_RESET, status 0x${g.status.toString(16)}`);
  // The device sets the status bit, then raises the interrupt: another thread may see the first alone for a moment.
  const interrupted = await g.waitFor(() => (g.reg(MmioReg.InterruptStatus) & MmioInterrupt.ConfigChange) !== 0);
  check(interrupted, `${what}: DEVICE_NEEDS_RESET without a config interrupt`);
  check(g.usedIdx() === g.lastUsed, `${what}: a used element published after DEVICE_NEEDS_RESET`);
  return 'REJECT';
}

/** Nothing consumed: used.idx did not move once the device had handled everything. */
export async function nothingConsumed(g: RawGuest, what: string): Promise<void> {
  await g.t.settle();
  await g.t.settle();
  check(g.usedIdx() === g.lastUsed, `${what}: the device published a used element`);
}

/** Every register word (0x000–0x0fc) and config byte, as the driver reads them. */
export function snapshotRegisters(g: RawGuest): number[] {
  const out: number[] = [];
  for (let off = 0; off < 0x100; off += 4) {
    if (off === MmioReg.InterruptStatus || off === MmioReg.DeviceFeatures) continue;
    out.push(g.reg(off));
  }
  for (const sel of [0, 1, 2]) {
    g.setReg(MmioReg.DeviceFeaturesSel, sel);
    out.push(g.reg(MmioReg.DeviceFeatures));
  }
  g.setReg(MmioReg.DeviceFeaturesSel, 0);
  for (let i = 0; i < 60; i++) out.push(g.reg(0x100 + i, 1));
  return out;
}

export function expectSameRegisters(before: number[], after: number[], what: string): void {
  for (let i = 0; i < before.length; i++) {
    if (before[i] !== after[i]) fail(`${what}: register snapshot entry ${i} was 0x${before[i]!.toString(16)}, now 0x${after[i]!.toString(16)}`);
  }
}
