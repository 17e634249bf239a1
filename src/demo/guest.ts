// The demo's guest: the Linux-style driver over guest RAM, running workloads
// and reporting progress. It runs in a vCPU worker when the page is
// cross-origin isolated (guest-worker.ts) and on the page otherwise.
//
// Stopping is a shared flag, not a message: while a workload runs, a vCPU
// worker sleeps in Atomics.wait between completions and would not see a
// message until the run ended.

import { VirtioBlkDriver, arenaBytes, type MmioAccessor, type Segment } from '../driver/driver.ts';
import { SECTOR_SIZE } from '../block/constants.ts';
import type { GuestMemory } from '../virtio/memory.ts';
import { addHistogram } from './latency.ts';
import { DiskModel, runWorkload, verifyAgainstModel, type WorkloadOptions, type WorkloadProgress } from './workload.ts';

/** Where guest RAM starts (aarch64 `virt`). */
export const DEMO_RAM_BASE = 0x4000_0000;
/** Guest RAM the demo gives its guest: 48 MiB now, room to grow to 64. */
export const DEMO_RAM_PAGES = 768;
export const DEMO_RAM_MAX_PAGES = 1024;
/** The data area holds queue depth × block size. */
export const DEMO_DATA_BYTES = 16 << 20;
const DATA_BYTES = DEMO_DATA_BYTES;
/** `verify` models at most this much of the disk (the model lives in this thread's memory). */
const VERIFY_SPAN_BYTES = 64 << 20;

/** How often progress goes to the page. */
const REPORT_MS = 100;

function addProgress(a: WorkloadProgress, b: WorkloadProgress): WorkloadProgress {
  const latencyBuckets = [...a.latencyBuckets];
  addHistogram(latencyBuckets, b.latencyBuckets);
  return {
    completed: a.completed + b.completed,
    failed: a.failed + b.failed,
    reads: a.reads + b.reads,
    writes: a.writes + b.writes,
    flushes: a.flushes + b.flushes,
    zeroes: a.zeroes + b.zeroes,
    discards: a.discards + b.discards,
    bytes: a.bytes + b.bytes,
    latencySumMs: a.latencySumMs + b.latencySumMs,
    latencyCount: a.latencyCount + b.latencyCount,
    latencyMaxMs: Math.max(a.latencyMaxMs, b.latencyMaxMs),
    latencyBuckets,
    mismatches: b.mismatches,
    ioErrors: b.ioErrors,
    firstFailure: b.firstFailure,
  };
}

export type DemoRunOptions = Omit<WorkloadOptions, 'onProgress' | 'shouldStop' | 'spanSectors'> & { durationMs: number };

export interface DemoRunResult extends WorkloadProgress {
  /** Whether Stop ended the run before its time was up. */
  stopped: boolean;
  /** verify: sectors that differed on the final full read-back (−1: it failed). */
  finalMismatches: number;
  elapsedMs: number;
}

export class DemoGuest {
  readonly driver: VirtioBlkDriver;
  readonly #data: Segment;
  /** stop[0] ≠ 0 asks a running workload to stop. */
  readonly #stop: Int32Array;
  #model: DiskModel | null = null;

  private constructor(driver: VirtioBlkDriver, stop: Int32Array) {
    this.driver = driver;
    this.#stop = stop;
    this.#data = { addr: DEMO_RAM_BASE + arenaBytes(driver.queueSize), len: DATA_BYTES };
  }

  static async boot(mmio: MmioAccessor, memory: GuestMemory, stop: Int32Array, waitForInterrupt: () => Promise<void>): Promise<DemoGuest> {
    const driver = await VirtioBlkDriver.init({
      mmio,
      memory,
      arena: { addr: DEMO_RAM_BASE, len: arenaBytes(256) + DATA_BYTES },
      waitForInterrupt,
    });
    return new DemoGuest(driver, stop);
  }

  get info() {
    return { capacitySectors: this.driver.capacitySectors, queueSize: this.driver.queueSize, readOnly: this.driver.readOnly };
  }

  async run(options: DemoRunOptions, onProgress: (p: WorkloadProgress) => void): Promise<DemoRunResult> {
    const { queueDepth, blockBytes } = options;
    if (queueDepth * blockBytes > DATA_BYTES) throw new RangeError(`queue depth × block size must fit ${DATA_BYTES >> 20} MiB`);
    Atomics.store(this.#stop, 0, 0);
    const started = performance.now();
    const deadline = started + options.durationMs;
    const span = Math.min(this.driver.capacitySectors, VERIFY_SPAN_BYTES / SECTOR_SIZE);
    let model: DiskModel | undefined;
    if (options.kind === 'verify') {
      // The model starts unknown: the disk may hold anything (an imported image).
      if (!this.#model || this.#model.bytes.length !== span * SECTOR_SIZE) this.#model = new DiskModel(span * SECTOR_SIZE, false);
      model = this.#model;
    }
    const buffers = Array.from({ length: queueDepth }, (_, i) => ({ addr: this.#data.addr + i * blockBytes, len: blockBytes }));
    // Report at most every REPORT_MS: the engine calls back every 32 completions.
    let pending: WorkloadProgress | null = null;
    let lastReport = started;
    const report = (p: WorkloadProgress): void => {
      pending = pending ? addProgress(pending, p) : { ...p };
      const now = performance.now();
      if (now - lastReport >= REPORT_MS) {
        onProgress(pending);
        pending = null;
        lastReport = now;
      }
    };
    const totals = await runWorkload(
      this.driver,
      {
        ...options,
        spanSectors: model ? span : undefined,
        progressEvery: 32,
        onProgress: report,
        shouldStop: () => Atomics.load(this.#stop, 0) !== 0 || performance.now() >= deadline,
      },
      buffers,
      model,
    );
    if (pending) onProgress(pending);
    const finalMismatches = model ? await verifyAgainstModel(this.driver, model, { addr: this.#data.addr, len: 1 << 20 }) : 0;
    const stopped = Atomics.load(this.#stop, 0) !== 0;
    return { ...totals, stopped, finalMismatches, elapsedMs: performance.now() - started };
  }
}
