// Workloads a guest (vCPU) runs through the driver: random and sequential
// reads and writes at a chosen queue depth, and `verify`, which checks every
// read against a model of the disk while mixing in flushes, write-zeroes and
// discards. The demo's guest worker and the e2e tests both run these.
//
// Concurrency is what the device sees from a real guest: up to `queueDepth`
// chains in the ring at once, completed in whatever order the device picks.
// `verify` keeps its model exact by never letting two in-flight requests
// touch the same sector when one of them changes it (a block layer gives no
// order between overlapping in-flight requests either). Discarded sectors may
// read as zeroes or as their old bytes (BlockBackend's contract), so they are
// "unknown" until written again.

import { BlkRequestType, BlkStatus, SECTOR_SIZE } from '../block/constants.ts';
import type { Segment, VirtioBlkDriver } from '../driver/driver.ts';
import { latencyBucket, latencyHistogram } from './latency.ts';

export const WorkloadKind = {
  Verify: 'verify',
  RandRead: 'randread',
  RandWrite: 'randwrite',
  RandRw: 'randrw',
  SeqRead: 'seqread',
  SeqWrite: 'seqwrite',
} as const;
export type WorkloadKind = (typeof WorkloadKind)[keyof typeof WorkloadKind];

export interface WorkloadOptions {
  kind: WorkloadKind;
  /** Requests kept in flight, 1 to the queue size. */
  queueDepth: number;
  /** Bytes per request (a multiple of 512); `verify` picks sizes up to this. */
  blockBytes: number;
  /** Stop after this many requests (default: until `shouldStop` says so). */
  ops?: number;
  /** Polled between completions; return true to stop. */
  shouldStop?: () => boolean;
  /** Seed of the pseudo-random sequence. */
  seed?: number;
  /** Sectors the workload may touch: [0, spanSectors). Default: the whole disk. */
  spanSectors?: number;
  /** verify: a FLUSH after roughly this many requests (0: none). Default 32. */
  flushEvery?: number;
  /** Called every `progressEvery` completions with running totals. */
  onProgress?: (progress: WorkloadProgress) => void;
  progressEvery?: number;
}

export interface WorkloadProgress {
  /** Requests answered, whatever their status. */
  completed: number;
  /** Of those, answered with a status other than OK (they count in no rate). */
  failed: number;
  reads: number;
  writes: number;
  flushes: number;
  zeroes: number;
  discards: number;
  /** Bytes moved by reads and writes that succeeded. */
  bytes: number;
  /** Sum and count of completion latencies (ms), since the last report. */
  latencySumMs: number;
  latencyCount: number;
  latencyMaxMs: number;
  /** Completion latencies since the last report, as a histogram (latency.ts). */
  latencyBuckets: number[];
  /** Reads whose data did not match the model (verify). */
  mismatches: number;
  /** Requests answered with a status other than OK, since the start (cumulative, unlike `failed`). */
  ioErrors: number;
  /** The first failed request, in words (cumulative); null while none failed. */
  firstFailure: string | null;
}

const STATUS_NAMES: Record<number, string> = { [BlkStatus.IoErr]: 'IOERR', [BlkStatus.Unsupp]: 'UNSUPP' };

/** The model of the disk `verify` checks against. One per disk, reusable across runs. */
export class DiskModel {
  readonly bytes: Uint8Array;
  /** 1 for a sector whose content is unknown (discarded, or never compared). */
  readonly unknown: Uint8Array;
  constructor(sizeBytes: number, knownZero = true) {
    this.bytes = new Uint8Array(sizeBytes);
    this.unknown = new Uint8Array(Math.ceil(sizeBytes / SECTOR_SIZE)).fill(knownZero ? 0 : 1);
  }
}

/** xorshift32: small, seedable, good enough to pick sectors. */
export class Random {
  #x: number;
  constructor(seed: number) {
    this.#x = (seed * 2654435761) >>> 0 || 1;
  }
  next(): number {
    let x = this.#x;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.#x = x;
    return x;
  }
  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor((this.next() / 0x1_0000_0000) * n);
  }
  fill(bytes: Uint8Array): void {
    let i = 0;
    for (; i + 4 <= bytes.length; i += 4) {
      const v = this.next();
      bytes[i] = v;
      bytes[i + 1] = v >>> 8;
      bytes[i + 2] = v >>> 16;
      bytes[i + 3] = v >>> 24;
    }
    for (; i < bytes.length; i++) bytes[i] = this.next();
  }
}

type Op = 'read' | 'write' | 'flush' | 'zeroes' | 'discard';

interface InFlight {
  op: Op;
  sector: number;
  sectors: number;
  slot: number;
  startMs: number;
}

/** Guest buffers for one workload: one data buffer (and one segment record) per queue slot. */
export function workloadBuffers(driver: VirtioBlkDriver, queueDepth: number, blockBytes: number): Segment[] {
  return Array.from({ length: queueDepth }, () => driver.allocate(blockBytes));
}

/**
 * Run a workload to its end. `buffers` needs `queueDepth` segments of
 * `blockBytes` (see `workloadBuffers`); `model` is required for verify.
 */
export async function runWorkload(
  driver: VirtioBlkDriver,
  options: WorkloadOptions,
  buffers: Segment[],
  model?: DiskModel,
): Promise<WorkloadProgress> {
  const { kind, queueDepth, blockBytes } = options;
  if (blockBytes % SECTOR_SIZE !== 0 || blockBytes <= 0) throw new RangeError('blockBytes must be a positive multiple of 512');
  if (buffers.length < queueDepth || buffers.some((b) => b.len < blockBytes)) throw new RangeError('too few or too small buffers');
  if (kind === WorkloadKind.Verify && !model) throw new RangeError('verify needs a DiskModel');
  const capacity = driver.capacitySectors;
  const span = Math.min(options.spanSectors ?? capacity, capacity, model ? model.bytes.length / SECTOR_SIZE : Infinity);
  const maxSectors = Math.min(blockBytes / SECTOR_SIZE, span);
  const random = new Random(options.seed ?? 1);
  const memory = driver.memory;
  const flushEvery = options.flushEvery ?? 32;
  const progressEvery = options.progressEvery ?? 256;
  const totals: WorkloadProgress = {
    completed: 0,
    failed: 0,
    reads: 0,
    writes: 0,
    flushes: 0,
    zeroes: 0,
    discards: 0,
    bytes: 0,
    latencySumMs: 0,
    latencyCount: 0,
    latencyMaxMs: 0,
    latencyBuckets: latencyHistogram(),
    mismatches: 0,
    ioErrors: 0,
    firstFailure: null,
  };
  const report = { ...totals, latencyBuckets: latencyHistogram() };
  /** Per sector: in-flight readers (>0) or a writer (-1). Only verify needs it. */
  const busy = kind === WorkloadKind.Verify ? new Int16Array(span) : null;
  const freeSlots = Array.from({ length: queueDepth }, (_, i) => queueDepth - 1 - i);
  const inFlight = new Map<number, InFlight>();
  let submitted = 0;
  let seqSector = 0;
  let sinceFlush = 0;
  const scratch = new Uint8Array(blockBytes);

  const pick = (): { op: Op; sector: number; sectors: number } | null => {
    let op: Op;
    if (kind === WorkloadKind.Verify) {
      const r = random.below(100);
      op = flushEvery > 0 && sinceFlush >= flushEvery ? 'flush' : r < 45 ? 'write' : r < 90 ? 'read' : r < 95 ? 'zeroes' : 'discard';
    } else {
      op =
        kind === WorkloadKind.RandRead || kind === WorkloadKind.SeqRead
          ? 'read'
          : kind === WorkloadKind.RandRw
            ? random.below(2) === 0
              ? 'read'
              : 'write'
            : 'write';
    }
    if (op === 'flush') return { op, sector: 0, sectors: 0 };
    let sector: number;
    let sectors: number;
    if (kind === WorkloadKind.SeqRead || kind === WorkloadKind.SeqWrite) {
      sectors = maxSectors;
      if (seqSector + sectors > span) seqSector = 0;
      sector = seqSector;
      seqSector += sectors;
    } else {
      sectors = kind === WorkloadKind.Verify ? 1 + random.below(maxSectors) : maxSectors;
      sector = random.below(span - sectors + 1);
      if (kind !== WorkloadKind.Verify) sector -= sector % sectors; // aligned like fio's random I/O
    }
    if (busy) {
      // Skip a range that conflicts with an in-flight one (try again later).
      const writes = op !== 'read';
      for (let s = sector; s < sector + sectors; s++) {
        if (busy[s] === -1 || (writes && busy[s] !== 0)) return null;
      }
      for (let s = sector; s < sector + sectors; s++) busy[s] = writes ? -1 : busy[s]! + 1;
    }
    return { op, sector, sectors };
  };

  const submit = (): boolean => {
    const slot = freeSlots.pop();
    if (slot === undefined) return false;
    const choice = pick();
    if (!choice) {
      freeSlots.push(slot);
      return false;
    }
    const { op, sector, sectors } = choice;
    const buf = buffers[slot]!;
    const bytes = sectors * SECTOR_SIZE;
    let id: number;
    if (op === 'flush') {
      sinceFlush = 0;
      id = driver.submit({ type: BlkRequestType.Flush });
    } else if (op === 'read') {
      id = driver.submit({ type: BlkRequestType.In, sector, in: [{ addr: buf.addr, len: bytes }] });
    } else if (op === 'write') {
      const data = scratch.subarray(0, bytes);
      random.fill(data);
      memory.write(buf.addr, data);
      if (model) {
        model.bytes.set(data, sector * SECTOR_SIZE);
        model.unknown.fill(0, sector, sector + sectors);
      }
      id = driver.submit({ type: BlkRequestType.Out, sector, out: [{ addr: buf.addr, len: bytes }] });
    } else {
      // One discard / write-zeroes segment (§5.2.6): sector, num_sectors, flags.
      memory.writeU64(buf.addr, sector);
      memory.writeU32(buf.addr + 8, sectors);
      memory.writeU32(buf.addr + 12, 0);
      if (model) {
        if (op === 'zeroes') {
          model.bytes.fill(0, sector * SECTOR_SIZE, (sector + sectors) * SECTOR_SIZE);
          model.unknown.fill(0, sector, sector + sectors);
        } else {
          model.unknown.fill(1, sector, sector + sectors);
        }
      }
      const type = op === 'zeroes' ? BlkRequestType.WriteZeroes : BlkRequestType.Discard;
      id = driver.submit({ type, out: [{ addr: buf.addr, len: 16 }] });
    }
    sinceFlush++;
    submitted++;
    inFlight.set(id, { op, sector, sectors, slot, startMs: performance.now() });
    return true;
  };

  const reportNow = (): WorkloadProgress => ({
    ...report,
    mismatches: totals.mismatches,
    ioErrors: totals.ioErrors,
    firstFailure: totals.firstFailure,
  });

  const complete = (id: number, status: number): void => {
    const req = inFlight.get(id);
    if (!req) throw new Error(`completion for unknown request ${id}`);
    inFlight.delete(id);
    const latency = performance.now() - req.startMs;
    const bytes = req.sectors * SECTOR_SIZE;
    const ok = status === BlkStatus.Ok;
    if (!ok) {
      totals.ioErrors++;
      totals.firstFailure ??=
        `${req.op}${req.op === 'flush' ? '' : ` of ${req.sectors} sector(s) at sector ${req.sector}`} answered ` +
        `${STATUS_NAMES[status] ?? `status ${status}`}`;
    } else if (req.op === 'read' && model) {
      const got = scratch.subarray(0, bytes);
      memory.read(buffers[req.slot]!.addr, got);
      const base = req.sector * SECTOR_SIZE;
      for (let s = 0; s < req.sectors; s++) {
        if (model.unknown[req.sector + s]) continue;
        const a = s * SECTOR_SIZE;
        for (let i = a; i < a + SECTOR_SIZE; i++) {
          if (got[i] !== model.bytes[base + i]) {
            totals.mismatches++;
            break;
          }
        }
      }
    }
    if (busy) for (let s = req.sector; s < req.sector + req.sectors; s++) busy[s] = req.op === 'read' ? busy[s]! - 1 : 0;
    const counter = req.op === 'read' ? 'reads' : req.op === 'write' ? 'writes' : req.op === 'flush' ? 'flushes' : req.op;
    for (const t of [totals, report]) {
      t[counter === 'zeroes' ? 'zeroes' : counter === 'discard' ? 'discards' : counter]++;
      t.completed++;
      if (!ok) t.failed++;
      else if (req.op === 'read' || req.op === 'write') t.bytes += bytes;
      t.latencySumMs += latency;
      t.latencyCount++;
      t.latencyMaxMs = Math.max(t.latencyMaxMs, latency);
      t.latencyBuckets[latencyBucket(latency)]!++;
    }
    freeSlots.push(req.slot);
    if (options.onProgress && report.completed >= progressEvery) {
      options.onProgress(reportNow());
      Object.assign(report, { completed: 0, failed: 0, reads: 0, writes: 0, flushes: 0, zeroes: 0, discards: 0, bytes: 0 });
      Object.assign(report, { latencySumMs: 0, latencyCount: 0, latencyMaxMs: 0, latencyBuckets: latencyHistogram() });
    }
  };

  const limit = options.ops ?? Infinity;
  const stop = (): boolean => submitted >= limit || (options.shouldStop?.() ?? false);
  while (!stop() || inFlight.size > 0) {
    let added = 0;
    while (!stop() && inFlight.size < queueDepth && submit()) added++;
    if (added > 0) driver.kick();
    if (inFlight.size === 0) continue; // every pick conflicted: nothing in flight, so the next one cannot
    for (const c of await driver.wait()) complete(c.id, c.status);
  }
  if (options.onProgress && report.completed > 0) options.onProgress(reportNow());
  return totals;
}

/** Read the first `model`-sized part of the disk and count sectors that differ from the model. */
export async function verifyAgainstModel(driver: VirtioBlkDriver, model: DiskModel, buffer: Segment): Promise<number> {
  let bad = 0;
  const chunk = Math.min(buffer.len, 1 << 20) - (Math.min(buffer.len, 1 << 20) % SECTOR_SIZE);
  const got = new Uint8Array(chunk);
  for (let at = 0; at < model.bytes.length; at += chunk) {
    const n = Math.min(chunk, model.bytes.length - at);
    const c = await driver.run({ type: BlkRequestType.In, sector: at / SECTOR_SIZE, in: [{ addr: buffer.addr, len: n }] });
    if (c.status !== BlkStatus.Ok) return -1;
    driver.memory.read(buffer.addr, got.subarray(0, n));
    for (let s = 0; s < n / SECTOR_SIZE; s++) {
      if (model.unknown[at / SECTOR_SIZE + s]) continue;
      for (let i = s * SECTOR_SIZE; i < (s + 1) * SECTOR_SIZE; i++) {
        if (got[i] !== model.bytes[at + i]) {
          bad++;
          break;
        }
      }
    }
  }
  return bad;
}
