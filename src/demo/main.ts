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

import { listIndexedDbDisks } from '../backends/indexeddb.ts';
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
import { DiskState } from './disk-state.ts';
import { LAB_STATE_BYTES } from './lab-backend.ts';
import { offerDownload } from '../transfer/export.ts';
import type { ImportTarget } from '../transfer/import.ts';
import type { TransferProgress } from '../transfer/progress.ts';
import { TransferClient } from './transfer-client.ts';
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
  overlayRow: $<HTMLDivElement>('overlay-row'),
  overlayBase: $<HTMLSelectElement>('overlay-base'),
  overlayTop: $<HTMLSelectElement>('overlay-top'),
  diskState: $<HTMLDivElement>('disk-state'),
  importFile: $<HTMLInputElement>('import'),
  importUrl: $<HTMLInputElement>('import-url'),
  importUrlGo: $<HTMLButtonElement>('import-url-go'),
  importProgress: $<HTMLProgressElement>('import-progress'),
  progressText: $<HTMLSpanElement>('transfer-progress'),
  cancel: $<HTMLButtonElement>('transfer-cancel'),
  export: $<HTMLButtonElement>('export'),
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
/** What the attached disk is, for status lines, export and the state panel. */
let attached: LabDisk | null = null;
const transfers = new TransferClient();
const diskState = new DiskState(ui.diskState);
/** Whether the attached disk was opened read-only. */
let diskReadOnly = false;
let guest: GuestHandle | null = null;
let running = false;
/** The first storage error of the current run (the device's own words), if any. */
let firstStorageError: string | null = null;
/** The last IOPS limit sent to the device; a run starts once the device has it. */
let limitApplied: Promise<void> = Promise.resolve();
/** Finished runs, published on <body data-runs> for tests. */
let runsFinished = 0;
/**
 * Attach, detach, import and export change which disk is open and hold its lock: one runs at a
 * time, in the order they were asked for. An export that reattaches the disk afterwards finishes
 * that attach before the next click is served (a click that came in between used to see no disk
 * attached and leave the reattach to land after it, on the wrong disk).
 */
let diskOps: Promise<void> = Promise.resolve();
function exclusive(action: () => Promise<void>): Promise<void> {
  const next = diskOps.then(action, action);
  diskOps = next.catch(() => undefined);
  return next;
}

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

async function indexedDbDiskBytes(name: string): Promise<number | null> {
  const found = (await listIndexedDbDisks().catch(() => [])).find((d) => d.name === name);
  return found ? found.size : null;
}

type PersistentKind = 'opfs' | 'indexeddb';
const KIND_LABEL = { opfs: 'OPFS', indexeddb: 'IndexedDB' } as const;
const diskBytes = (kind: PersistentKind, name: string) => (kind === 'opfs' ? opfsDiskBytes(name) : indexedDbDiskBytes(name));
const persistentSpec = (kind: PersistentKind, name: string, extra: { size?: number; readOnly?: boolean } = {}): BackendSpec =>
  kind === 'opfs' ? { kind, name, directory: OPFS_DIRECTORY, lockWaitMs: 3000, ...extra } : { kind, name, lockWaitMs: 3000, ...extra };

/** A disk the lab can attach: the spec for createDisk, and the plain spec of the stored disk (for export). */
interface LabDisk {
  kind: 'memory' | PersistentKind | 'overlay';
  name: string;
  spec: BackendSpec;
  /** The disk as stored, opened without the lab's state wrapper; null for memory. */
  stored: BackendSpec | null;
  /** The state buffer the device's wrapper publishes into (IndexedDB, overlay). */
  state: Float64Array | null;
}

/** IndexedDB and overlay disks go through lab-backend.ts, which publishes their state for the panel. */
function observed(kind: LabDisk['kind'], name: string, stored: BackendSpec): LabDisk {
  const buffer = typeof SharedArrayBuffer === 'function' && globalThis.crossOriginIsolated ? new SharedArrayBuffer(LAB_STATE_BYTES) : new ArrayBuffer(LAB_STATE_BYTES);
  const url = new URL('./lab-backend.ts', import.meta.url).href;
  return { kind, name, stored, state: new Float64Array(buffer), spec: { kind: 'module', url, options: { spec: stored, state: buffer } } };
}

/** The overlay's base, from its select ('opfs:NAME' or 'indexeddb:NAME'), opened read-only. */
function overlayBase(): BackendSpec | null {
  const [kind, ...rest] = ui.overlayBase.value.split(':');
  const name = rest.join(':');
  if ((kind !== 'opfs' && kind !== 'indexeddb') || name === '') return null;
  return persistentSpec(kind, name, { readOnly: true });
}

/** Overlay-base refreshes started; only the newest one fills the list. */
let overlayRefreshes = 0;
/** Offer every stored disk as an overlay base. */
async function refreshOverlayBases(): Promise<void> {
  const refresh = ++overlayRefreshes;
  const opfs = globalThis.crossOriginIsolated ? await listOpfsDisks(OPFS_DIRECTORY).catch(() => []) : [];
  const idb = await listIndexedDbDisks().catch(() => []);
  // A later refresh listed the disks after this one: its list is the newer. The selection is read
  // now, not before the awaits, so a base chosen meanwhile is kept.
  if (refresh !== overlayRefreshes) return;
  const keep = ui.overlayBase.value;
  const options = [...opfs.map((d) => ['opfs', d]), ...idb.map((d) => ['indexeddb', d])] as Array<[PersistentKind, { name: string; size: number }]>;
  ui.overlayBase.replaceChildren(
    ...options.map(([kind, d]) => new Option(`${KIND_LABEL[kind]} "${d.name}" (${mib(d.size)})`, `${kind}:${d.name}`)),
  );
  if (options.length === 0) ui.overlayBase.append(new Option('no stored disk yet: import or attach one first', ''));
  if ([...ui.overlayBase.options].some((o) => o.value === keep)) ui.overlayBase.value = keep;
}

/** The disk fields, checked; null (with the reasons shown) when one is refused. */
async function diskSpec(): Promise<LabDisk | null> {
  const kind = ui.backend.value as LabDisk['kind'];
  ui.overlayRow.hidden = kind !== 'overlay';
  const persistent = kind !== 'memory';
  const name = persistent ? shown(ui.name, ui.nameError, checkDiskName(ui.name.value)) : (shown(ui.name, ui.nameError, { ok: true, value: '' }), '');
  const readOnly = ui.readOnly.checked;
  // Every field is read before the first await: the disk attached is the one the form showed when asked.
  const sizeText = ui.size.value;
  if (kind === 'overlay') {
    shown(ui.size, ui.sizeError, { ok: true, value: 0 });
    const base = overlayBase();
    if (name === null || base === null) return null;
    const top = persistentSpec(ui.overlayTop.value as PersistentKind, name);
    return observed('overlay', name, { kind: 'overlay', base, top, readOnly });
  }
  const existing = persistent && name ? await diskBytes(kind, name) : null;
  const free = persistent ? await storageFreeBytes() : null;
  const size = shown(ui.size, ui.sizeError, checkDiskSize(sizeText, kind, free, existing));
  if (size === null || name === null) return null;
  if (kind === 'opfs') return { kind, name, spec: persistentSpec(kind, name, { size, readOnly }), stored: persistentSpec(kind, name), state: null };
  if (kind === 'indexeddb') return observed(kind, name, persistentSpec(kind, name, { size, readOnly }));
  return { kind, name: '', spec: { kind: 'memory', size, readOnly }, stored: null, state: null };
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
    // Check first: a refused field leaves the attached disk as it is. The fields are read before
    // anything is awaited (an export's reattach runs while the person, or a test, edits them).
    const readOnly = ui.readOnly.checked;
    const limit = rateLimit();
    const lab = await diskSpec();
    if (!lab || limit === undefined) {
      say(`attach refused: correct the field marked in red; ${disk ? 'the attached disk is unchanged' : 'no disk is attached'}`, true);
      return;
    }
    await detach();
    say(`attaching the ${lab.kind} disk…`);
    try {
      const isolated = globalThis.crossOriginIsolated === true;
      if (!isolated && (lab.kind === 'opfs' || (lab.kind === 'overlay' && JSON.stringify(lab.stored).includes('"opfs"')))) {
        throw new Error('OPFS needs the device in a worker, and this page is not cross-origin isolated (no COOP/COEP)');
      }
      const ram = new WebAssembly.Memory({ initial: DEMO_RAM_PAGES, maximum: DEMO_RAM_MAX_PAGES, shared: isolated });
      const d = await createDisk({
        memory: [{ guestAddress: DEMO_RAM_BASE, source: ram, size: DEMO_RAM_MAX_PAGES * PAGE_BYTES }],
        backend: lab.spec,
        device: { serial: 'virtio-blk-web-lab', rateLimit: limit ?? undefined },
      });
      disk = d;
      attached = lab;
      diskReadOnly = readOnly;
      d.onStorageError = (error) => (firstStorageError ??= describeError(error));
      guest = await startGuest(d, ram);
      const sizeMiB = (d.stats.capacitySectors * 512) / MiB;
      say(
        `attached: ${lab.kind}${lab.name ? ` "${lab.name}"` : ''}, ${sizeMiB.toLocaleString()} MiB` +
          `${readOnly ? ', read-only' : ''}; device on ${d.host === 'worker' ? 'a worker' : 'this page (no cross-origin isolation)'}`,
      );
      document.body.dataset.attached = lab.kind;
      diskState.show(lab, d);
      ui.detach.disabled = false;
      ui.run.disabled = false;
    } catch (err) {
      await detach();
      say(`attach failed: ${describeError(err)}. No disk is attached.`, true);
    }
  } finally {
    ui.attach.disabled = false;
    void refreshStorage();
    void refreshOverlayBases();
  }
}

async function detach(): Promise<void> {
  guest?.stop();
  guest?.close();
  guest = null;
  const d = disk;
  disk = null;
  attached = null;
  diskState.show(null, null);
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
  const g = guest;
  running = true;
  ui.run.disabled = true;
  ui.stop.disabled = false;
  // A limit changed just before Run holds this run from its first request (the device worker
  // takes it as a message, and the guest's requests do not wait for its messages).
  await limitApplied;
  if (disk !== d || guest !== g) return; // detached meanwhile
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
    const r = await g.run(options, onProgress);
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

/** Where an import goes: the selected persistent kind, or OPFS when memory or overlay is selected. */
function importKind(): PersistentKind {
  return ui.backend.value === 'indexeddb' ? 'indexeddb' : 'opfs';
}

function showProgress(verb: 'imported' | 'exported'): (p: TransferProgress) => void {
  // An import skips the zero blocks it reads; an export never reads the holes the backend reports.
  const rest = verb === 'imported' ? 'zero blocks skipped' : 'in holes, not read';
  return (p) => {
    ui.importProgress.value = p.totalBytes ? p.doneBytes / p.totalBytes : 1;
    ui.progressText.textContent = `${verb} ${mib(p.doneBytes)} of ${mib(p.totalBytes)}; ${mib(p.dataBytes)} of data, ${mib(Math.max(0, p.doneBytes - p.dataBytes))} ${rest}`;
  };
}

/** Run a transfer with the progress bar and Cancel live; the page's other transfer buttons wait. */
async function withTransfer<T>(body: () => Promise<T>): Promise<T> {
  ui.cancel.disabled = false;
  for (const b of [ui.export, ui.importUrlGo]) b.disabled = true;
  ui.importFile.disabled = true;
  ui.importProgress.value = 0;
  try {
    return await body();
  } finally {
    ui.cancel.disabled = true;
    for (const b of [ui.export, ui.importUrlGo]) b.disabled = false;
    ui.importFile.disabled = false;
    document.body.dataset.transfers = String(Number(document.body.dataset.transfers ?? 0) + 1);
  }
}

/** Import a local file or a URL into the disk named in the name field (asking before replacing one). */
async function importSource(source: File | string): Promise<void> {
  const label = typeof source === 'string' ? source : source.name;
  const kind = importKind();
  const what = `${KIND_LABEL[kind]} disk`;
  const name = shown(ui.name, ui.nameError, checkDiskName(ui.name.value));
  if (name === null) {
    ui.imageStatus.textContent = `import not started: correct the ${KIND_LABEL[kind]} name`;
    return;
  }
  const existing = await diskBytes(kind, name);
  const sizeText = typeof source === 'string' ? 'the image at that URL' : `${source.name} (${mib(source.size)})`;
  if (existing !== null && !confirm(`Replace the ${what} "${name}" (${mib(existing)}) with ${sizeText}? Its contents will be lost.`)) {
    ui.imageStatus.textContent = `import cancelled: ${what} "${name}" is unchanged`;
    return;
  }
  const free = await storageFreeBytes();
  if (typeof source !== 'string' && free !== null && source.size - (existing ?? 0) > free) {
    ui.imageStatus.textContent = `import refused: ${source.name} is ${mib(source.size)} and this origin has ${mib(free)} free`;
    return;
  }
  // The device holds the disk's lock: let go of whatever is attached first.
  if (disk !== null && attached?.kind !== 'memory') await detach();
  ui.imageStatus.textContent = `importing ${label}…`;
  const target: ImportTarget = kind === 'opfs' ? { kind, name, directory: OPFS_DIRECTORY } : { kind, name };
  try {
    const result = await withTransfer(() => transfers.importImage(source, target, 'replace', showProgress('imported')));
    ui.importProgress.value = 1;
    ui.imageStatus.textContent =
      `imported ${label} as ${what} "${name}" (${result.diskBytes.toLocaleString()} bytes; ` +
      `${result.dataBytes.toLocaleString()} bytes of data stored, zero blocks skipped)`;
    document.body.dataset.imported = String(result.diskBytes);
    ui.backend.value = kind;
    await attach();
  } catch (err) {
    ui.imageStatus.textContent = `import failed: ${describeError(err)}${(err as { code?: string }).code === 'aborted' ? `; no ${what} "${name}" was made` : ''}`;
  }
}

async function importFile(): Promise<void> {
  const file = ui.importFile.files?.[0];
  if (!file) return;
  try {
    await importSource(file);
  } finally {
    ui.importFile.value = '';
  }
}

async function exportDisk(): Promise<void> {
  const selected = ui.backend.value;
  const kind = selected === 'indexeddb' || selected === 'overlay' ? selected : 'opfs';
  const name = shown(ui.name, ui.nameError, checkDiskName(ui.name.value));
  if (name === null) {
    ui.imageStatus.textContent = 'export not started: correct the name';
    return;
  }
  let spec: BackendSpec;
  if (kind === 'overlay') {
    const base = overlayBase();
    const topKind = ui.overlayTop.value as PersistentKind;
    if (base === null || (await diskBytes(topKind, name)) === null) {
      ui.imageStatus.textContent = `there is no overlay "${name}" to export: attach one with that name first`;
      return;
    }
    spec = { kind: 'overlay', base, top: persistentSpec(topKind, name), readOnly: true };
  } else {
    if ((await diskBytes(kind, name)) === null) {
      ui.imageStatus.textContent = `there is no ${KIND_LABEL[kind]} disk "${name}" to export: attach or import one with that name first`;
      return;
    }
    spec = persistentSpec(kind, name, { readOnly: true });
  }
  const wasAttached = disk !== null && attached?.kind !== 'memory';
  try {
    // The device holds the disk's handle and lock: let go first (closing flushes).
    if (wasAttached) await detach();
    ui.imageStatus.textContent = `exporting "${name}"…`;
    const file = await withTransfer(() => transfers.exportImage(spec, `${name}.img`, showProgress('exported')));
    offerDownload(file, `${name}.img`);
    ui.imageStatus.textContent = `exported "${name}" (${file.size.toLocaleString()} bytes)`;
  } catch (err) {
    ui.imageStatus.textContent = `export failed: ${describeError(err)}`;
  } finally {
    if (wasAttached) await attach();
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
  if (limit !== undefined && disk) limitApplied = disk.setRateLimit(limit).catch(() => undefined);
};
for (const input of [ui.qd, ui.seconds]) input.oninput = () => void runOptions();
ui.seconds.onchange = () => {
  if (!running && ui.result.textContent === '') for (const chart of Object.values(charts)) chart.reset(Number(ui.seconds.value) || 10);
};
ui.block.onchange = () => void runOptions();
for (const input of [ui.size, ui.name]) input.oninput = () => void diskSpec();
ui.backend.onchange = () => void diskSpec();
ui.attach.onclick = () => void exclusive(attach);
ui.detach.onclick = () => void exclusive(detach);
ui.run.onclick = () => void run();
ui.stop.onclick = () => guest?.stop();
ui.importFile.onchange = () => void exclusive(importFile);
ui.importUrlGo.onclick = () => {
  const url = ui.importUrl.value.trim();
  if (url) void exclusive(() => importSource(url));
};
ui.cancel.onclick = () => transfers.cancel();
ui.overlayBase.onchange = () => void diskSpec();
ui.overlayTop.onchange = () => void diskSpec();
ui.export.onclick = () => void exclusive(exportDisk);
ui.persist.onclick = () => void persist();
if (globalThis.crossOriginIsolated !== true) ui.backend.querySelector<HTMLOptionElement>('option[value="opfs"]')!.disabled = true;

// The embedded default: a 64 MiB in-memory disk, attached on load.
void refreshOverlayBases();
void exclusive(attach).then(() => (document.body.dataset.ready = 'true'));
