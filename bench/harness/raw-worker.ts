// The baseline: the same workloads as vcpu-worker.ts, straight against the
// storage API with no device in between — an OPFS sync access handle reading
// into (writing from) a view on the shared WebAssembly.Memory, or a plain
// memory copy for the memory backend. Both APIs are synchronous, so there is
// no queue depth here: one request at a time is the raw API's best.
//
// It also prepares the OPFS disk files (filled with data, so reads hit real
// blocks rather than holes) before the device opens them.

import { serve } from '../../e2e/harness/rpc.ts';
import { BlockPicker, IoOp, summarise, type WorkloadResult, type WorkloadSpec } from './protocol.ts';

/** One raw target: read or write `view.length` bytes at `offset`. */
interface RawTarget {
  read(offset: number, view: Uint8Array): void;
  write(offset: number, view: Uint8Array): void;
  close(): void;
}

/** Guest buffers the raw loop takes in turn (the device's QD8 for 1 MiB). */
const RAW_BUFFERS = 8;

let target: RawTarget | null = null;
let ram: WebAssembly.Memory | null = null;

async function fileHandle(directory: string, name: string): Promise<FileSystemFileHandle> {
  let dir = await navigator.storage.getDirectory();
  for (const part of directory.split('/').filter(Boolean)) dir = await dir.getDirectoryHandle(part, { create: true });
  return dir.getFileHandle(name, { create: true });
}

/** Write `sizeBytes` of non-zero data into the file (1 MiB at a time), flush and close it. */
async function fill({ directory, name, sizeBytes }: { directory: string; name: string; sizeBytes: number }) {
  const handle = await (await fileHandle(directory, name)).createSyncAccessHandle();
  try {
    const chunk = new Uint8Array(1 << 20);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31 + 7) & 0xff;
    handle.truncate(sizeBytes);
    for (let at = 0; at < sizeBytes; at += chunk.length) {
      handle.write(chunk.subarray(0, Math.min(chunk.length, sizeBytes - at)), { at });
    }
    handle.flush();
  } finally {
    handle.close();
  }
}

async function open(args: { kind: 'memory'; sizeBytes: number } | { kind: 'opfs'; directory: string; name: string }) {
  target?.close();
  if (args.kind === 'memory') {
    const disk = new Uint8Array(args.sizeBytes).fill(0x5a);
    target = {
      read: (offset, view) => view.set(disk.subarray(offset, offset + view.length)),
      write: (offset, view) => disk.set(view, offset),
      close: () => {},
    };
    return;
  }
  const handle = await (await fileHandle(args.directory, args.name)).createSyncAccessHandle();
  const at = { at: 0 };
  target = {
    read: (offset, view) => {
      at.at = offset;
      handle.read(view, at);
    },
    write: (offset, view) => {
      at.at = offset;
      handle.write(view, at);
    },
    close: () => handle.close(),
  };
}

function run(spec: WorkloadSpec): WorkloadResult {
  if (!target || !ram) throw new Error('no raw target open');
  const t = target;
  // Guest buffers: views on the shared memory, as the device gets, taken in
  // turn like the device's queue slots (one hot buffer would stay in the CPU
  // cache and flatter the raw side). Made once, unless the spec asks for a
  // fresh view per request, which is what the device path does.
  const count = Math.max(1, Math.min(RAW_BUFFERS, Math.floor(ram.buffer.byteLength / spec.blockBytes)));
  const views = Array.from({ length: count }, (_, i) => new Uint8Array(ram!.buffer, i * spec.blockBytes, spec.blockBytes));
  let turn = 0;
  const nextView = spec.rawFreshViews
    ? () => {
        turn = turn + 1 === count ? 0 : turn + 1;
        return new Uint8Array(ram!.buffer, turn * spec.blockBytes, spec.blockBytes);
      }
    : () => {
        turn = turn + 1 === count ? 0 : turn + 1;
        return views[turn]!;
      };
  const picker = new BlockPicker(spec);
  const write = spec.op === IoOp.Write;
  const maxSamples = spec.recordLatency ? Math.max(1, spec.maxRequests || 200_000) : 0;
  const samples = new Float64Array(maxSamples);
  let sampleCount = 0;
  const warmupEnd = performance.now() + spec.warmupMs;
  while (performance.now() < warmupEnd) {
    const offset = picker.next() * spec.blockBytes;
    const view = nextView();
    if (write) t.write(offset, view);
    else t.read(offset, view);
  }
  const start = performance.now();
  const deadline = start + spec.durationMs;
  let requests = 0;
  let now = start;
  // Check the clock every few requests: performance.now() costs about as much as a 4 KiB memory copy.
  const every = spec.recordLatency ? 1 : spec.blockBytes >= 65536 ? 1 : 16;
  while (now < deadline && (spec.maxRequests === 0 || requests < spec.maxRequests)) {
    for (let i = 0; i < every; i++) {
      const offset = picker.next() * spec.blockBytes;
      const view = nextView();
      const t0 = spec.recordLatency ? performance.now() : 0;
      if (write) t.write(offset, view);
      else t.read(offset, view);
      if (spec.recordLatency && sampleCount < maxSamples) samples[sampleCount++] = (performance.now() - t0) * 1000;
    }
    requests += every;
    now = performance.now();
  }
  const seconds = (now - start) / 1000;
  return {
    requests,
    bytes: requests * spec.blockBytes,
    seconds,
    iops: requests / seconds,
    bytesPerSecond: (requests * spec.blockBytes) / seconds,
    ioErrors: 0,
    waits: 0,
    sleeps: 0,
    lostInterrupts: 0,
    latency: spec.recordLatency ? summarise(samples.subarray(0, sampleCount)) : null,
  };
}

async function remove({ directory, name }: { directory: string; name: string }) {
  let dir = await navigator.storage.getDirectory();
  for (const part of directory.split('/').filter(Boolean)) dir = await dir.getDirectoryHandle(part);
  await dir.removeEntry(name);
}

serve({
  setRam: ({ memory }: { memory: WebAssembly.Memory }) => void (ram = memory),
  fill,
  open,
  workload: (spec: WorkloadSpec) => run(spec),
  close: () => {
    target?.close();
    target = null;
  },
  remove,
});
