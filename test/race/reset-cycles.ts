// The driver's half of the reset race (issue 9, R3 in notes/hardening-rules.md):
// the project's own driver resets and re-initialises a device that runs on
// another thread, tens of thousands of times, with requests in flight at
// every reset. Platform-neutral: the Node test (reset-race.test.ts) and the
// Chromium one (e2e/reset-race.spec.ts, through the worker host) both run it
// on a thread that may block in Atomics.wait.
//
// One cycle: init (its own Status ← 0 included) → a verified probe (a write
// read back, a read of known data) → submit 1–6 requests and kick → wait for
// none, some or all of them → reset in one of four ways:
//   raw        Status ← 0, then poll Status until it reads 0 (no sleeps);
//   tap        raw, and Status ← 0 again the moment it reads 0;
//   driver     driver.reset() (the driver's own wait, §2.4.2);
//   double     driver.reset() twice in a row;
//   init-only  nothing: the next init's Status ← 0 abandons them;
//   chase      raw, then Status ← 0 once more (the device is idle: the reset
//              is immediate and rings the doorbell); init's own Status ← 0
//              then waits until the device thread has begun the poll that
//              rang for and goes at once, landing while the device handles
//              the reset before it. Only where the rig can see the device's loop
//              (`devicePolls`, the Node rig); elsewhere the jitter below
//              scans for that moment by chance.
// Then init again, which writes 0 once more: the second Status ← 0 that
// arrives while the device may still be finishing the first reset.
//
// What is checked, and counted rather than stopped at, so that a failing run
// says how often:
// - refused FEATURES_OK (the driver's DriverError) and other init errors;
// - WEDGED: a reset whose Status never reads 0, or a request that never
//   completes, within a bounded number of polls;
// - late guest writes: when Status first reads 0 after a reset, the abandoned
//   requests' read buffers and the abandoned driver's whole arena (rings,
//   headers, status bytes) are filled with a canary; they are checked after
//   each of the next two cycles' probes, before that memory is used again
//   (three pools take turns, so nothing legitimately writes there meanwhile);
// - late disk writes (when the disk's bytes are visible here): the region the
//   abandoned writes went to is copied at the same moment and compared at the
//   same times;
// - bad data: the probe after re-init must read back what it wrote, and known
//   data where it read known data, with status OK.
// Also failures, and what says which interleaving hit: a non-zero Status write the
// device did not take (it read back without its bits: the write was dropped
// while a reset was still pending though Status read 0), and Status losing
// bits later with no reset written (a pending reset wiped a device the driver
// had brought up).

import { BlkRequestType, BlkStatus, SECTOR_SIZE } from '../../src/block/constants.ts';
import { DriverError, VirtioBlkDriver, arenaBytes, type Completion, type MmioAccessor, type Segment } from '../../src/driver/driver.ts';
import { DeviceStatus } from '../../src/virtio/device.ts';
import type { GuestMemory } from '../../src/virtio/memory.ts';
import { MmioReg } from '../../src/virtio/mmio/mmio.ts';
import { rng } from './async-backend.ts';

/** The disk's layout: known data, the probe's area, and two areas abandoned writes go to. */
export const DISK = {
  goldenBytes: 256 << 10,
  verifyOffset: 256 << 10,
  verifyBytes: 256 << 10,
  scratchOffset: [512 << 10, 528 << 10, 544 << 10] as const,
  scratchBytes: 16 << 10,
  bytes: 1 << 20,
} as const;

/** Guest RAM the race uses from `ramBase`. */
export const RACE_RAM_BYTES = 1 << 20;

const QUEUE_SIZE = 16;
const MAX_ABANDONED = 6;
const MAX_SECTORS = 16;
const BUF = MAX_SECTORS * SECTOR_SIZE;
/** Status reads one init or one reset may take before it counts as WEDGED. */
const STATUS_POLL_BUDGET = 4000;
/** Raw reset: reads of Status before each one starts to pause. */
const SPIN_READS = 20_000;
/** IRQ waits one request may take before it counts as WEDGED. */
const IRQ_POLL_BUDGET = 2000;
/** Most register reads between a reset and the next init's Status ← 0. */
const JITTER_READS = 4000;
/** Chase: most reads of the poll counter while waiting for the device thread to wake. */
const CHASE_SPINS = 5_000_000;
/** Failed cycles in a row after which the run stops (the device is gone for good). */
const MAX_FAILED_IN_A_ROW = 50;
/** Pauses after a failed cycle (fewer once the device thread has polled twice). */
const RECOVERY_PAUSES = 10;

/** Word `i` of the known data on the disk. */
function goldenWord(i: number): number {
  let x = Math.imul(i ^ 0x9e3779b9, 0x85ebca6b);
  x ^= x >>> 13;
  return Math.imul(x, 0xc2b2ae35) ^ (x >>> 16);
}

/** Fill the first DISK.goldenBytes of `disk` with the known data. */
export function fillGolden(disk: Uint8Array): void {
  const words = new Int32Array(disk.buffer, disk.byteOffset, DISK.goldenBytes >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = goldenWord(i);
}

function golden(offset: number, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  const words = new Int32Array(out.buffer);
  for (let i = 0; i < words.length; i++) words[i] = goldenWord((offset >>> 2) + i);
  return out;
}

export interface RaceRig {
  /** The register window on this thread (an `MmioRegisters` over the shared state). */
  mmio: MmioAccessor;
  /** Guest RAM as this thread sees it. */
  memory: GuestMemory;
  /** Guest address of the RACE_RAM_BYTES the race may use. */
  ramBase: number;
  /** The disk's bytes, when this thread can see them (shared): enables the late-disk-write check. */
  disk?: Uint8Array;
  /** Block until the IRQ line may have risen (bounded: a lost wake-up costs time, never a hang). */
  waitForIrq(): void;
  /** A short bounded pause between Status polls once spinning has gone on long. */
  pause(): void;
  /**
   * Word 0 counts the polls the device thread's loop has begun (its own
   * counter, bumped just before it calls `MmioDevice.poll`). Enables 'chase'.
   */
  devicePolls?: Int32Array;
  /** The device side's state in words, for a report when the run stops early (diagnostic only). */
  describeDevice?: () => string;
}

export interface RaceOptions {
  cycles: number;
  seed: number;
}

export type ResetMode = 'raw' | 'tap' | 'driver' | 'double' | 'init-only' | 'chase';

export interface RaceReport {
  cycles: number;
  /** Cycles that got through init and the probe. */
  cleanCycles: number;
  /** Status ← 0 writes. */
  resetWrites: number;
  modes: Record<ResetMode, number>;
  abandoned: number;
  /** Abandoned requests that completed before their reset (the cycle waited for them). */
  completedBeforeReset: number;
  // ---- failures (each must be 0) ----
  refusedFeaturesOk: number;
  /** DriverErrors from init other than a refused FEATURES_OK. */
  initErrors: number;
  wedged: number;
  lateGuestWrites: number;
  lateDiskWrites: number;
  badData: number;
  /** Non-OK status after re-init, a used entry for a head not in flight, DEVICE_NEEDS_RESET. */
  requestErrors: number;
  /** Non-zero Status writes the device did not take after Status read 0 (they read back without their bits). */
  droppedStatusWrites: number;
  /** Times Status lost bits the driver had set, with no reset written since. */
  wipedStatus: number;
  /** Why the run stopped early, if it did. */
  aborted: string | null;
  // ---- diagnostics ----
  /** Failed cycles by the way the reset before them was made (which interleaving hit). */
  failedAfter: Record<ResetMode, number>;
  /** Milliseconds spent in each phase (where a run's time goes; never asserted). */
  phaseMs: { init: number; probe: number; abandon: number; reset: number };
  /** The first few failures, described. */
  examples: string[];
}

/** What `failures` reads for a clean run. */
export const NO_FAILURES = {
  refusedFeaturesOk: 0,
  initErrors: 0,
  wedged: 0,
  lateGuestWrites: 0,
  lateDiskWrites: 0,
  badData: 0,
  requestErrors: 0,
  droppedStatusWrites: 0,
  wipedStatus: 0,
  aborted: null,
} as const;

/** The failure counts alone: a test expects them to equal NO_FAILURES. */
export function failures(r: RaceReport): { [K in keyof typeof NO_FAILURES]: RaceReport[K] } {
  const keys = Object.keys(NO_FAILURES) as Array<keyof typeof NO_FAILURES>;
  return Object.fromEntries(keys.map((k) => [k, r[k]])) as { [K in keyof typeof NO_FAILURES]: RaceReport[K] };
}

export class WedgedError extends Error {
  override readonly name = 'WedgedError';
}

class RequestError extends Error {
  override readonly name = 'RequestError';
}

const hex = (v: number): string => `0x${(v >>> 0).toString(16)}`;

/**
 * The driver's register accessor, watched: it bounds Status polling (WEDGED),
 * tells the race when Status first reads 0 after a reset write, and notes
 * Status writes the device dropped.
 */
class WatchedRegisters implements MmioAccessor {
  readonly #inner: MmioAccessor;
  readonly #report: RaceReport;
  readonly #note: (what: string) => void;
  /** Called when Status first reads 0 after a Status ← 0. */
  onResetSeen: () => void = () => {};
  phase = '';
  #statusReads = 0;
  #resetWritten = false;
  /** Bits the driver set since its last reset. */
  #expected = 0;

  constructor(inner: MmioAccessor, report: RaceReport, note: (what: string) => void) {
    this.#inner = inner;
    this.#report = report;
    this.#note = note;
  }

  /** Start a bounded phase (an init, a reset, a wait). */
  begin(phase: string): void {
    this.phase = phase;
    this.#statusReads = 0;
  }

  read(offset: number, width: number): number {
    const v = this.#inner.read(offset, width);
    if (offset === MmioReg.Status && width === 4) {
      if (++this.#statusReads > STATUS_POLL_BUDGET) {
        throw new WedgedError(`${this.phase}: Status still reads ${hex(v)} after ${STATUS_POLL_BUDGET} polls`);
      }
      if (v === 0 && this.#resetWritten) {
        this.#resetWritten = false;
        this.onResetSeen();
      }
    }
    return v;
  }

  /**
   * Set by 'chase': the next Status ← 0 waits until the device thread has
   * begun a poll after `seen` (bounded), then goes at once.
   */
  chase: { polls: Int32Array; seen: number } | null = null;

  write(offset: number, value: number, width: number): void {
    const chase = this.chase;
    if (chase && offset === MmioReg.Status && (value | 0) === 0) {
      this.chase = null;
      for (let i = 0; Atomics.load(chase.polls, 0) === chase.seen && i < CHASE_SPINS; i++) {
        /* until the device thread wakes for the reset before this one */
      }
    }
    this.#inner.write(offset, value, width);
    if (offset !== MmioReg.Status || width !== 4) return;
    if ((value | 0) === 0) {
      this.#report.resetWrites++;
      this.#resetWritten = true;
      this.#expected = 0;
      return;
    }
    // Did the device take it? (FEATURES_OK may be refused on its merits; the
    // other bits may not be dropped.) A diagnostic: the assertions are on
    // what the driver sees.
    const want = value & ~DeviceStatus.FeaturesOk & 0xff;
    const back = this.#inner.read(MmioReg.Status, 4);
    if ((back & want) !== want) {
      this.#report.droppedStatusWrites++;
      this.#note(`${this.phase}: Status ← ${hex(value)} dropped: reads back ${hex(back)}`);
    }
    this.#expected = value & ~DeviceStatus.Failed & 0xff;
  }

  /** Whether Status still has every bit the driver set since its reset; notes it when not. */
  checkNotWiped(where: string): boolean {
    const v = this.#inner.read(MmioReg.Status, 4);
    if ((v & this.#expected) === this.#expected) return true;
    this.#report.wipedStatus++;
    this.#note(`${where}: Status reads ${hex(v)}, the driver had set ${hex(this.#expected)} and written no reset`);
    this.#expected = v & 0xff;
    return false;
  }
}

/** Memory one cycle's requests use; three of them take turns. */
interface Pool {
  slot: number;
  arena: Segment;
  ins: Segment[];
  outs: Segment[];
  probeOut: Segment;
  probeIn: Segment;
  goldIn: Segment;
}

/** What a reset abandoned: memory that must not change any more. */
interface Abandoned {
  slot: number;
  cycle: number;
  /** What the device may write while a request is live: the arena (used ring, status bytes) and read buffers. */
  regions: Segment[];
  canary: number;
  /** Whether writes were abandoned (then the disk's scratch area is watched too). */
  writes: boolean;
  /** The disk region abandoned writes went to, as it was when Status read 0. */
  scratch: Uint8Array | null;
}

/** Index of the first byte of `bytes` that is not `value`, or -1. */
function firstNot(bytes: Uint8Array, value: number): number {
  const words = Math.floor(bytes.length / 4);
  const w = new Int32Array(bytes.buffer, bytes.byteOffset, words);
  const four = Math.imul(value & 0xff, 0x01010101);
  for (let i = 0; i < words; i++) if (w[i] !== four) return bytes.subarray(4 * i).findIndex((b) => b !== value) + 4 * i;
  for (let i = 4 * words; i < bytes.length; i++) if (bytes[i] !== value) return i;
  return -1;
}

/** Index of the first byte where `a` and `b` (same length, 4-byte aligned) differ, or -1. */
function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const words = Math.floor(a.length / 4);
  const wa = new Int32Array(a.buffer, a.byteOffset, words);
  const wb = new Int32Array(b.buffer, b.byteOffset, words);
  for (let i = 0; i < words; i++) {
    if (wa[i] !== wb[i]) for (let j = 4 * i; ; j++) if (a[j] !== b[j]) return j;
  }
  for (let i = 4 * words; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

export async function runResetCycles(rig: RaceRig, options: RaceOptions): Promise<RaceReport> {
  const report: RaceReport = {
    cycles: 0,
    cleanCycles: 0,
    resetWrites: 0,
    modes: { raw: 0, tap: 0, driver: 0, double: 0, 'init-only': 0, chase: 0 },
    abandoned: 0,
    completedBeforeReset: 0,
    ...NO_FAILURES,
    failedAfter: { raw: 0, tap: 0, driver: 0, double: 0, 'init-only': 0, chase: 0 },
    phaseMs: { init: 0, probe: 0, abandon: 0, reset: 0 },
    examples: [],
  };
  const random = rng(options.seed);
  const pick = (n: number): number => Math.floor(random() * n);
  let cycle = 0;
  const note = (what: string): void => {
    if (report.examples.length < 12) report.examples.push(`cycle ${cycle}: ${what}`);
  };
  const regs = new WatchedRegisters(rig.mmio, report, note);
  const mem = rig.memory;

  // ---- memory ----
  const arenaLen = Math.ceil(arenaBytes(QUEUE_SIZE) / 4096) * 4096;
  let bump = rig.ramBase;
  const take = (len: number): Segment => {
    const seg = { addr: bump, len };
    bump += Math.ceil(len / 4096) * 4096;
    if (bump > rig.ramBase + RACE_RAM_BYTES) throw new RangeError('the race needs more guest RAM');
    return seg;
  };
  const pools: Pool[] = [0, 1, 2].map((slot) => ({
    slot,
    arena: take(arenaLen),
    ins: Array.from({ length: MAX_ABANDONED }, () => take(BUF)),
    outs: Array.from({ length: MAX_ABANDONED }, () => take(BUF)),
    probeOut: take(BUF),
    probeIn: take(BUF),
    goldIn: take(BUF),
  }));

  // ---- canaries ----
  // Cycle c's pool is used again by cycle c + 3. What cycle c abandoned is
  // armed when Status first reads 0 after its reset, checked after the
  // probes of cycles c + 1 and c + 2, then let go. Nothing heavier than a
  // fill runs between a reset and the next init: the races live there.
  let pending: Abandoned | null = null;
  let armed: Abandoned[] = [];
  const scratchView = (slot: number): Uint8Array | null =>
    rig.disk ? rig.disk.subarray(DISK.scratchOffset[slot]!, DISK.scratchOffset[slot]! + DISK.scratchBytes) : null;
  const check = (a: Abandoned, when: string): void => {
    for (const r of a.regions) {
      const got = mem.view(r.addr, r.len)!;
      const at = firstNot(got, a.canary);
      if (at >= 0) {
        report.lateGuestWrites++;
        note(`${when}: guest ${hex(r.addr + at)} (cycle ${a.cycle}'s abandoned memory) changed to ${hex(got[at]!)} after Status read 0`);
        mem.fill(r.addr, r.len, a.canary);
      }
    }
    const now = scratchView(a.slot);
    if (a.scratch && now) {
      const at = firstDiff(now, a.scratch);
      if (at >= 0) {
        report.lateDiskWrites++;
        note(`${when}: disk byte ${DISK.scratchOffset[a.slot]! + at} (cycle ${a.cycle}'s abandoned write) landed after Status read 0`);
        a.scratch = now.slice();
      }
    }
  };
  // Status read 0 after a reset: from here on nothing may write what was abandoned.
  regs.onResetSeen = () => {
    const a = pending;
    if (!a) return;
    pending = null;
    for (const r of a.regions) mem.fill(r.addr, r.len, a.canary);
    if (a.writes) a.scratch = scratchView(a.slot)?.slice() ?? null;
    armed.push(a);
  };
  /** After the probes: look at everything armed; let go of what the next cycle's pool held. */
  const checkArmed = (): void => {
    const next = (cycle + 1) % pools.length;
    for (const a of armed) check(a, `after the probes of cycle ${cycle}`);
    armed = armed.filter((a) => a.slot !== next);
    // Abandoned, but no Status 0 seen since (its reset failed): nothing to hold it to.
    if (pending?.slot === next) pending = null;
  };

  // ---- requests ----
  const awaitIds = async (driver: VirtioBlkDriver, ids: number[], need: number, what: string): Promise<Map<number, Completion>> => {
    const got = new Map<number, Completion>();
    const want = new Set(ids);
    let mine = 0;
    const take = (): void => {
      for (const c of driver.reap()) {
        got.set(c.id, c);
        if (want.has(c.id)) mine++;
      }
    };
    for (let polls = 0; ; polls++) {
      driver.ackInterrupt();
      take();
      if (mine >= need) return got;
      // A completion published between our used.idx load and the used_event
      // store raised no interrupt: look once more before sleeping.
      take();
      if (mine >= need) return got;
      if (regs.read(MmioReg.Status, 4) & DeviceStatus.DeviceNeedsReset) throw new RequestError(`${what}: DEVICE_NEEDS_RESET`);
      if (polls >= IRQ_POLL_BUDGET) {
        regs.checkNotWiped(what);
        throw new WedgedError(`${what}: ${mine} of ${need} completions after ${IRQ_POLL_BUDGET} waits, Status ${hex(rig.mmio.read(MmioReg.Status, 4))}`);
      }
      rig.waitForIrq();
      await Promise.resolve();
    }
  };

  const init = async (pool: Pool): Promise<VirtioBlkDriver> => {
    regs.begin(`init (cycle ${cycle})`);
    const driver = await VirtioBlkDriver.init({ mmio: regs, memory: mem, arena: pool.arena, queueSize: QUEUE_SIZE });
    if (!regs.checkNotWiped(`after init (cycle ${cycle})`)) throw new WedgedError('DRIVER_OK wiped right after init');
    return driver;
  };

  const sectorIn = (offset: number, bytes: number, sectors: number): number =>
    (offset + pick(bytes / SECTOR_SIZE - sectors + 1) * SECTOR_SIZE) / SECTOR_SIZE;

  /** Requests after re-init: a write read back, and known data read. */
  const probe = async (driver: VirtioBlkDriver, pool: Pool): Promise<void> => {
    const sectors = 1 + pick(MAX_SECTORS);
    const bytes = sectors * SECTOR_SIZE;
    const sector = sectorIn(DISK.verifyOffset, DISK.verifyBytes, sectors);
    const data = new Uint8Array(bytes);
    for (let i = 0; i < bytes; i++) data[i] = (cycle * 7 + i * 13 + (i >> 9)) & 0xff;
    mem.write(pool.probeOut.addr, data);
    regs.begin(`probe write (cycle ${cycle})`);
    const w = driver.submit({ type: BlkRequestType.Out, sector, out: [{ addr: pool.probeOut.addr, len: bytes }] });
    driver.kick();
    const wc = (await awaitIds(driver, [w], 1, `probe write (cycle ${cycle})`)).get(w)!;
    if (wc.status !== BlkStatus.Ok) throw new RequestError(`probe write: status ${wc.status}`);

    const gSectors = 1 + pick(MAX_SECTORS);
    const gSector = sectorIn(0, DISK.goldenBytes, gSectors);
    mem.fill(pool.probeIn.addr, BUF, 0x5a);
    mem.fill(pool.goldIn.addr, BUF, 0x5a);
    regs.begin(`probe reads (cycle ${cycle})`);
    const r = driver.submit({ type: BlkRequestType.In, sector, in: [{ addr: pool.probeIn.addr, len: bytes }] });
    const g = driver.submit({ type: BlkRequestType.In, sector: gSector, in: split(pool.goldIn.addr, gSectors * SECTOR_SIZE, random() < 0.5) });
    driver.kick();
    const done = await awaitIds(driver, [r, g], 2, `probe reads (cycle ${cycle})`);
    for (const id of [r, g]) if (done.get(id)!.status !== BlkStatus.Ok) throw new RequestError(`probe read: status ${done.get(id)!.status}`);
    const back = new Uint8Array(bytes);
    mem.read(pool.probeIn.addr, back);
    const gBack = new Uint8Array(gSectors * SECTOR_SIZE);
    mem.read(pool.goldIn.addr, gBack);
    const wrong = back.findIndex((b, i) => b !== data[i]);
    const expect = golden(gSector * SECTOR_SIZE, gBack.length);
    const gWrong = gBack.findIndex((b, i) => b !== expect[i]);
    if (wrong >= 0 || gWrong >= 0) {
      report.badData++;
      note(wrong >= 0 ? `probe read back byte ${wrong} as ${hex(back[wrong]!)}, wrote ${hex(data[wrong]!)}` : `known data wrong at byte ${gWrong}`);
    }
  };

  /** Submit requests, wait for some of them, and leave the rest to the reset. */
  const abandon = async (driver: VirtioBlkDriver, pool: Pool): Promise<void> => {
    const n = 1 + pick(MAX_ABANDONED);
    const ids: number[] = [];
    const reads: Segment[] = [];
    let writes = false;
    const lateKick = random() < 0.5;
    for (let k = 0; k < n; k++) {
      const sectors = 1 + pick(MAX_SECTORS);
      const bytes = sectors * SECTOR_SIZE;
      const kind = random();
      if (kind < 0.6) {
        reads.push({ addr: pool.ins[k]!.addr, len: bytes });
        ids.push(driver.submit({ type: BlkRequestType.In, sector: sectorIn(0, DISK.goldenBytes, sectors), in: split(pool.ins[k]!.addr, bytes, random() < 0.5) }));
      } else if (kind < 0.95) {
        mem.fill(pool.outs[k]!.addr, bytes, (cycle + k) & 0xff);
        const sector = sectorIn(DISK.scratchOffset[pool.slot]!, DISK.scratchBytes, sectors);
        writes = true;
        ids.push(driver.submit({ type: BlkRequestType.Out, sector, out: split(pool.outs[k]!.addr, bytes, random() < 0.5) }));
      } else {
        ids.push(driver.submit({ type: BlkRequestType.Flush }));
      }
      if (!lateKick) driver.kick();
    }
    driver.kick();
    report.abandoned += n;
    pending = { slot: pool.slot, cycle, regions: [pool.arena, ...reads], canary: 0xc0 | (cycle & 0x3f), writes, scratch: null };
    const wait = random() < 0.5 ? 0 : pick(n + 1);
    if (wait > 0) {
      regs.begin(`abandoned requests (cycle ${cycle})`);
      await awaitIds(driver, ids, wait, `abandoned requests (cycle ${cycle})`);
      report.completedBeforeReset += wait;
    }
  };

  /** Status ← 0, then poll until it reads 0: spinning first, then pausing between reads. */
  /**
   * `tap`: the moment Status reads 0, write 0 again, with nothing in
   * between (the canary fill waits until after it): a second reset that
   * lands while the device is still finishing the first.
   */
  const rawReset = (tap = false): void => {
    regs.begin(`${tap ? 'tap' : 'raw'} reset (cycle ${cycle})`);
    regs.write(MmioReg.Status, 0, 4);
    let zero = false;
    for (let i = 0; i < SPIN_READS && !zero; i++) zero = rig.mmio.read(MmioReg.Status, 4) === 0;
    if (zero && tap) regs.write(MmioReg.Status, 0, 4);
    while (regs.read(MmioReg.Status, 4) !== 0) rig.pause();
  };

  const jitter = (reads: number): void => {
    for (let i = 0; i < reads; i++) rig.mmio.read(MmioReg.InterruptStatus, 4);
  };

  const reset = async (driver: VirtioBlkDriver, mode: ResetMode): Promise<void> => {
    report.modes[mode]++;
    switch (mode) {
      case 'raw':
        rawReset();
        return;
      case 'tap':
        rawReset(true);
        return;
      case 'driver':
        regs.begin(`driver.reset (cycle ${cycle})`);
        await driver.reset();
        return;
      case 'double':
        regs.begin(`driver.reset ×2, first (cycle ${cycle})`);
        await driver.reset();
        regs.begin(`driver.reset ×2, second (cycle ${cycle})`);
        await driver.reset();
        return;
      case 'init-only':
        return;
      case 'chase': {
        rawReset();
        const polls = rig.devicePolls!;
        const seen = Atomics.load(polls, 0);
        regs.begin(`chase reset (cycle ${cycle})`);
        regs.write(MmioReg.Status, 0, 4);
        regs.chase = { polls, seen };
        return;
      }
    }
  };

  /** After a failed cycle: reset, and give the device thread a few polls to catch up before the next init. */
  const recover = (): void => {
    try {
      rawReset();
    } catch (err) {
      note(`recovery reset: ${String(err)}`);
    }
    const polls = rig.devicePolls;
    const seen = polls ? Atomics.load(polls, 0) : 0;
    for (let i = 0; i < RECOVERY_PAUSES && (!polls || Atomics.load(polls, 0) - seen < 2); i++) rig.pause();
  };

  const MODES: ResetMode[] = ['raw', 'raw', 'tap', 'tap', 'tap', 'driver', 'driver', 'double', 'double', 'init-only'];
  if (rig.devicePolls) MODES.push('chase', 'chase', 'chase');
  let failedInARow = 0;
  /** How the last reset was made ('raw' for the recovery after a failure, and before the first cycle). */
  let lastMode: ResetMode = 'raw';
  for (cycle = 0; cycle < options.cycles; cycle++) {
    report.cycles++;
    const pool = pools[cycle % pools.length]!;
    let checked = false;
    try {
      let t = performance.now();
      const lap = (phase: keyof RaceReport['phaseMs']): void => {
        const now = performance.now();
        report.phaseMs[phase] += now - t;
        t = now;
      };
      const driver = await init(pool);
      lap('init');
      await probe(driver, pool);
      report.cleanCycles++;
      checkArmed();
      checked = true;
      lap('probe');
      await abandon(driver, pool);
      lap('abandon');
      const mode = MODES[pick(MODES.length)]!;
      lastMode = mode;
      await reset(driver, mode);
      // Half the time, let the next init's Status ← 0 come a little later
      // (up to a few thousand register reads): the device thread wakes for
      // the reset and polls meanwhile, and the second reset must be right
      // whenever it lands in that.
      if (mode !== 'chase' && random() < 0.5) jitter(pick(JITTER_READS));
      lap('reset');
      failedInARow = 0;
    } catch (err) {
      report.failedAfter[lastMode]++;
      lastMode = 'raw';
      if (err instanceof WedgedError) report.wedged++;
      else if (err instanceof DriverError && /FEATURES_OK/.test(err.message)) report.refusedFeaturesOk++;
      else if (err instanceof DriverError && /init/.test(regs.phase)) report.initErrors++;
      else report.requestErrors++;
      note(`${regs.phase}: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
      if (++failedInARow >= MAX_FAILED_IN_A_ROW) {
        report.aborted = `${failedInARow} failed cycles in a row at cycle ${cycle}${rig.describeDevice ? ` (${rig.describeDevice()})` : ''}`;
        break;
      }
      recover();
    }
    if (!checked) checkArmed();
  }
  // Last reset, then one last look at everything abandoned.
  try {
    rawReset();
  } catch (err) {
    report.wedged++;
    note(`final reset: ${String(err)}`);
  }
  for (const a of armed) check(a, 'at the end');
  return report;
}

/** One or two segments, as a bio of scattered pages would be. */
function split(addr: number, bytes: number, two: boolean): Segment[] {
  if (!two || bytes <= SECTOR_SIZE) return [{ addr, len: bytes }];
  const first = Math.floor(bytes / SECTOR_SIZE / 2) * SECTOR_SIZE;
  return [
    { addr, len: first },
    { addr: addr + first, len: bytes - first },
  ];
}

/** A one-line summary of a report, for test output. */
export function summary(name: string, r: RaceReport, ms: number): string {
  const f = failures(r);
  return (
    `${name}: ${r.cycles} cycles (${r.cleanCycles} clean) in ${(ms / 1000).toFixed(1)} s, ${r.resetWrites} Status←0 writes, ` +
    `modes ${JSON.stringify(r.modes)}, ${r.abandoned} requests abandoned (${r.completedBeforeReset} completed first); ` +
    `failures ${JSON.stringify(f)}; failed cycles by the reset before them ${JSON.stringify(r.failedAfter)}; ` +
    `ms by phase ${JSON.stringify(Object.fromEntries(Object.entries(r.phaseMs).map(([k, v]) => [k, Math.round(v)])))}` +
    (r.examples.length ? `\n  ${r.examples.join('\n  ')}` : '')
  );
}
