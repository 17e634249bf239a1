// The lab page (`npm start`). It is an emulator in miniature: it owns guest
// RAM (a WebAssembly.Memory), attaches a disk with `createDisk`, and runs a
// guest — a vCPU worker with the driver when the page is cross-origin
// isolated, the same driver on this page when it is not (same-thread host).
//
// It attaches an in-memory disk on load, so "Run" works with no choices made.

import { createDisk, type Disk } from '../host/disk.ts';
import type { BackendSpec } from '../host/protocol.ts';
import type { RateLimiterConfig } from '../limiter/index.ts';
import { GuestMemory } from '../virtio/memory.ts';
import { RollingChart } from './chart.ts';
import type { GuestReply, GuestRequest } from './guest-worker.ts';
import { DEMO_RAM_BASE, DEMO_RAM_MAX_PAGES, DEMO_RAM_PAGES, DemoGuest, type DemoRunOptions, type DemoRunResult } from './guest.ts';
import { exportImage, importImage } from './image-io.ts';
import type { WorkloadKind, WorkloadProgress } from './workload.ts';

const OPFS_DIRECTORY = 'lab';
const PAGE_BYTES = 65536;
const MiB = 1 << 20;

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing`);
  return el as T;
};
const ui = {
  backend: $<HTMLSelectElement>('backend'),
  size: $<HTMLInputElement>('size'),
  name: $<HTMLInputElement>('name'),
  readOnly: $<HTMLInputElement>('readonly'),
  attach: $<HTMLButtonElement>('attach'),
  detach: $<HTMLButtonElement>('detach'),
  status: $<HTMLDivElement>('status'),
  kind: $<HTMLSelectElement>('kind'),
  qd: $<HTMLInputElement>('qd'),
  block: $<HTMLSelectElement>('block'),
  seconds: $<HTMLInputElement>('seconds'),
  limit: $<HTMLInputElement>('limit'),
  run: $<HTMLButtonElement>('run'),
  stop: $<HTMLButtonElement>('stop'),
  iops: $<HTMLOutputElement>('iops'),
  mbps: $<HTMLOutputElement>('mbps'),
  latency: $<HTMLOutputElement>('latency'),
  completed: $<HTMLOutputElement>('completed'),
  result: $<HTMLDivElement>('result'),
  importFile: $<HTMLInputElement>('import'),
  importProgress: $<HTMLProgressElement>('import-progress'),
  export: $<HTMLButtonElement>('export'),
  download: $<HTMLAnchorElement>('download'),
  imageStatus: $<HTMLSpanElement>('image-status'),
};

const chart = new RollingChart($<HTMLCanvasElement>('chart'), [
  { label: 'IOPS', color: '#2a7de1', format: (v) => Math.round(v).toLocaleString() },
  { label: 'MB/s', color: '#1a9850', format: (v) => v.toFixed(1) },
  { label: 'latency ms', color: '#d95f02', format: (v) => v.toFixed(3) },
]);

/** The guest, wherever it runs: `run` resolves at the end, progress comes through the callback. */
interface GuestHandle {
  run(options: DemoRunOptions, onProgress: (p: WorkloadProgress) => void): Promise<DemoRunResult>;
  stop(): void;
  close(): void;
}

let disk: Disk | null = null;
let guest: GuestHandle | null = null;
let running = false;
/** Finished runs, published on <body data-runs> for tests. */
let runsFinished = 0;

function say(text: string, error = false): void {
  ui.status.textContent = text;
  ui.status.classList.toggle('error', error);
}

function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.name}${(err as { code?: string }).code ? ` [${(err as { code?: string }).code}]` : ''}: ${err.message}`;
  return String(err);
}

function backendSpec(): Exclude<BackendSpec, { kind: 'module' }> {
  const size = Math.max(1, Number(ui.size.value) || 64) * MiB;
  const readOnly = ui.readOnly.checked;
  if (ui.backend.value === 'opfs') return { kind: 'opfs', name: ui.name.value.trim() || 'lab-disk', directory: OPFS_DIRECTORY, size, readOnly, lockWaitMs: 3000 };
  return { kind: 'memory', size, readOnly };
}

async function startGuest(d: Disk, ram: WebAssembly.Memory): Promise<GuestHandle> {
  const stopFlag = new Int32Array(typeof SharedArrayBuffer === 'function' ? new SharedArrayBuffer(4) : new ArrayBuffer(4));
  if (d.host === 'worker') {
    const worker = new Worker(new URL('./guest-worker.ts', import.meta.url), { type: 'module', name: 'vcpu' });
    let onReply: (reply: GuestReply) => void = () => {};
    worker.onmessage = (e: MessageEvent<GuestReply>) => onReply(e.data);
    const post = (request: GuestRequest): void => worker.postMessage(request);
    await new Promise<void>((resolve, reject) => {
      onReply = (r) => (r.type === 'booted' ? resolve() : r.type === 'error' ? reject(new Error(r.message)) : undefined);
      post({ type: 'boot', ram, maxBytes: DEMO_RAM_MAX_PAGES * PAGE_BYTES, state: d.state, stop: stopFlag });
    });
    return {
      run: (options, onProgress) =>
        new Promise((resolve, reject) => {
          onReply = (r) => {
            if (r.type === 'progress') onProgress(r.progress);
            else if (r.type === 'done') resolve(r.result);
            else if (r.type === 'error') reject(new Error(r.message));
          };
          post({ type: 'run', options });
        }),
      stop: () => Atomics.store(stopFlag, 0, 1),
      close: () => worker.terminate(),
    };
  }
  const memory = new GuestMemory([{ guestAddress: DEMO_RAM_BASE, source: ram, size: DEMO_RAM_MAX_PAGES * PAGE_BYTES }]);
  const local = await DemoGuest.boot(d.mmio, memory, stopFlag, () => d.waitForInterrupt());
  return {
    run: (options, onProgress) => local.run(options, onProgress),
    stop: () => Atomics.store(stopFlag, 0, 1),
    close: () => {},
  };
}

async function attach(): Promise<void> {
  await detach();
  const spec = backendSpec();
  say(`attaching a ${spec.kind} disk…`);
  ui.attach.disabled = true;
  try {
    const isolated = globalThis.crossOriginIsolated === true;
    if (!isolated && spec.kind === 'opfs') {
      throw new Error('OPFS needs the device in a worker, and this page is not cross-origin isolated (no COOP/COEP)');
    }
    const ram = new WebAssembly.Memory({ initial: DEMO_RAM_PAGES, maximum: DEMO_RAM_MAX_PAGES, shared: isolated });
    const d = await createDisk({
      memory: [{ guestAddress: DEMO_RAM_BASE, source: ram, size: DEMO_RAM_MAX_PAGES * PAGE_BYTES }],
      backend: spec,
      device: { serial: 'virtio-blk-web-lab', rateLimit: rateLimit() ?? undefined },
    });
    disk = d;
    d.onStorageError = (error) => say(`storage error (the guest saw IOERR): ${describeError(error)}`, true);
    guest = await startGuest(d, ram);
    const sizeMiB = (d.stats.capacitySectors * 512) / MiB;
    say(
      `attached: ${spec.kind}${spec.kind === 'opfs' ? ` "${spec.name}"` : ''}, ${sizeMiB.toLocaleString()} MiB` +
        `${spec.readOnly ? ', read-only' : ''}; device on ${d.host === 'worker' ? 'a worker' : 'this page (no cross-origin isolation)'}`,
    );
    document.body.dataset.attached = spec.kind;
    ui.detach.disabled = false;
    ui.run.disabled = false;
  } catch (err) {
    say(`attach failed: ${describeError(err)}`, true);
    await detach();
  } finally {
    ui.attach.disabled = false;
  }
}

async function detach(): Promise<void> {
  guest?.stop();
  guest?.close();
  guest = null;
  const d = disk;
  disk = null;
  delete document.body.dataset.attached;
  ui.detach.disabled = true;
  ui.run.disabled = true;
  ui.stop.disabled = true;
  running = false;
  if (d) {
    await d.close();
    say('detached');
  }
}

async function run(): Promise<void> {
  if (!guest || running) return;
  running = true;
  ui.run.disabled = true;
  ui.stop.disabled = false;
  ui.result.textContent = '';
  chart.clear();
  let completed = 0;
  let sample: { at: number; bytes: number; ops: number; latencySum: number; latencyCount: number } = {
    at: performance.now(),
    bytes: 0,
    ops: 0,
    latencySum: 0,
    latencyCount: 0,
  };
  const options: DemoRunOptions = {
    kind: ui.kind.value as WorkloadKind,
    queueDepth: Math.min(64, Math.max(1, Number(ui.qd.value) || 1)),
    blockBytes: Number(ui.block.value),
    durationMs: Math.max(1, Number(ui.seconds.value) || 10) * 1000,
    seed: Date.now() % 100_000,
  };
  // Sample rates every half second from the progress stream.
  const onProgress = (p: WorkloadProgress): void => {
    completed += p.completed;
    sample.bytes += p.bytes;
    sample.ops += p.completed;
    sample.latencySum += p.latencySumMs;
    sample.latencyCount += p.latencyCount;
    ui.completed.value = completed.toLocaleString();
    const now = performance.now();
    const seconds = (now - sample.at) / 1000;
    if (seconds >= 0.5) {
      const iops = sample.ops / seconds;
      const mbps = sample.bytes / seconds / 1e6;
      const latency = sample.latencyCount ? sample.latencySum / sample.latencyCount : 0;
      ui.iops.value = Math.round(iops).toLocaleString();
      ui.mbps.value = mbps.toFixed(1);
      ui.latency.value = `${latency.toFixed(3)} ms`;
      chart.push([iops, mbps, latency]);
      sample = { at: now, bytes: 0, ops: 0, latencySum: 0, latencyCount: 0 };
    }
  };
  try {
    const r = await guest.run(options, onProgress);
    const seconds = r.elapsedMs / 1000;
    ui.result.textContent =
      `${r.completed.toLocaleString()} requests in ${seconds.toFixed(1)} s: ${Math.round(r.completed / seconds).toLocaleString()} IOPS, ` +
      `${(r.bytes / seconds / 1e6).toFixed(1)} MB/s, mean latency ${(r.latencySumMs / Math.max(1, r.latencyCount)).toFixed(3)} ms, ` +
      `max ${r.latencyMaxMs.toFixed(2)} ms; ${r.flushes} flushes; I/O errors ${r.ioErrors}` +
      (options.kind === 'verify' ? `; mismatches ${r.mismatches}, final read-back mismatches ${r.finalMismatches}` : '') +
      `; requests held back by the rate limit so far: ${disk?.stats.throttled ?? 0}`;
    document.body.dataset.lastRun = String(r.completed);
  } catch (err) {
    ui.result.textContent = `workload failed: ${describeError(err)}`;
  } finally {
    document.body.dataset.runs = String(++runsFinished);
    running = false;
    ui.run.disabled = guest === null;
    ui.stop.disabled = true;
  }
}

async function importFile(): Promise<void> {
  const file = ui.importFile.files?.[0];
  if (!file) return;
  const name = ui.name.value.trim() || 'lab-disk';
  const wasAttached = disk !== null && ui.backend.value === 'opfs';
  try {
    if (wasAttached) await detach();
    ui.imageStatus.textContent = `importing ${file.name}…`;
    const size = await importImage(file, name, OPFS_DIRECTORY, (done, total) => {
      ui.importProgress.value = total ? done / total : 1;
    });
    ui.importProgress.value = 1;
    ui.imageStatus.textContent = `imported ${file.name} as OPFS disk "${name}" (${size.toLocaleString()} bytes)`;
    document.body.dataset.imported = String(size);
    ui.backend.value = 'opfs';
    await attach();
  } catch (err) {
    ui.imageStatus.textContent = `import failed: ${describeError(err)}`;
  }
}

async function exportDisk(): Promise<void> {
  const name = ui.name.value.trim() || 'lab-disk';
  const wasAttached = disk !== null && ui.backend.value === 'opfs';
  try {
    // The device worker holds the disk's handle and lock: let go first
    // (closing flushes), then hand the browser the file on storage.
    if (wasAttached) await detach();
    const file = await exportImage(name, OPFS_DIRECTORY);
    const url = URL.createObjectURL(file);
    ui.download.href = url;
    ui.download.download = `${name}.img`;
    ui.download.click();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    ui.imageStatus.textContent = `exported "${name}" (${file.size.toLocaleString()} bytes)`;
    if (wasAttached) await attach();
  } catch (err) {
    ui.imageStatus.textContent = `export failed: ${describeError(err)}`;
  }
}

/** The IOPS limit as a rate-limiter config: tokens refill every 100 ms, so bursts stay short. */
function rateLimit(): RateLimiterConfig | null {
  const iops = Math.max(0, Number(ui.limit.value) || 0);
  return iops > 0 ? { ops: { size: Math.max(1, Math.round(iops / 10)), refillTimeMs: 100 } } : null;
}

ui.limit.onchange = () => void disk?.setRateLimit(rateLimit());
ui.attach.onclick = () => void attach();
ui.detach.onclick = () => void detach();
ui.run.onclick = () => void run();
ui.stop.onclick = () => guest?.stop();
ui.importFile.onchange = () => void importFile();
ui.export.onclick = () => void exportDisk();
if (globalThis.crossOriginIsolated !== true) ui.backend.querySelector<HTMLOptionElement>('option[value="opfs"]')!.disabled = true;

// The embedded default: a 64 MiB in-memory disk, attached on load.
void attach().then(() => (document.body.dataset.ready = 'true'));
