// `npm run bench`: the device against the raw storage, in headless Chromium.
//
// For each backend, every workload runs through the whole path — the vCPU
// worker's driver → doorbell → device worker → storage → used ring → IRQ
// word → vCPU — and, alternating with it in the same run, straight against
// the storage API (harness/raw-worker.ts). The device/raw ratio is the
// headline: both sides share the machine's state at that moment, which
// matters on a 2-core machine that other work may be using.
//
// Also measured: QD1 latency against the bare Atomics round trip, CPU time
// per request of the device and vCPU worker threads (Linux /proc schedstat),
// the device worker's JS heap over many requests (CDP), the rate limiter's
// accuracy through the worker host, and a CPU profile of the device worker
// on the OPFS 4 KiB QD32 row. Then the Linux guest section (e2e/linux/bench.ts)
// when it exists. Nothing here asserts: it prints and writes JSON.
//
// The `http` section (bench/node/http.ts) runs hosted images against a local
// server on its own page, after the others.
//
//   npm run bench [-- --quick] [-- --no-linux] [-- --only=device,latency,memory,limiter,profile,http,indexeddb,wasi,overlay,v86,linux] [-- --backend=memory,opfs]

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Page } from 'playwright';
import { type LatencySummary, type WorkloadResult } from './harness/protocol.ts';
import type { GroupRunResult } from '../e2e/harness/group-run.ts';
import { callPage, openBenchBrowser } from './node/browser.ts';
import { httpSection, httpTable, type HttpSectionResult } from './node/http.ts';
import { indexedDbSection, indexedDbTable, type IndexedDbSectionResult } from './node/indexeddb.ts';
import { overlaySection, overlayTable, type OverlaySectionResult } from './node/overlay.ts';
import { wasiSection, wasiTable, type WasiSectionResult } from './node/wasi.ts';
import { v86Section, v86Table, type V86SectionResult } from './node/v86.ts';
import { inspectWorkers, sampleHeap, profileWorker, type ProfileEntry, type WorkerInspector } from './node/cdp.ts';
import { FULL, GROUP_LIMITER_CASE, LIMITER_CASES, NO_POLLING, NO_POLLING_ROWS, POLLING, QUICK, WORKLOADS, backends, spec, type BackendCase, type Polling, type Timing } from './node/plan.ts';
import { report, type BenchReport, type DeviceRow, type LatencyRow, type RawResult } from './node/report.ts';
import { canReadThreads, chromiumPids, cpuNs, newThreads, workerThreads, type ThreadRef } from './node/threads.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SECTIONS = ['device', 'latency', 'memory', 'limiter', 'profile', 'http', 'indexeddb', 'wasi', 'overlay', 'v86', 'linux'] as const;
type Section = (typeof SECTIONS)[number];

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    'no-linux': { type: 'boolean', default: false },
    only: { type: 'string' },
    backend: { type: 'string' },
  },
});
const timing: Timing = values.quick ? QUICK : FULL;
const only = new Set((values.only?.split(',') ?? SECTIONS).map((s) => s.trim()) as Section[]);
if (values['no-linux'] || values.quick) only.delete('linux');

type DeviceResult = WorkloadResult & { deviceCompleted: number; notifications: number; interrupts: number };

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Threads whose CPU time we read: the device worker's and the vCPU's. */
interface Threads {
  device: ThreadRef | null;
  vcpu: ThreadRef | null;
  raw: ThreadRef | null;
}

async function openDisk(page: Page, profileDir: string, c: BackendCase, options: { limiter?: unknown; polling?: Polling } = {}): Promise<ThreadRef | null> {
  const pids = canReadThreads ? chromiumPids(profileDir) : [];
  const before = workerThreads(pids);
  const polling = options.polling ?? POLLING;
  await callPage(page, 'openDisk', { backend: c.device, limiter: options.limiter, ...polling });
  const fresh = newThreads(before, workerThreads(canReadThreads ? chromiumPids(profileDir) : []));
  return fresh.length === 1 ? fresh[0]! : null;
}

/** Run one device workload, with the CPU the two threads used over it. */
async function deviceRun(page: Page, threads: Threads, s: ReturnType<typeof spec>) {
  const d0 = threads.device ? cpuNs(threads.device) : null;
  const v0 = threads.vcpu ? cpuNs(threads.vcpu) : null;
  const r = await callPage<DeviceResult>(page, 'device', s);
  const d1 = threads.device ? cpuNs(threads.device) : null;
  const v1 = threads.vcpu ? cpuNs(threads.vcpu) : null;
  const perReq = (a: number | null, b: number | null) => (a !== null && b !== null && r.deviceCompleted > 0 ? (b - a) / 1000 / r.deviceCompleted : null);
  return { ...r, deviceCpuUsPerRequest: perReq(d0, d1), vcpuCpuUsPerRequest: perReq(v0, v1) };
}

/** Of the workers the page started, the one that used the most CPU while `work` ran. */
async function busiestThread(candidates: ThreadRef[], work: () => Promise<unknown>): Promise<ThreadRef | null> {
  const before = candidates.map((t) => cpuNs(t) ?? 0);
  await work();
  let best: ThreadRef | null = null;
  let most = -1;
  candidates.forEach((t, i) => {
    const used = (cpuNs(t) ?? 0) - before[i]!;
    if (used > most) [best, most] = [t, used];
  });
  return best;
}

/** A raw run, with the raw worker thread's CPU time per request. */
async function rawRun(page: Page, thread: ThreadRef | null, s: ReturnType<typeof spec>): Promise<RawResult> {
  const c0 = thread ? cpuNs(thread) : null;
  const r = await callPage<WorkloadResult>(page, 'raw', s);
  const c1 = thread ? cpuNs(thread) : null;
  // The raw run's warm-up requests are not counted; their CPU is: scale by time instead.
  const wallNs = (r.seconds + s.warmupMs / 1000) * 1e9;
  const busy = c0 !== null && c1 !== null ? Math.min(1, (c1 - c0) / wallNs) : null;
  return { ...r, cpuUsPerRequest: busy !== null && r.iops > 0 ? (busy * 1e6) / r.iops : null };
}

async function deviceSection(page: Page, profileDir: string, pageWorkers: ThreadRef[], out: BenchReport): Promise<void> {
  const wanted = values.backend?.toLowerCase().split(',');
  for (const c of backends(timing, out.runId)) {
    if (wanted && !wanted.includes(c.label.toLowerCase())) continue;
    if (c.fill === 'files' && c.device.kind === 'opfs' && c.raw.kind === 'opfs') {
      log(`${c.label}: writing ${timing.diskBytes >> 20} MiB into each disk file`);
      await callPage(page, 'prepareOpfs', c.device);
      await callPage(page, 'prepareOpfs', c.raw);
    }
    await callPage(page, 'rawOpen', c.raw);
    const threads: Threads = { device: await openDisk(page, profileDir, c), vcpu: null, raw: null };
    if (c.fill === 'device') {
      log(`${c.label}: writing ${timing.diskBytes >> 20} MiB through the device`);
      const seqWrite = WORKLOADS.find((w) => w.name === '1M seqwrite' && w.queueDepth === 8)!;
      await callPage(page, 'device', spec(seqWrite, timing, { warmupMs: 0, durationMs: 600_000, maxRequests: timing.diskBytes / seqWrite.blockBytes }));
    }
    if (canReadThreads && pageWorkers.length > 0) {
      const probe = spec(WORKLOADS[0]!, { ...timing, warmupMs: 0, durationMs: 100 });
      threads.vcpu = await busiestThread(pageWorkers, () => callPage(page, 'device', probe));
      threads.raw = await busiestThread(pageWorkers, () => callPage(page, 'raw', { ...probe, queueDepth: 1 }));
    }
    // Read both disks end to end first: on this machine the page cache of a
    // file just written does not stay warm (the first random pass over a
    // fresh OPFS file ran 5× slower than the next), and whichever side ran
    // first would pay for it.
    const seqRead = WORKLOADS.find((w) => w.name === '1M seqread' && w.queueDepth === 8)!;
    const wholeDisk = spec(seqRead, timing, { warmupMs: 0, durationMs: 600_000, maxRequests: timing.diskBytes / seqRead.blockBytes });
    await callPage(page, 'device', wholeDisk);
    await callPage(page, 'raw', { ...wholeDisk, queueDepth: 1 });
    const best = new Map<string, DeviceRow>();
    const rawBest = new Map<string, RawResult>();
    for (let round = 0; round < timing.rounds; round++) {
      const rawDone = new Set<string>();
      for (const w of WORKLOADS) {
        const key = `${w.name} QD${w.queueDepth}`;
        const s = spec(w, timing, { seed: round + 1 });
        const dev = await deviceRun(page, threads, s);
        const rawKey = w.name;
        if (!rawDone.has(rawKey)) {
          rawDone.add(rawKey);
          const raw = await rawRun(page, threads.raw, { ...s, queueDepth: 1 });
          if ((rawBest.get(rawKey)?.iops ?? 0) < raw.iops) rawBest.set(rawKey, raw);
        }
        const prev = best.get(key);
        if (!prev || prev.device.iops < dev.iops) {
          best.set(key, {
            backend: c.label,
            workload: w.name,
            op: w.op,
            blockBytes: w.blockBytes,
            queueDepth: w.queueDepth,
            device: dev,
            raw: null,
            ratio: null,
          });
        }
        log(`${c.label} ${key}: device ${Math.round(dev.iops)} IOPS (${dev.deviceCpuUsPerRequest?.toFixed(2) ?? '?'} µs CPU/req in the device worker)`);
      }
    }
    // Diagnostic: the raw API again, but with a new view per request as the
    // device path makes them (GuestMemory.view → subarray). The gap between
    // this and the raw row is what fresh views cost the storage API itself.
    for (const name of ['4K randread', '1M seqread']) {
      const w = WORKLOADS.find((x) => x.name === name)!;
      const fresh = await rawRun(page, threads.raw, spec(w, timing, { queueDepth: 1, rawFreshViews: true }));
      const reused = await rawRun(page, threads.raw, spec(w, timing, { queueDepth: 1 }));
      out.freshViews.push({ backend: c.label, workload: name, reused, fresh });
      log(`${c.label} raw ${name}: reused views ${Math.round(reused.iops)} IOPS, fresh views ${Math.round(fresh.iops)} IOPS`);
    }
    for (const row of best.values()) {
      row.raw = rawBest.get(row.workload) ?? null;
      row.ratio = row.raw ? row.device.iops / row.raw.iops : null;
      out.device.push(row);
    }
    await noPollingRows(page, profileDir, c, threads, out);
    if (only.has('latency')) out.latency.push(await latencyFor(page, profileDir, c, threads, pageWorkers));
    if (only.has('memory') && c.label === 'OPFS') out.memory = await memoryGrowth(page, c);
    if (only.has('profile') && c.label === 'OPFS') out.profile = await profile(page, c);
    await callPage(page, 'rawClose');
    await callPage(page, 'closeDisk');
    if (c.device.kind === 'opfs' && c.raw.kind === 'opfs') {
      await callPage(page, 'removeOpfs', c.device);
      await callPage(page, 'removeOpfs', c.raw);
    }
  }
}

let inspector: WorkerInspector | null = null;

/** A few rows again on a disk where neither side polls; then the default disk back. */
async function noPollingRows(page: Page, profileDir: string, c: BackendCase, threads: Threads, out: BenchReport): Promise<void> {
  await callPage(page, 'closeDisk');
  threads.device = await openDisk(page, profileDir, c, { polling: NO_POLLING });
  for (const [name, qd] of NO_POLLING_ROWS) {
    const w = WORKLOADS.find((x) => x.name === name && x.queueDepth === qd)!;
    const dev = await deviceRun(page, threads, spec(w, timing, { seed: 1 }));
    const row = out.device.find((r) => r.backend === c.label && r.workload === name && r.queueDepth === qd);
    out.noPolling.push({ backend: c.label, workload: name, queueDepth: qd, device: dev, ratio: row?.raw ? dev.iops / row.raw.iops : null, polled: row?.device.iops ?? null });
    log(`${c.label} ${name} QD${qd} without polling: ${Math.round(dev.iops)} IOPS`);
  }
  await callPage(page, 'closeDisk');
  threads.device = await openDisk(page, profileDir, c);
}

async function latencyFor(page: Page, profileDir: string, c: BackendCase, threads: Threads, pageWorkers: ThreadRef[]): Promise<LatencyRow> {
  const w = WORKLOADS.find((x) => x.name === '4K randread' && x.queueDepth === 1)!;
  const s = spec(w, { ...timing, durationMs: timing.latencyMs }, { recordLatency: true, maxRequests: 200_000, seed: 9 });
  const d0 = threads.device ? cpuNs(threads.device) : null;
  const device = await callPage<DeviceResult>(page, 'device', s);
  const d1 = threads.device ? cpuNs(threads.device) : null;
  const raw = await callPage<WorkloadResult>(page, 'raw', s);
  // The pong thread does what the device thread does at QD1 minus the device:
  // wake, store, notify, sleep. Its CPU per round trip is the floor.
  const others = pageWorkers.filter((t) => t.tid !== threads.vcpu?.tid);
  const before = others.map((t) => cpuNs(t) ?? 0);
  const atomics = await callPage<LatencySummary>(page, 'atomicsRoundTrip', { rounds: timing.atomicsRounds });
  const pongNs = others.length > 0 ? Math.max(...others.map((t, i) => (cpuNs(t) ?? 0) - before[i]!)) : null;
  // The same with neither side polling: a disk of its own, then the default one again.
  await callPage(page, 'closeDisk');
  await openDisk(page, profileDir, c, { polling: NO_POLLING });
  const slept = await callPage<DeviceResult>(page, 'device', s);
  await callPage(page, 'closeDisk');
  threads.device = await openDisk(page, profileDir, c);
  log(`${c.label} QD1 latency: device median ${device.latency?.medianUs.toFixed(1)} µs (without polling ${slept.latency?.medianUs.toFixed(1)} µs), Atomics round trip ${atomics.medianUs.toFixed(1)} µs`);
  return {
    backend: c.label,
    workload: '4K randread QD1',
    device: device.latency!,
    raw: raw.latency!,
    atomics,
    polling: POLLING,
    noPolling: { latency: slept.latency!, iops: slept.iops },
    deviceCpuUsPerRequest: d0 !== null && d1 !== null ? (d1 - d0) / 1000 / device.deviceCompleted : null,
    pongCpuUsPerRoundTrip: pongNs !== null ? pongNs / 1000 / timing.atomicsRounds : null,
  };
}

async function memoryGrowth(page: Page, c: BackendCase): Promise<BenchReport['memory']> {
  const worker = await inspector!.worker('virtio-blk device');
  const w = WORKLOADS.find((x) => x.name === '4K randread' && x.queueDepth === 32)!;
  const s = spec(w, { ...timing, durationMs: 600_000 }, { maxRequests: timing.memoryRequests, warmupMs: 0, seed: 11 });
  const { result, samples } = await sampleHeap(worker, callPage<DeviceResult>(page, 'device', s, 10 * 60_000));
  // Without a forced GC the heap saws up and down with short-lived garbage
  // (on OPFS it climbs to ~30 MB between major GCs and falls back to ~2 MB);
  // its floor, the low after a collection, is what grows when something leaks.
  const half = Math.max(1, Math.floor(samples.length / 2));
  const floorFirst = Math.min(...samples.slice(0, half));
  const floorLast = Math.min(...samples.slice(half));
  log(`${c.label} device worker heap floor: ${floorFirst} → ${floorLast} bytes over ${result.deviceCompleted} requests (${samples.length} samples)`);
  return {
    backend: c.label,
    workload: '4K randread QD32',
    requests: result.deviceCompleted,
    iops: result.iops,
    samples: samples.length,
    floorFirstBytes: floorFirst,
    floorLastBytes: floorLast,
    maxBytes: Math.max(...samples),
    samplesBytes: samples,
    method:
      'CDP Runtime.getHeapUsage on the device worker target, sampled every 200 ms; floor = lowest sample in the first and in the second half of the run (no forced GC: see bench/node/cdp.ts)',
  };
}

async function profile(page: Page, c: BackendCase): Promise<BenchReport['profile']> {
  const device = await inspector!.worker('virtio-blk device');
  const vcpu = await inspector!.worker('bench vcpu');
  const w = WORKLOADS.find((x) => x.name === (process.env.PROF_W ?? '4K randread') && x.queueDepth === Number(process.env.PROF_QD ?? 32))!;
  const s = spec(w, { ...timing, durationMs: timing.profileMs }, { seed: 13 });
  let vcpuProfile: ProfileEntry[] = [];
  let result: DeviceResult | null = null;
  const deviceProfile = await profileWorker(device, async () => {
    vcpuProfile = await profileWorker(vcpu, async () => {
      result = await callPage<DeviceResult>(page, 'device', s);
    });
  });
  const top = (p: ProfileEntry[]) => p.slice(0, 15);
  return {
    backend: c.label,
    workload: '4K randread QD32',
    iopsWhileProfiling: (result as DeviceResult | null)?.iops ?? 0,
    device: top(deviceProfile),
    vcpu: top(vcpuProfile),
  };
}

async function limiterSection(page: Page, profileDir: string, out: BenchReport): Promise<void> {
  const c = backends(timing, out.runId).find((b) => b.device.kind === 'memory')!;
  for (const l of LIMITER_CASES) {
    await openDisk(page, profileDir, c, { limiter: l.limiter });
    const r = await callPage<DeviceResult>(page, 'device', spec(l.workload, { ...timing, warmupMs: 500, durationMs: timing.limiterMs }));
    await callPage(page, 'closeDisk');
    const configured = l.expect.iops ?? l.expect.bytesPerSecond!;
    const measured = l.expect.iops !== undefined ? r.iops : r.bytesPerSecond;
    out.limiter.push({
      label: l.label,
      workload: `${l.workload.name} QD${l.workload.queueDepth}`,
      unit: l.expect.iops !== undefined ? 'IOPS' : 'B/s',
      configured,
      measured,
      error: measured / configured - 1,
      seconds: r.seconds,
      iops: r.iops,
      bytesPerSecond: r.bytesPerSecond,
    });
    log(`limiter ${l.label}: ${measured.toFixed(0)} vs ${configured} (${((measured / configured - 1) * 100).toFixed(2)} %)`);
  }
  const g = GROUP_LIMITER_CASE;
  const r = await callPage<GroupRunResult>(page, 'groupLimiter', { config: g.limiter, ms: timing.limiterMs, warmupMs: 500, depth: g.depth }, timing.limiterMs + 60_000);
  const requests = r.done.reduce((n, d) => n + d.completed, 0);
  const iops = requests / (r.elapsedMs / 1000);
  out.limiter.push({
    label: g.label,
    workload: g.workload,
    unit: 'IOPS',
    configured: g.expectIops,
    measured: iops,
    error: iops / g.expectIops - 1,
    seconds: r.elapsedMs / 1000,
    iops,
    bytesPerSecond: iops * 4096,
  });
  log(`limiter ${g.label}: ${iops.toFixed(0)} vs ${g.expectIops} (per disk ${r.done.map((d) => d.completed).join(' / ')})`);
}

function linuxSection(out: BenchReport): void {
  const script = join(root, 'e2e', 'linux', 'bench.ts');
  if (!existsSync(script)) {
    out.linux = { ran: false, note: 'e2e/linux/bench.ts does not exist' };
    return;
  }
  log('Linux guest section: e2e/linux/bench.ts (QEMU, may take minutes)');
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: root, encoding: 'utf8', timeout: 15 * 60_000 });
  out.linux = r.status === 0
    ? { ran: true, table: r.stdout.trim() }
    : { ran: false, note: `e2e/linux/bench.ts failed (status ${r.status}): ${(r.stderr || String(r.error ?? '')).trim().split('\n').slice(-3).join(' / ')}` };
}

async function main(): Promise<void> {
  const started = Date.now();
  const runId = new Date(started).toISOString().replace(/[:.]/g, '-');
  const out: BenchReport = {
    date: new Date(started).toISOString(),
    runId,
    quick: values.quick,
    timing,
    host: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '', loadAverageAtStart: loadavg(), userAgent: '', crossOriginIsolated: false },
    polling: POLLING,
    device: [],
    latency: [],
    freshViews: [],
    noPolling: [],
    memory: null,
    limiter: [],
    profile: null,
    linux: null,
    seconds: 0,
  };
  let indexeddb: IndexedDbSectionResult | null = null;
  let overlay: OverlaySectionResult | null = null;
  let wasi: WasiSectionResult | null = null;
  let v86: V86SectionResult | null = null;
  let http: HttpSectionResult | null = null;
  const browser = await openBenchBrowser(root);
  try {
    const page = browser.page;
    const pidsBefore = canReadThreads ? chromiumPids(browser.profileDir) : [];
    const workersBefore = workerThreads(pidsBefore);
    await page.goto('/bench/harness/bench.html');
    await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 120_000 });
    const pageWorkers = canReadThreads ? newThreads(workersBefore, workerThreads(chromiumPids(browser.profileDir))) : [];
    const info = await callPage<{ crossOriginIsolated: boolean; userAgent: string }>(page, 'info');
    out.host.userAgent = info.userAgent;
    out.host.crossOriginIsolated = info.crossOriginIsolated;
    if (!info.crossOriginIsolated) throw new Error('the benchmark page is not cross-origin isolated (COOP/COEP missing)');
    inspector = await inspectWorkers(browser.context, page);
    if (only.has('device')) await deviceSection(page, browser.profileDir, pageWorkers, out);
    if (only.has('limiter')) await limiterSection(page, browser.profileDir, out);
    // On its own page (bench/node/indexeddb.ts).
    if (only.has('indexeddb')) indexeddb = await indexedDbSection(page, values.quick, log);
    // On its own page too (bench/node/wasi.ts).
    if (only.has('wasi')) wasi = await wasiSection(page, values.quick, log);
    // On the overlay harness page (bench/node/overlay.ts).
    if (only.has('overlay')) overlay = await overlaySection(page, values.quick, log);
    // Linux under v86 on its own harness page (bench/node/v86.ts).
    if (only.has('v86')) v86 = await v86Section(page, values.quick, log, loadavg);
    // Last: it takes the page to its own harness.
    if (only.has('http')) http = await httpSection(page, values.quick, runId, log);
  } finally {
    await inspector?.close();
    await browser.close();
  }
  if (only.has('linux')) linuxSection(out);
  out.seconds = (Date.now() - started) / 1000;
  out.host.loadAverageAtEnd = loadavg();
  const text = http ? `${report(out)}\n\n${httpTable(http)}` : report(out);
  process.stdout.write(`${text}${indexeddb ? `\n\n${indexedDbTable(indexeddb)}` : ''}${wasi ? `\n\n${wasiTable(wasi)}` : ''}${overlay ? `\n\n${overlayTable(overlay)}` : ''}${v86 ? `\n\n${v86Table(v86)}` : ''}\n`);
  const dir = join(root, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const json = `${JSON.stringify({ ...out, ...(http ? { http } : {}), ...(indexeddb ? { indexeddb } : {}), ...(wasi ? { wasi } : {}), ...(overlay ? { overlay } : {}), ...(v86 ? { v86 } : {}) }, null, 2)}\n`;
  writeFileSync(join(dir, `${runId}.json`), json);
  writeFileSync(join(dir, 'latest.json'), json);
  log(`wrote bench/results/${runId}.json and bench/results/latest.json (${out.seconds.toFixed(0)} s)`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
