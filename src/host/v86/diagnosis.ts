// What a v86 disk is doing right now, for the moment a guest stops making
// progress: the one IndexedDB boot in about ten that stalled after fstrim
// (docs/v86.md) left only a silent serial console behind. `diagnose()`
// reads, without changing anything, each place a request or its interrupt
// could be stuck — the backend (calls not yet settled), the doorbell
// (events rung, not yet run), the ring (chains not popped, completions not
// reaped), the line (ISR, level, raises and lowers) and v86's own CPU and
// 8259 PIC — and says in one sentence where the chain of events stops.
//
// Cheap by construction: counters and timestamps are written only where
// the adapter already does work (a backend call, a doorbell, a change of
// line level, an ISR read), never per register access; everything else is
// read when asked.
//
// `kick()` then pokes the one place named, the way a watchdog would: run
// the queue as if notified, or lower and raise the line again. Whether the
// guest moves on after it is the proof of where the wake-up was lost.

import type { MaybePromise } from '../../backends/backend.ts';
import type { SplitQueue } from '../../virtio/queue.ts';
import type { GuestMemory } from '../../virtio/memory.ts';
import { Q, W, queueViews, type TransportState } from '../../virtio/transport/layout.ts';
import { joinU64 } from '../../virtio/u64.ts';

const now = (): number => performance.now();

/** Asynchronous backend calls the device has made and not yet seen settle (jitDirtyingBackend counts them). */
export class PendingCalls {
  /** In call order: the first is the oldest. */
  readonly #pending = new Map<number, { what: string; offset: number; length: number; startMs: number }>();
  #next = 0;
  started = 0;
  settled = 0;
  lastSettledMs = -1;

  /** Count `result` if it is a promise; returns what the caller must return. */
  track(what: string, offset: number, length: number, result: MaybePromise): MaybePromise {
    if (result === undefined) return result;
    const id = this.#next++;
    this.started++;
    this.#pending.set(id, { what, offset, length, startMs: now() });
    return result.finally(() => {
      this.#pending.delete(id);
      this.settled++;
      this.lastSettledMs = now();
    });
  }

  get outstanding(): number {
    return this.#pending.size;
  }

  /** The oldest call still outstanding, as `read 4096+512`. */
  get oldest(): { what: string; startMs: number } | null {
    for (const c of this.#pending.values()) return { what: c.length < 0 ? c.what : `${c.what} ${c.offset}+${c.length}`, startMs: c.startMs };
    return null;
  }
}

/** What the adapter logs as it goes: a doorbell scheduled, the device run, the line raised or lowered, an ISR read (and one that found nothing). */
export type LineEvent = 'doorbell' | 'run' | 'raise' | 'lower' | 'isrRead' | 'emptyIsrRead';

/** How many times each `LineEvent` happened, and when last (`performance.now()`; -1: never). */
export class LineLog {
  readonly count: Record<LineEvent, number> = { doorbell: 0, run: 0, raise: 0, lower: 0, isrRead: 0, emptyIsrRead: 0 };
  readonly lastMs: Record<LineEvent, number> = { doorbell: -1, run: -1, raise: -1, lower: -1, isrRead: -1, emptyIsrRead: -1 };

  mark(event: LineEvent): void {
    this.count[event]++;
    this.lastMs[event] = now();
  }
}

/** The split ring as guest memory holds it, beside the device's own indices. */
export interface RingState {
  size: number;
  /** Driver side: avail.idx, avail.flags, used_event (what the driver last reaped, when it asked for interrupts). */
  availIdx: number;
  availFlags: number;
  usedEvent: number;
  /** Device side, in guest memory: used.idx, used.flags, avail_event. */
  usedIdx: number;
  usedFlags: number;
  availEvent: number;
  /** The device's own: next avail slot it will read, next used slot it will fill. */
  deviceNextAvail: number;
  deviceNextUsed: number;
}

/** v86's CPU and 8259 PIC, where this build exposes them (every field optional). */
export interface V86CpuState {
  /** The PIC input our INTA is routed to (from the PIIX3's PIRQ registers), if readable. */
  irq: number | null;
  halted: boolean | null;
  interruptsEnabled: boolean | null;
  eip: number | null;
  /** Master then slave: v86's Pic0 bytes by name (irq_mask has a bit set per enabled input). */
  pic: Array<Record<string, number>> | null;
}

export interface V86DiskDiagnosis {
  atMs: number;
  ring: RingState | null;
  device: { inFlight: number; completed: number; reads: number; writes: number; discards: number; flushes: number; ioErrors: number };
  backend: { started: number; settled: number; outstanding: number; oldest: string | null; oldestAgeMs: number | null; lastSettledAgoMs: number | null };
  doorbell: { events: number; notifyMask: number; rung: number; runs: number; lastDoorbellAgoMs: number | null; lastRunAgoMs: number | null };
  line: {
    isr: number;
    level: boolean;
    raises: number;
    lowers: number;
    isrReads: number;
    emptyIsrReads: number;
    interruptsRaised: number;
    lastRaiseAgoMs: number | null;
    lastLowerAgoMs: number | null;
    lastIsrReadAgoMs: number | null;
  };
  cpu: V86CpuState;
  /** Where the chain of events stops, in one sentence. */
  verdict: string;
  /** What `kick()` would poke: 'queue', 'interrupt', or null when nothing on the disk's side is pending. */
  kick: 'queue' | 'interrupt' | null;
}

/** What `diagnose` reads. */
export interface DiagnosisSources {
  state: TransportState;
  memory: GuestMemory;
  queue: SplitQueue | null;
  device: { inFlight: number; stats: Record<'completed' | 'reads' | 'writes' | 'discards' | 'flushes' | 'ioErrors', number> };
  calls: PendingCalls;
  log: LineLog;
  level: boolean;
  cpu: V86CpuState;
}

const ago = (ms: number, at: number): number | null => (ms < 0 ? null : Math.round(at - ms));
const d16 = (a: number, b: number): number => (a - b) & 0xffff;

function readRing(state: TransportState, memory: GuestMemory, queue: SplitQueue | null): RingState | null {
  if (!queue) return null;
  const v = queueViews(state)[0]!;
  const size = Atomics.load(v, Q.SnapNum) >>> 0;
  const avail = joinU64(Atomics.load(v, Q.SnapDriverLo), Atomics.load(v, Q.SnapDriverHi));
  const used = joinU64(Atomics.load(v, Q.SnapDeviceLo), Atomics.load(v, Q.SnapDeviceHi));
  if (size === 0 || !memory.contains(avail, 6 + 2 * size) || !memory.contains(used, 6 + 8 * size)) return null;
  return {
    size,
    availFlags: memory.readU16(avail),
    availIdx: memory.readU16(avail + 2),
    usedEvent: memory.readU16(avail + 4 + 2 * size),
    usedFlags: memory.readU16(used),
    usedIdx: memory.readU16(used + 2),
    availEvent: memory.readU16(used + 4 + 8 * size),
    deviceNextAvail: queue.lastAvailIdx,
    deviceNextUsed: queue.usedIdx,
  };
}

/** Read where every request and interrupt stands; changes nothing. */
export function diagnose(src: DiagnosisSources): V86DiskDiagnosis {
  const at = now();
  const { calls, log, device, cpu } = src;
  const ring = readRing(src.state, src.memory, src.queue);
  const isr = Atomics.load(src.state, W.InterruptStatus);
  const oldest = calls.oldest;
  const diagnosis: Omit<V86DiskDiagnosis, 'verdict' | 'kick'> = {
    atMs: Math.round(at),
    ring,
    device: { inFlight: device.inFlight, ...pick(device.stats) },
    backend: {
      started: calls.started,
      settled: calls.settled,
      outstanding: calls.outstanding,
      oldest: oldest?.what ?? null,
      oldestAgeMs: oldest ? Math.round(at - oldest.startMs) : null,
      lastSettledAgoMs: ago(calls.lastSettledMs, at),
    },
    doorbell: {
      events: Atomics.load(src.state, W.Events),
      notifyMask: Atomics.load(src.state, W.NotifyMask),
      rung: log.count.doorbell,
      runs: log.count.run,
      lastDoorbellAgoMs: ago(log.lastMs.doorbell, at),
      lastRunAgoMs: ago(log.lastMs.run, at),
    },
    line: {
      isr,
      level: src.level,
      raises: log.count.raise,
      lowers: log.count.lower,
      isrReads: log.count.isrRead,
      emptyIsrReads: log.count.emptyIsrRead,
      interruptsRaised: Atomics.load(src.state, W.InterruptCount),
      lastRaiseAgoMs: ago(log.lastMs.raise, at),
      lastLowerAgoMs: ago(log.lastMs.lower, at),
      lastIsrReadAgoMs: ago(log.lastMs.isrRead, at),
    },
    cpu,
  };
  return { ...diagnosis, ...verdictOf(diagnosis) };
}

function pick(stats: DiagnosisSources['device']['stats']): Omit<V86DiskDiagnosis['device'], 'inFlight'> {
  const { completed, reads, writes, discards, flushes, ioErrors } = stats;
  return { completed, reads, writes, discards, flushes, ioErrors };
}

/** Walk the chain driver → doorbell → device → backend → used ring → line → PIC → CPU; name the first link that holds. */
function verdictOf(d: Omit<V86DiskDiagnosis, 'verdict' | 'kick'>): Pick<V86DiskDiagnosis, 'verdict' | 'kick'> {
  const { ring, backend, doorbell, line, cpu } = d;
  if (backend.outstanding > 0) {
    return { verdict: `storage: ${backend.outstanding} backend call(s) unsettled, the oldest (${backend.oldest}) for ${backend.oldestAgeMs} ms`, kick: null };
  }
  if (doorbell.events !== 0) {
    return { verdict: `doorbell: events 0x${doorbell.events.toString(16)} rung and never run (last ring ${doorbell.lastDoorbellAgoMs} ms ago, last run ${doorbell.lastRunAgoMs} ms ago)`, kick: 'queue' };
  }
  if (d.device.inFlight > 0) {
    return { verdict: `device: ${d.device.inFlight} request(s) in flight though the backend has settled every call: a completion was dropped`, kick: null };
  }
  if (!ring) return { verdict: 'no live queue (driver not set up, or reset)', kick: null };
  const unpopped = d16(ring.availIdx, ring.deviceNextAvail);
  if (unpopped > 0) {
    const asked = ring.availEvent === ring.deviceNextAvail;
    return {
      verdict: `ring: ${unpopped} chain(s) available the device never popped; avail_event ${ring.availEvent} ${asked ? 'asked for the notification, so the driver did not kick (or the kick was lost)' : 'was stale'}`,
      kick: 'queue',
    };
  }
  if (ring.usedIdx !== ring.deviceNextUsed) {
    return { verdict: `ring: ${d16(ring.deviceNextUsed, ring.usedIdx)} completion(s) pushed and never published`, kick: null };
  }
  // used_event is the driver's last reaped index while it wants interrupts (Linux writes 0 while it polls).
  const unreaped = d16(ring.usedIdx, ring.usedEvent);
  if (unreaped === 0) {
    return { verdict: 'idle: every chain the driver made available is answered and reaped; the guest is not waiting on this disk', kick: null };
  }
  const head = `${unreaped} completion(s) published past used_event ${ring.usedEvent} (used.idx ${ring.usedIdx})`;
  if (line.isr === 0) {
    return { verdict: `interrupt: ${head}, ISR 0 and the line ${line.level ? 'high (!)' : 'low'}: the device never raised it, or the guest read the ISR and did not reap`, kick: 'interrupt' };
  }
  if (!line.level) return { verdict: `interrupt: ${head}, ISR 0x${line.isr.toString(16)} but the line is low (INTx disabled?)`, kick: 'interrupt' };
  const master = cpu.pic?.[0];
  const slave = cpu.pic?.[1];
  if (cpu.irq !== null && master && slave) {
    const pic = cpu.irq < 8 ? master : slave;
    const bit = 1 << (cpu.irq & 7);
    const bits = (p: Record<string, number>, b: number): string =>
      `irr ${p.irr! & b ? 1 : 0}, isr ${p.isr! & b ? 1 : 0}, enabled ${p.irq_mask! & b ? 1 : 0}, value ${p.irq_value! & b ? 1 : 0}, level-mode ${p.elcr! & b ? 1 : 0}`;
    // A slave input reaches the CPU through the master's IR2: an IR2 left in service blocks it.
    const cascade = cpu.irq < 8 ? '' : `; master IR2 (cascade): ${bits(master, 1 << 2)}`;
    const where = `PIC irq ${cpu.irq}: ${bits(pic, bit)}${cascade}`;
    return { verdict: `interrupt: ${head}, ISR 0x${line.isr.toString(16)}, line high; ${where}; CPU halted ${cpu.halted}, IF ${cpu.interruptsEnabled}`, kick: 'interrupt' };
  }
  return { verdict: `interrupt: ${head}, ISR 0x${line.isr.toString(16)}, line high, not taken by the guest`, kick: 'interrupt' };
}

/** One block of text for a test log: the verdict, then every field. */
export function formatDiagnosis(d: V86DiskDiagnosis): string {
  const { verdict, kick, ...fields } = d;
  return [`verdict: ${verdict}`, `kick: ${kick ?? 'none'}`, ...Object.entries(fields).map(([k, v]) => `${k}: ${JSON.stringify(v)}`)].join('\n');
}

/** v86's Pic0 fields, in the order `cpu.get_state_pic()` returns them (index 5 holds the slave's state on the master). */
const PIC_FIELDS = ['irq_mask', 'irq_map', 'isr', 'irr', 'master', 'dummy', 'expect_icw4', 'state', 'read_isr', 'auto_eoi', 'elcr', 'irq_value', 'special_mask_mode'];

type Bag = Record<string, unknown>;
const bag = (v: unknown): Bag | null => (v !== null && typeof v === 'object' ? (v as Bag) : null);
const first = (v: unknown): number | null => {
  const n = (bag(v) as ArrayLike<unknown> | null)?.[0];
  return typeof n === 'number' ? n : null;
};

function picBytes(state: unknown): Record<string, number> | null {
  if (!Array.isArray(state)) return null;
  const out: Record<string, number> = {};
  PIC_FIELDS.forEach((name, i) => {
    if (typeof state[i] === 'number') out[name] = state[i];
  });
  return out;
}

/**
 * v86's CPU and PIC state, read through internals the adapter does not
 * otherwise need (`in_hlt`, `flags`, `instruction_pointer`,
 * `get_state_pic`, the PCI bus's `device_spaces` and `isa_bridge_space8`):
 * whatever this build lacks reads null, nothing throws.
 */
export function readV86CpuState(cpu: unknown, pciId: number): V86CpuState {
  const c = bag(cpu);
  const flags = first(c?.flags);
  let pic: V86CpuState['pic'] = null;
  try {
    const master = typeof c?.get_state_pic === 'function' ? (c.get_state_pic as () => unknown)() : null;
    const m = picBytes(master);
    const s = picBytes(Array.isArray(master) ? master[5] : null);
    if (m && s) pic = [m, s];
  } catch {
    pic = null;
  }
  let irq: number | null = null;
  const pci = bag(bag(c?.devices)?.pci);
  const space = (bag(pci?.device_spaces) as ArrayLike<unknown> | null)?.[pciId];
  const bridge = pci?.isa_bridge_space8 as ArrayLike<number> | undefined;
  const pinWord = (bag(space) as ArrayLike<unknown> | null)?.[15];
  if (typeof pinWord === 'number' && bridge) {
    // v86's pci.raise_irq: PIRQ = (pin − 1 + device − 1) mod 4, routed by the PIIX3 register 0x60 + PIRQ.
    const pin = (pinWord >> 8) & 0xff;
    const routed = bridge[0x60 + ((pin - 1 + (((pciId >> 3) - 1) & 0xff)) & 3)];
    irq = typeof routed === 'number' ? routed : null;
  }
  const halted = first(c?.in_hlt);
  return {
    irq,
    halted: halted === null ? null : halted !== 0,
    interruptsEnabled: flags === null ? null : (flags & 0x200) !== 0,
    eip: first(c?.instruction_pointer),
    pic,
  };
}
