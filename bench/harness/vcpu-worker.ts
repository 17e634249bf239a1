// The benchmark's guest: a vCPU worker that runs the Linux-style driver
// (src/driver) over the shared WebAssembly.Memory and the disk's register
// file, and sleeps on the IRQ word with Atomics.wait, as an emulator's WFI
// would. Everything on the hot path is synchronous — submit, kick, sleep,
// ack, reap — so the figures are the device path's, not the event loop's
// (the demo's workload runner awaits per completion; this one does not).
//
// Also here: the bare Atomics round trip (ping against pong-worker.ts), the
// floor under any notify → interrupt latency, measured in the same run.

import { BlkRequestType, BlkStatus, SECTOR_SIZE } from '../../src/block/constants.ts';
import { VirtioBlkDriver, type Segment } from '../../src/driver/driver.ts';
import { HaltPoller } from '../../src/host/browser/halt-poll.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';
import { MmioRegisters, MmioWord, type MmioState } from '../../src/virtio/mmio/mmio.ts';
import { serve } from '../../e2e/harness/rpc.ts';
import { BlockPicker, IoOp, summarise, type WorkloadResult, type WorkloadSpec } from './protocol.ts';

export interface AttachArgs {
  state: MmioState;
  ram: WebAssembly.Memory;
  ramBase: number;
  /** WFI halt-polling: the most the vCPU polls the IRQ word before it sleeps (0: sleep at once). */
  haltPollMicros: number;
}

/** Ids are handed out in order and at most a queue's worth are in flight: 16 bits of id index a slot table. */
const ID_MASK = 0xffff;

let driver: VirtioBlkDriver | null = null;
let irq: Int32Array | null = null;
let poller = new HaltPoller({ maxMicros: 0 });
/** Data buffers by block size, carved from the driver's arena once (it never frees). */
const buffers = new Map<number, Segment[]>();

function need(): VirtioBlkDriver {
  if (!driver) throw new Error('no disk attached');
  return driver;
}

function buffersFor(d: VirtioBlkDriver, count: number, bytes: number): Segment[] {
  let list = buffers.get(bytes);
  if (!list) buffers.set(bytes, (list = []));
  while (list.length < count) list.push(d.allocate(bytes));
  return list;
}

/** How long the vCPU sleeps before it looks at the used ring without an interrupt. */
const IRQ_TIMEOUT_MS = 1000;
/** Give up after this long without any completion. */
const STALL_MS = 30_000;
/** DEVICE_NEEDS_RESET in the Status register (§2.1). */
const STATUS_NEEDS_RESET = 0x40;

/**
 * Sleep until the device raises the line. Returns false when it timed out:
 * the caller then reaps anyway, so a lost interrupt shows up as a count in the
 * result (`lostInterrupts`) instead of a hung benchmark.
 */
function sleepOnIrq(line: Int32Array): boolean {
  while (Atomics.load(line, MmioWord.InterruptStatus) === 0) {
    if (poller.wait(line, MmioWord.InterruptStatus, 0, IRQ_TIMEOUT_MS) === 'timed-out') {
      if (need().status & STATUS_NEEDS_RESET) throw new Error('the device needs a reset');
      return false;
    }
  }
  return true;
}

function run(spec: WorkloadSpec): WorkloadResult {
  const d = need();
  const line = irq!;
  const qd = Math.min(spec.queueDepth, d.queueSize);
  const bufs = buffersFor(d, qd, spec.blockBytes);
  const picker = new BlockPicker(spec);
  const sectorsPerBlock = spec.blockBytes / SECTOR_SIZE;
  const type = spec.op === IoOp.Read ? BlkRequestType.In : BlkRequestType.Out;
  /** Buffer index of the request with id i, at i & ID_MASK. */
  const bufOfId = new Int16Array(ID_MASK + 1);
  const startOfId = spec.recordLatency ? new Float64Array(ID_MASK + 1) : null;
  const maxSamples = spec.recordLatency ? Math.max(1, spec.maxRequests || 200_000) : 0;
  const samples = new Float64Array(maxSamples);
  let sampleCount = 0;
  const free: number[] = [];
  for (let i = qd - 1; i >= 0; i--) free.push(i);
  // One request record per buffer, reused: the driver copies what it needs.
  const requests = bufs.slice(0, qd).map((seg) => {
    const data = [{ addr: seg.addr, len: spec.blockBytes }];
    return spec.op === IoOp.Read ? { type, sector: 0, in: data } : { type, sector: 0, out: data };
  });

  let inFlight = 0;
  let measuring = false;
  let stopping = false;
  let measuredStart = 0;
  let measuredEnd = 0;
  let requestsDone = 0;
  let ioErrors = 0;
  let waits = 0;
  const slept = poller.slept;
  let lostInterrupts = 0;
  let lastCompletion = performance.now();
  const warmupEnd = performance.now() + spec.warmupMs;
  let deadline = Infinity;

  for (;;) {
    // Top up to the queue depth, then one kick for the batch (Linux: one
    // notify per blk-mq commit, suppressed by EVENT_IDX when the device is busy).
    let added = 0;
    while (!stopping && inFlight < qd) {
      const b = free.pop()!;
      const req = requests[b]!;
      req.sector = picker.next() * sectorsPerBlock;
      const id = d.submit(req);
      bufOfId[id & ID_MASK] = b;
      if (startOfId) startOfId[id & ID_MASK] = performance.now();
      inFlight++;
      added++;
    }
    if (added > 0) d.kick();
    if (inFlight === 0) break;
    let done = d.reap();
    if (done.length === 0) {
      const woken = sleepOnIrq(line);
      waits++;
      d.ackInterrupt();
      done = d.reap();
      if (!woken) {
        if (done.length > 0) lostInterrupts++;
        else if (performance.now() - lastCompletion > STALL_MS) throw new Error(`no completion for ${STALL_MS} ms (${inFlight} in flight)`);
      }
    }
    const now = performance.now();
    if (done.length > 0) lastCompletion = now;
    for (const c of done) {
      inFlight--;
      free.push(bufOfId[c.id & ID_MASK]!);
      if (!measuring || stopping) continue;
      if (c.status !== BlkStatus.Ok) ioErrors++;
      requestsDone++;
      if (startOfId && sampleCount < maxSamples) samples[sampleCount++] = (now - startOfId[c.id & ID_MASK]!) * 1000;
    }
    if (!measuring && now >= warmupEnd) {
      // Requests already in flight complete inside the window: a steady state.
      measuring = true;
      measuredStart = now;
      deadline = now + spec.durationMs;
    } else if (measuring && !stopping) {
      if (now >= deadline || (spec.maxRequests > 0 && requestsDone >= spec.maxRequests)) {
        stopping = true;
        measuredEnd = now;
      }
    }
  }
  // Completions that landed after the window closed were not counted.
  const seconds = (measuredEnd - measuredStart) / 1000;
  const counted = requestsDone;
  return {
    requests: counted,
    bytes: counted * spec.blockBytes,
    seconds,
    iops: counted / seconds,
    bytesPerSecond: (counted * spec.blockBytes) / seconds,
    ioErrors,
    waits,
    sleeps: poller.slept - slept,
    lostInterrupts,
    latency: startOfId ? summarise(samples.subarray(0, sampleCount)) : null,
  };
}

/** Bare Atomics round trip against pong-worker.ts: store + notify, then wait for the echo. */
function pingPong({ words, rounds }: { words: Int32Array; rounds: number }) {
  const samples = new Float64Array(rounds);
  const begin = performance.now();
  for (let i = 1; i <= rounds; i++) {
    const t0 = performance.now();
    Atomics.store(words, 0, i);
    Atomics.notify(words, 0);
    while (Atomics.load(words, 1) !== i) Atomics.wait(words, 1, i - 1, 5000);
    samples[i - 1] = (performance.now() - t0) * 1000;
  }
  const totalMs = performance.now() - begin;
  // Tell the pong worker to stop.
  Atomics.store(words, 0, -1);
  Atomics.notify(words, 0);
  return { ...summarise(samples), meanUs: (totalMs * 1000) / rounds };
}

serve({
  attach: async ({ state, ram, ramBase, haltPollMicros }: AttachArgs) => {
    poller = new HaltPoller({ maxMicros: haltPollMicros });
    const memory = new GuestMemory([{ guestAddress: ramBase, source: ram }]);
    const mmio = new MmioRegisters(state);
    irq = state;
    buffers.clear();
    driver = await VirtioBlkDriver.init({ mmio, memory, arena: { addr: ramBase, len: ram.buffer.byteLength } });
    return { queueSize: driver.queueSize, capacitySectors: driver.capacitySectors, features: driver.features.toString(16) };
  },
  workload: (spec: WorkloadSpec) => run(spec),
  pingPong,
  detach: async () => {
    if (driver) await driver.reset();
    driver = null;
    irq = null;
  },
});
