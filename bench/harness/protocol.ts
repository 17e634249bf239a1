// What the benchmark's Node runner (bench/run.ts), its page (page.ts) and its
// workers exchange: plain, structured-clonable records. One file so that
// every side agrees on the shape of a workload and of its result.
//
// A workload is described once and run twice in the same page: through the
// whole device path by the vCPU worker, and against the raw storage API by the
// raw worker, so that the two figures are comparable row by row.

import { Random } from '../../src/demo/workload.ts';

/** What a workload does to the disk. */
export const IoOp = {
  Read: 'read',
  Write: 'write',
} as const;
export type IoOp = (typeof IoOp)[keyof typeof IoOp];

/** Where on the disk each request goes. */
export const AccessPattern = {
  /** Uniformly random, aligned to the block size (fio's randread / randwrite). */
  Random: 'random',
  /** One block after the other, wrapping at the end of the span. */
  Sequential: 'sequential',
} as const;
export type AccessPattern = (typeof AccessPattern)[keyof typeof AccessPattern];

export interface WorkloadSpec {
  op: IoOp;
  pattern: AccessPattern;
  /** Bytes per request, a multiple of 512. */
  blockBytes: number;
  /** Requests kept in flight (the raw sync APIs have no queue: always 1 there). */
  queueDepth: number;
  /** Requests run before the clock starts (JIT warm-up, page cache). */
  warmupMs: number;
  /** Measured time; the run also ends after `maxRequests`. */
  durationMs: number;
  /** Stop after this many measured requests (0: no limit). */
  maxRequests: number;
  /** Bytes of the disk the workload touches, from offset 0. */
  spanBytes: number;
  /** Record every request's latency (QD1 latency rows). */
  recordLatency: boolean;
  /**
   * Raw side only: a new Uint8Array view for every request, as the device
   * makes with GuestMemory.view, instead of reusing a few (a diagnostic row).
   */
  rawFreshViews?: boolean;
  seed: number;
}

export interface LatencySummary {
  samples: number;
  medianUs: number;
  p99Us: number;
  meanUs: number;
  minUs: number;
  maxUs: number;
}

export interface WorkloadResult {
  /** Requests completed inside the measured window. */
  requests: number;
  bytes: number;
  seconds: number;
  iops: number;
  bytesPerSecond: number;
  /** Requests that did not complete with VIRTIO_BLK_S_OK (device path only). */
  ioErrors: number;
  /** Times the vCPU waited for an interrupt (WFI), and how many of those slept in Atomics.wait rather than ending while halt-polling (device path only). */
  waits: number;
  sleeps: number;
  /** Completions found in the used ring after a second without an interrupt (device path only; 0 expected). */
  lostInterrupts: number;
  latency: LatencySummary | null;
}

/** Storage for a row. New backends (IndexedDB, HTTP, overlay) add a kind here and in the page. */
export type BenchBackend =
  | { kind: 'memory'; sizeBytes: number }
  | { kind: 'opfs'; name: string; directory: string; sizeBytes: number };

/** Summarise latency samples (microseconds). `samples` is sorted in place. */
export function summarise(samples: Float64Array): LatencySummary {
  samples.sort();
  const n = samples.length;
  if (n === 0) return { samples: 0, medianUs: 0, p99Us: 0, meanUs: 0, minUs: 0, maxUs: 0 };
  let sum = 0;
  for (let i = 0; i < n; i++) sum += samples[i]!;
  const at = (q: number): number => samples[Math.min(n - 1, Math.floor(q * n))]!;
  return { samples: n, medianUs: at(0.5), p99Us: at(0.99), meanUs: sum / n, minUs: samples[0]!, maxUs: samples[n - 1]! };
}

/** Picks block numbers: in order, or uniformly at random (the demo's seedable xorshift). */
export class BlockPicker {
  readonly #random: Random | null;
  readonly #blocks: number;
  #next = 0;

  constructor(spec: Pick<WorkloadSpec, 'pattern' | 'blockBytes' | 'spanBytes' | 'seed'>) {
    this.#blocks = Math.floor(spec.spanBytes / spec.blockBytes);
    this.#random = spec.pattern === AccessPattern.Random ? new Random(spec.seed) : null;
    if (this.#blocks < 1) throw new RangeError('the span holds no whole block');
  }

  /** The next block number in [0, blocks). */
  next(): number {
    if (this.#random) return this.#random.below(this.#blocks);
    const b = this.#next;
    this.#next = b + 1 === this.#blocks ? 0 : b + 1;
    return b;
  }
}
