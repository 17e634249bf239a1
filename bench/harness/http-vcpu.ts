// The HTTP benchmark's guest and its baseline, in one worker.
//
// `trace` runs a list of reads through the guest driver at a queue depth:
// submit up to the depth, one kick per batch, sleep on the IRQ word (no halt
// polling: the backend is on the network, a vCPU would halt), reap. `fetch`
// is the baseline: the same ranges (or the chunk files they need) fetched
// with plain `fetch`, the same number in flight, bodies read whole. Both
// return wall time and bytes; requests are counted by the server.

import { BlkRequestType, BlkStatus, SECTOR_SIZE } from '../../src/block/constants.ts';
import { VirtioBlkDriver, type DriverRequest, type Segment } from '../../src/driver/driver.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';
import { MmioRegisters, MmioWord, type MmioState } from '../../src/virtio/mmio/mmio.ts';
import { serve } from '../../e2e/harness/rpc.ts';

/** One read: byte offset and length, both multiples of 512. */
export type TraceRead = readonly [offset: number, length: number];
/** One baseline request: a URL, with a byte range (inclusive) or the whole file. */
export type FetchItem = { url: string; range?: readonly [start: number, end: number] };

export interface RunResult {
  seconds: number;
  bytes: number;
  requests: number;
  ioErrors: number;
  /** Completions found after a 1 s wait without an interrupt (device runs only; 0 expected). */
  lostInterrupts?: number;
}

let driver: VirtioBlkDriver | null = null;
let irq: Int32Array | null = null;
let buffers: Segment[] = [];

function need(): VirtioBlkDriver {
  if (!driver) throw new Error('no disk attached');
  return driver;
}

function trace({ reads, queueDepth }: { reads: TraceRead[]; queueDepth: number }): RunResult {
  const d = need();
  const qd = Math.min(queueDepth, d.queueSize, buffers.length);
  const free = Array.from({ length: qd }, (_, i) => i);
  const bufOf = new Map<number, number>();
  let next = 0;
  let inFlight = 0;
  let bytes = 0;
  let ioErrors = 0;
  let lostInterrupts = 0;
  const started = performance.now();
  while (next < reads.length || inFlight > 0) {
    let added = 0;
    while (next < reads.length && inFlight < qd) {
      const [offset, length] = reads[next++]!;
      const b = free.pop()!;
      const req: DriverRequest = { type: BlkRequestType.In, sector: offset / SECTOR_SIZE, in: [{ addr: buffers[b]!.addr, len: length }] };
      bufOf.set(d.submit(req), b);
      inFlight++;
      added++;
      bytes += length;
    }
    if (added > 0) d.kick();
    let done = d.reap();
    const waitedFrom = performance.now();
    while (done.length === 0) {
      // Sleep until the device raises the line, at most 1 s at a time: then
      // reap anyway, so a lost interrupt is a count in the result, not a hang.
      const timedOut = Atomics.wait(irq!, MmioWord.InterruptStatus, 0, 1000) === 'timed-out';
      d.ackInterrupt();
      done = d.reap();
      if (timedOut && done.length > 0) lostInterrupts++;
      if (done.length === 0 && performance.now() - waitedFrom > 30_000) throw new Error(`no completion for 30 s (${inFlight} in flight)`);
    }
    for (const c of done) {
      inFlight--;
      free.push(bufOf.get(c.id)!);
      bufOf.delete(c.id);
      if (c.status !== BlkStatus.Ok) ioErrors++;
    }
  }
  return { seconds: (performance.now() - started) / 1000, bytes, requests: reads.length, ioErrors, lostInterrupts };
}

async function fetchAll({ items, queueDepth }: { items: FetchItem[]; queueDepth: number }): Promise<RunResult> {
  let next = 0;
  let bytes = 0;
  let ioErrors = 0;
  const started = performance.now();
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++]!;
      const headers: Record<string, string> = item.range ? { Range: `bytes=${item.range[0]}-${item.range[1]}` } : {};
      const response = await fetch(item.url, { headers, cache: 'no-store' });
      const body = await response.arrayBuffer();
      const want = item.range ? item.range[1] - item.range[0] + 1 : body.byteLength;
      if (response.status !== (item.range ? 206 : 200) || body.byteLength !== want) ioErrors++;
      bytes += body.byteLength;
    }
  };
  await Promise.all(Array.from({ length: queueDepth }, lane));
  return { seconds: (performance.now() - started) / 1000, bytes, requests: items.length, ioErrors, lostInterrupts: 0 };
}

serve({
  attach: async ({ state, ram, ramBase, bufferBytes, count }: { state: MmioState; ram: WebAssembly.Memory; ramBase: number; bufferBytes: number; count: number }) => {
    const memory = new GuestMemory([{ guestAddress: ramBase, source: ram }]);
    irq = state;
    driver = await VirtioBlkDriver.init({ mmio: new MmioRegisters(state), memory, arena: { addr: ramBase, len: ram.buffer.byteLength } });
    buffers = Array.from({ length: count }, () => driver!.allocate(bufferBytes));
    return { capacitySectors: driver.capacitySectors, readOnly: driver.readOnly };
  },
  trace,
  fetch: fetchAll,
  /** Drop an OPFS folder (the chunk cache's), recursively. */
  removeOpfsDirectory: async ({ path }: { path: string }) => {
    const parts = path.split('/').filter(Boolean);
    let dir = await navigator.storage.getDirectory();
    for (const part of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(part);
    await dir.removeEntry(parts.at(-1)!, { recursive: true }).catch(() => undefined);
  },
  detach: async () => {
    if (driver) await driver.reset();
    driver = null;
    irq = null;
  },
});
