// The lab page (`npm start`). It is an emulator in miniature: it owns guest
// RAM (a WebAssembly.Memory), attaches a disk with `createDisk`, and runs a
// guest — a vCPU worker with the driver when the page is cross-origin
// isolated, the same driver on this page when it is not (same-thread host).
//
// It attaches an in-memory disk on load, so "Run" works with no choices made.
//
// The page reports what happened, not what was hoped for: a request the
// device failed counts as a failure (in red, with the first one described),
// never in IOPS or MB/s; an input out of range is refused with its reason
// (validate.ts), never clamped; every number on screen belongs to the disk
// attached now (they are cleared when it changes).

import { listOpfsDisks } from '../backends/opfs.ts';
import { createDisk, type Disk } from '../host/browser/disk.ts';
import type { BackendSpec } from '../host/browser/worker-protocol.ts';
import type { RateLimiterConfig } from '../limiter/index.ts';
import { GuestMemory } from '../virtio/memory.ts';
import { TimeChart } from './chart.ts';
import type { GuestReply, GuestRequest } from './guest-worker.ts';
import {
  DEMO_DATA_BYTES,
  DEMO_RAM_BASE,
  DEMO_RAM_MAX_PAGES,
  DEMO_RAM_PAGES,
  DemoGuest,
  type DemoRunOptions,
  type DemoRunResult,
} from './guest.ts';
import { exportImage, importImage } from './image-io.ts';
import { addHistogram, latencyHistogram, latencyQuantile } from './latency.ts';
import { checkDiskName, checkDiskSize, checkIopsLimit, checkQueueDepth, checkSeconds, type Checked } from './validate.ts';
import type { WorkloadKind, WorkloadProgress } from './workload.ts';

const OPFS_DIRECTORY = 'lab';
const PAGE_BYTES = 65536;
const MiB = 1 << 20;
/** The rates on the tiles and charts are taken over this long. */
const SAMPLE_SECONDS = 0.5;

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing`);
  return el as T;
};
const ui = {
  backend: $<HTMLSelectElement>('backend'),
  size: $<HTMLInputElement>('size'),
  sizeError: $<HTMLSpanElement>('size-error'),
  name: $<HTMLInputElement>('name'),
  nameError: $<HTMLSpanElement>('name-error'),
  readOnly: $<HTMLInputElement>('readonly'),
  attach: $<HTMLButtonElement>('attach'),
  detach: $<HTMLButtonElement>('detach'),
  status: $<HTMLDivElement>('status'),
  kind: $<HTMLSelectElement>('kind'),
  qd: $<HTMLInputElement>('qd'),
  qdError: $<HTMLSpanElement>('qd-error'),
  block: $<HTMLSelectElement>('block'),
  seconds: $<HTMLInputElement>('seconds'),
  secondsError: $<HTMLSpanElement>('seconds-error'),
  limit: $<HTMLInputElement>('limit'),
  limitError: $<HTMLSpanElement>('limit-error'),
  run: $<HTMLButtonElement>('run'),
  stop: $<HTMLButtonElement>('stop'),
  iops: $<HTMLOutputElement>('iops'),
  mbps: $<HTMLOutputElement>('mbps'),
  latency: $<HTMLOutputElement>('latency'),
  completed: $<HTMLOutputElement>('completed'),
  failed: $<HTMLOutputElement>('failed'),
  failedTile: $<HTMLDivElement>('failed-tile'),
  result: $<HTMLDivElement>('result'),
  importFile: $<HTMLInputElement>('import'),
  importProgress: $<HTMLProgressElement>('import-progress'),
  export: $<HTMLButtonElement>('export'),
  download: $<HTMLAnchorElement>('download'),
  imageStatus: $<HTMLSpanElement>('image-status'),
  storageUsage: $<HTMLSpanElement>('storage-usage'),
  persist: $<HTMLButtonElement>('persist'),
  persistStatus: $<HTMLSpanElement>('persist-status'),
};

const charts = {
  iops: new TimeChart($<HTMLCanvasElement>('chart-iops'), {
    yLabel: 'IOPS',
    series: [{ label: 'IOPS', color: '#2a7de1' }],
    format: (v) => (v >= 10_000 ? `${(v / 1000).toLocaleString()}k` : Math.round(v).toLocaleString()),
  }),
  mbps: new TimeChart($<HTMLCanvasElement>('chart-mbps'), {
    yLabel: 'MB/s',
    series: [{ label: 'MB/s', color: '#1a9850' }],
    format: (v) => String(+v.toPrecision(6)),
  }),
  latency: new TimeChart($<HTMLCanvasElement>('chart-latency'), {
    yLabel: 'latency (ms)',
    series: [
      { label: 'p50', color: '#7b3294' },
      { label: 'p99', color: '#d95f02' },
    ],
    format: (v) => String(+v.toPrecision(6)),
  }),
};

/** The guest, wherever it runs: `run` resolves at the end, progress comes through the callback. */
interface GuestHandle {
  readonly queueSize: number;
  run(options: DemoRunOptions, onProgress: (p: WorkloadProgress) => void): Promise<DemoRunResult>;
  stop(): void;
  close(): void;
}

let disk: Disk | null = null;
/** Whether the attached disk was opened read-only. */
let diskReadOnly = false;
let guest: GuestHandle | null = null;
let running = false;
/** The first storage error of the current run (the device's own words), if any. */
let firstStorageError: string | null = null;
/** Finished runs, published on <body data-runs> for tests. */
let runsFinished = 0;

function say(text: string, error = false): void {
  ui.status.textContent = text;
  ui.status.classList.toggle('error', error);
}

function describeError(err: unknown): string {
  if (err instanceof RangeError && /array buffer|typed array length|allocation/i.test(err.message)) {
    return `the browser could not allocate the disk's memory (${err.message})`;
  }
  if (err instanceof Error) return `${err.name}${(err as { code?: string }).code ? ` [${(err as { code?: string }).code}]` : ''}: ${err.message}`;
  return String(err);
}

/** Show a check's reason beside its field (or clear it); returns the value or null. */
function shown<T>(input: HTMLInputElement, slot: HTMLElement, check: Checked<T>): T | null {
  input.setAttribute('aria-invalid', String(!check.ok));
  slot.textContent = check.ok ? '' : check.reason;
  return check.ok ? check.value : null;
}

const mib = (bytes: number) => `${(bytes / MiB).toLocaleString(undefined, { maximumFractionDigits: 1 })} MiB`;

async function storageFreeBytes(): Promise<number | null> {
  const e = await navigator.storage?.estimate?.();
  return e?.quota === undefined ? null : e.quota - (e.usage ?? 0);
}

async function opfsDiskBytes(name: string): Promise<number | null> {
  if (!globalThis.crossOriginIsolated) return null;
  const found = (await listOpfsDisks(OPFS_DIRECTORY).catch(() => [])).find((d) => d.name === name);
  return found ? found.size : null;
}

/** The disk fields, checked; null (with the reasons shown) when one is refused. */
async function diskSpec(): Promise<Exclude<BackendSpec, { kind: 'module' }> | null> {
  const opfs = ui.backend.value === 'opfs';
  const name = opfs ? shown(ui.name, ui.nameError, checkDiskName(ui.name.value)) : (shown(ui.name, ui.nameError, { ok: true, value: '' }), '');
  const existing = opfs && name ? await opfsDiskBytes(name) : null;
  const free = opfs ? await storageFreeBytes() : null;
  const size = shown(ui.size, ui.sizeError, checkDiskSize(ui.size.value, opfs ? 'opfs' : 'memory', free, existing));
  if (size === null || name === null) return null;
  const readOnly = ui.readOnly.checked;
  if (opfs) return { kind: 'opfs', name, directory: OPFS_DIRECTORY, size, readOnly, lockWaitMs: 3000 };
  return { kind: 'memory', size, readOnly };
}

/** The workload fields, checked against the attached guest; null when one is refused. */
function runOptions(): DemoRunOptions | null {
  const blockBytes = Number(ui.block.value);
  const queueDepth = shown(ui.qd, ui.qdError, checkQueueDepth(ui.qd.value, guest?.queueSize ?? 256, blockBytes, DEMO_DATA_BYTES));
  const seconds = shown(ui.seconds, ui.secondsError, checkSeconds(ui.seconds.value));
  if (queueDepth === null || seconds === null) return null;
  return { kind: ui.kind.value as WorkloadKind, queueDepth, blockBytes, durationMs: seconds * 1000, seed: Date.now() % 100_000 };
}

/** The IOPS limit as a rate-limiter config, exact for any whole number (null: none; undefined: refused). */
function rateLimit(): RateLimiterConfig | null | undefined {
  const iops = shown(ui.limit, ui.limitError, checkIopsLimit(ui.limit.value));
  if (iops === null) return undefined;
  if (iops === 0) return null;
  // Refill every 100 ms when that divides the rate evenly (short bursts), else every second.
  return iops % 10 === 0 ? { ops: { size: iops / 10, refillTimeMs: 100 } } : { ops: { size: iops, refillTimeMs: 1000 } };
}

/** Forget every number from an earlier run or disk. */
function clearResults(): void {
  for (const out of [ui.iops, ui.mbps, ui.latency, ui.completed, ui.failed]) out.value = '–';
  ui.failedTile.classList.add('none');
  ui.result.textContent = '';
  ui.result.classList.remove('error');
  for (const chart of Object.values(charts)) chart.reset(Number(ui.seconds.value) || 10);
  delete document.body.dataset.lastRun;
}

async function refreshStorage(): Promise<void> {
  if (!navigator.storage?.estimate) {
    ui.storageUsage.textContent = 'this browser does not report storage use (navigator.storage.estimate)';
    return;
  }
  const { usage = 0, quota = 0 } = await navigator.storage.estimate();
  ui.storageUsage.textContent = `used ${mib(usage)} of ${mib(quota)} quota; ${mib(quota - usage)} free`;
  const persisted = (await navigator.storage.persisted?.()) ?? false;
  ui.persistStatus.textContent = persisted
    ? 'persistent: the browser will not evict this site’s storage under pressure'
    : 'best-effort: the browser may evict this site’s storage under pressure';
  document.body.dataset.persisted = String(persisted);
}

async function startGuest(d: Disk, ram: WebAssembly.Memory): Promise<GuestHandle> {
  const stopFlag = new Int32Array(typeof SharedArrayBuffer === 'function' ? new SharedArrayBuffer(4) : new ArrayBuffer(4));
  if (d.host === 'worker') {
    const worker = new Worker(new URL('./guest-worker.ts', import.meta.url), { type: 'module', name: 'vcpu' });
    let onReply: (reply: GuestReply) => void = () => {};
    worker.onmessage = (e: MessageEvent<GuestReply>) => onReply(e.data);
    const post = (request: GuestRequest): void => worker.postMessage(request);
    const info = await new Promise<DemoGuest['info']>((resolve, reject) => {
      onReply = (r) => (r.type === 'booted' ? resolve(r.info) : r.type === 'error' ? reject(new Error(r.message)) : undefined);
      post({ type: 'boot', ram, maxBytes: DEMO_RAM_MAX_PAGES * PAGE_BYTES, state: d.state, stop: stopFlag });
    });
    return {
      queueSize: info.queueSize,
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
    queueSize: local.info.queueSize,
    run: (options, onProgress) => local.run(options, onProgress),
    stop: () => Atomics.store(stopFlag, 0, 1),
    close: () => {},
  };
}

async function attach(): Promise<void> {
  ui.attach.disabled = true;
  try {
    // Check first: a refused field leaves the attached disk as it is.
    const spec = await diskSpec();
    const limit = rateLimit();
    if (!spec || limit === undefined) {
      say(`attach refused: correct the field marked in red; ${disk ? 'the attached disk is unchanged' : 'no disk is attached'}`, true);
      return;
    }
    await detach();
    say(`attaching a ${spec.kind} disk…`);
    try {
      const isolated = globalThis.crossOriginIsolated === true;
      if (!isolated && spec.kind === 'opfs') {
        throw new Error('OPFS needs the device in a worker, and this page is not cross-origin isolated (no COOP/COEP)');
      }
      const ram = new WebAssembly.Memory({ initial: DEMO_RAM_PAGES, maximum: DEMO_RAM_MAX_PAGES, shared: isolated });
      const d = await createDisk({
        memory: [{ guestAddress: DEMO_RAM_BASE, source: ram, size: DEMO_RAM_MAX_PAGES * PAGE_BYTES }],
        backend: spec,
        device: { serial: 'virtio-blk-web-lab', rateLimit: limit ?? undefined },
      });
      disk = d;
      diskReadOnly = spec.readOnly ?? false;
      d.onStorageError = (error) => (firstStorageError ??= describeError(error));
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
      await detach();
      say(`attach failed: ${describeError(err)}. No disk is attached.`, true);
    }
  } finally {
    ui.attach.disabled = false;
    void refreshStorage();
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
  clearResults();
  if (d) {
    await d.close();
    say('detached: no disk is attached');
    void refreshStorage();
  }
}

async function run(): Promise<void> {
  if (!guest || running || !disk) return;
  const options = runOptions();
  if (!options) {
    ui.result.textContent = 'not started: correct the field marked in red';
    ui.result.classList.add('error');
    return;
  }
  const d = disk;
  running = true;
  ui.run.disabled = true;
  ui.stop.disabled = false;
  clearResults();
  for (const chart of Object.values(charts)) chart.reset(options.durationMs / 1000);
  firstStorageError = null;
  const throttledBefore = d.stats.throttled;
  const started = performance.now();
  let completed = 0;
  let failed = 0;
  const runLatency = latencyHistogram();
  let sample = { at: started, bytes: 0, ok: 0, latency: latencyHistogram() };
  const onProgress = (p: WorkloadProgress): void => {
    completed += p.completed;
    failed += p.failed;
    sample.bytes += p.bytes;
    sample.ok += p.completed - p.failed;
    addHistogram(sample.latency, p.latencyBuckets);
    addHistogram(runLatency, p.latencyBuckets);
    ui.completed.value = completed.toLocaleString();
    ui.failed.value = failed.toLocaleString();
    ui.failedTile.classList.toggle('none', failed === 0);
    ui.latency.value = `${formatMs(latencyQuantile(runLatency, 0.5))} / ${formatMs(latencyQuantile(runLatency, 0.99))}`;
    const now = performance.now();
    const seconds = (now - sample.at) / 1000;
    if (seconds >= SAMPLE_SECONDS) {
      const iops = sample.ok / seconds;
      const mbps = sample.bytes / seconds / 1e6;
      ui.iops.value = Math.round(iops).toLocaleString();
      ui.mbps.value = mbps.toFixed(1);
      const t = (now - started) / 1000;
      charts.iops.push(t, [iops]);
      charts.mbps.push(t, [mbps]);
      charts.latency.push(t, [latencyQuantile(sample.latency, 0.5), latencyQuantile(sample.latency, 0.99)]);
      sample = { at: now, bytes: 0, ok: 0, latency: latencyHistogram() };
    }
  };
  try {
    const r = await guest.run(options, onProgress);
    if (disk !== d) return; // detached meanwhile: these numbers belong to no disk on screen
    ui.result.textContent = describeRun(r, d.stats.throttled - throttledBefore, options.kind);
    ui.result.classList.toggle('error', r.ioErrors > 0 || r.mismatches > 0 || r.finalMismatches !== 0);
    document.body.dataset.lastRun = String(r.completed);
  } catch (err) {
    if (disk === d) {
      ui.result.textContent = `workload failed: ${describeError(err)}`;
      ui.result.classList.add('error');
    }
  } finally {
    document.body.dataset.runs = String(++runsFinished);
    running = false;
    ui.run.disabled = guest === null;
    ui.stop.disabled = true;
    void refreshStorage();
  }
}

function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return '–';
  return ms < 1 ? `${Math.round(ms * 1000)} µs` : `${+ms.toPrecision(3)} ms`;
}

/** The run's result in words: failures first, then what succeeded. */
function describeRun(r: DemoRunResult, throttled: number, kind: WorkloadKind): string {
  const seconds = r.elapsedMs / 1000;
  const ok = r.completed - r.ioErrors;
  const lines: string[] = [];
  lines.push(r.stopped ? `Stopped by Stop after ${seconds.toFixed(1)} s.` : `Ran ${seconds.toFixed(1)} s.`);
  if (r.ioErrors > 0) {
    const readOnly = diskReadOnly && r.writes > 0 ? ' The disk is read-only: the device fails every write.' : '';
    lines.push(
      `FAILED: ${r.ioErrors.toLocaleString()} of ${r.completed.toLocaleString()} requests failed. ` +
        `First failure: ${r.firstFailure ?? 'unknown'}${firstStorageError ? ` (storage: ${firstStorageError})` : ''}.${readOnly}`,
    );
  }
  lines.push(
    `${ok.toLocaleString()} requests succeeded: ${Math.round(ok / seconds).toLocaleString()} IOPS, ` +
      `${(r.bytes / seconds / 1e6).toFixed(1)} MB/s; latency p50 ${formatMs(latencyQuantile(r.latencyBuckets, 0.5))}, ` +
      `p99 ${formatMs(latencyQuantile(r.latencyBuckets, 0.99))}, max ${formatMs(r.latencyMaxMs)}; ${r.flushes} flushes.`,
  );
  if (kind === 'verify') lines.push(`Verify: mismatches ${r.mismatches}, final read-back mismatches ${r.finalMismatches}.`);
  lines.push(`Requests held back by the rate limit in this run: ${throttled.toLocaleString()}.`);
  return lines.join('\n');
}

async function importFile(): Promise<void> {
  const file = ui.importFile.files?.[0];
  if (!file) return;
  const name = shown(ui.name, ui.nameError, checkDiskName(ui.name.value));
  try {
    if (name === null) {
      ui.imageStatus.textContent = 'import not started: correct the OPFS name';
      return;
    }
    const existing = await opfsDiskBytes(name);
    if (existing !== null && !confirm(`Replace the OPFS disk "${name}" (${mib(existing)}) with ${file.name} (${mib(file.size)})? Its contents will be lost.`)) {
      ui.imageStatus.textContent = `import cancelled: OPFS disk "${name}" is unchanged`;
      return;
    }
    const free = await storageFreeBytes();
    if (free !== null && file.size - (existing ?? 0) > free) {
      ui.imageStatus.textContent = `import refused: ${file.name} is ${mib(file.size)} and this origin has ${mib(free)} free`;
      return;
    }
    if (disk !== null && ui.backend.value === 'opfs') await detach();
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
  } finally {
    ui.importFile.value = '';
  }
}

async function exportDisk(): Promise<void> {
  const name = shown(ui.name, ui.nameError, checkDiskName(ui.name.value));
  if (name === null) {
    ui.imageStatus.textContent = 'export not started: correct the OPFS name';
    return;
  }
  if ((await opfsDiskBytes(name)) === null) {
    ui.imageStatus.textContent = `there is no OPFS disk "${name}" to export: attach or import one with that name first`;
    return;
  }
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

async function persist(): Promise<void> {
  if (!navigator.storage?.persist) {
    ui.persistStatus.textContent = 'this browser has no navigator.storage.persist()';
    return;
  }
  const granted = await navigator.storage.persist();
  await refreshStorage();
  if (!granted) ui.persistStatus.textContent = 'the browser declined to make storage persistent; it stays best-effort';
}

ui.limit.onchange = () => {
  const limit = rateLimit();
  if (limit !== undefined) void disk?.setRateLimit(limit);
};
for (const input of [ui.qd, ui.seconds]) input.oninput = () => void runOptions();
ui.seconds.onchange = () => {
  if (!running && ui.result.textContent === '') for (const chart of Object.values(charts)) chart.reset(Number(ui.seconds.value) || 10);
};
ui.block.onchange = () => void runOptions();
for (const input of [ui.size, ui.name]) input.oninput = () => void diskSpec();
ui.backend.onchange = () => void diskSpec();
ui.attach.onclick = () => void attach();
ui.detach.onclick = () => void detach();
ui.run.onclick = () => void run();
ui.stop.onclick = () => guest?.stop();
ui.importFile.onchange = () => void importFile();
ui.export.onclick = () => void exportDisk();
ui.persist.onclick = () => void persist();
if (globalThis.crossOriginIsolated !== true) ui.backend.querySelector<HTMLOptionElement>('option[value="opfs"]')!.disabled = true;

// The embedded default: a 64 MiB in-memory disk, attached on load.
void attach().then(() => (document.body.dataset.ready = 'true'));
