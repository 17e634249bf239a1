// The benchmark's results: their shape (written as JSON) and the plain-text
// report printed at the end, with the targets beside the figures.

import type { LatencySummary, WorkloadResult } from '../harness/protocol.ts';
import type { ProfileEntry } from './cdp.ts';
import type { Polling, Timing } from './plan.ts';
import { formatTable, num, type Cell } from './table.ts';

export interface DeviceRow {
  backend: string;
  workload: string;
  op: string;
  blockBytes: number;
  queueDepth: number;
  device: WorkloadResult & {
    notifications: number;
    interrupts: number;
    deviceCompleted: number;
    /** CPU time of the device worker's thread per request (µs), from /proc schedstat. */
    deviceCpuUsPerRequest: number | null;
    vcpuCpuUsPerRequest: number | null;
  };
  /** The raw storage API, one request at a time. */
  raw: RawResult | null;
  /** device IOPS / raw IOPS. */
  ratio: number | null;
}

export interface RawResult extends WorkloadResult {
  /** CPU time of the raw worker's thread per request (µs): the storage API's own cost. */
  cpuUsPerRequest: number | null;
}

export interface LatencyRow {
  backend: string;
  workload: string;
  device: LatencySummary;
  raw: LatencySummary;
  atomics: LatencySummary;
  /** How the device worker and the vCPU waited in the main run. */
  polling: Polling;
  /** The same QD1 run with neither side polling. */
  noPolling: { latency: LatencySummary; iops: number };
  /** The device worker thread's CPU per QD1 request (µs). */
  deviceCpuUsPerRequest: number | null;
  /** The pong worker thread's CPU per bare round trip (µs): wake, store, notify, sleep. */
  pongCpuUsPerRoundTrip: number | null;
}

export interface LimiterRow {
  label: string;
  workload: string;
  unit: 'IOPS' | 'B/s';
  configured: number;
  measured: number;
  /** measured / configured − 1. */
  error: number;
  seconds: number;
  iops: number;
  bytesPerSecond: number;
}

export interface BenchReport {
  date: string;
  runId: string;
  quick: boolean;
  timing: Timing;
  host: {
    cpus: number;
    cpuModel: string;
    loadAverageAtStart: number[];
    loadAverageAtEnd?: number[];
    userAgent: string;
    crossOriginIsolated: boolean;
  };
  /** How both sides waited in the main rows. */
  polling: Polling;
  device: DeviceRow[];
  latency: LatencyRow[];
  /** The raw API with views reused (as the raw rows) and with a new view per request (as the device makes them). */
  freshViews: Array<{ backend: string; workload: string; reused: RawResult; fresh: RawResult }>;
  /** A few rows again with neither side polling (`polled`: the main row's IOPS). */
  noPolling: Array<{ backend: string; workload: string; queueDepth: number; device: DeviceRow['device']; ratio: number | null; polled: number | null }>;
  memory: {
    backend: string;
    workload: string;
    requests: number;
    iops: number;
    samples: number;
    floorFirstBytes: number;
    floorLastBytes: number;
    maxBytes: number;
    samplesBytes: number[];
    method: string;
  } | null;
  limiter: LimiterRow[];
  profile: { backend: string; workload: string; iopsWhileProfiling: number; device: ProfileEntry[]; vcpu: ProfileEntry[] } | null;
  linux: { ran: true; table: string } | { ran: false; note: string } | null;
  seconds: number;
}

const MiB = 1024 * 1024;

/** `count` per request the device completed, for a table cell. */
function perRequest(device: DeviceRow['device'], count: number): string {
  return num(device.deviceCompleted > 0 ? count / device.deviceCompleted : null, 2);
}

function mbps(r: WorkloadResult | null): string {
  return r ? num(r.bytesPerSecond / MiB, 0) : '—';
}

interface Target {
  what: string;
  goal: string;
  value: number | null;
  shown: string;
  met: boolean | null;
}

function targets(rows: DeviceRow[]): Target[] {
  const find = (workload: string, qd: number) => rows.find((r) => r.backend === 'OPFS' && r.workload === workload && r.queueDepth === qd);
  const out: Target[] = [];
  const rr = find('4K randread', 32);
  out.push({
    what: 'OPFS 4K randread QD32, device IOPS',
    goal: '≥ 100,000',
    value: rr?.device.iops ?? null,
    shown: num(rr?.device.iops),
    met: rr ? rr.device.iops >= 100_000 : null,
  });
  for (const [w, qd, goal] of [
    ['4K randread', 32, 0.5],
    ['4K randwrite', 32, 0.5],
    ['1M seqread', 8, 0.8],
    ['1M seqwrite', 8, 0.8],
    ['1M seqread', 1, 0.8],
    ['1M seqwrite', 1, 0.8],
  ] as const) {
    const r = find(w, qd);
    out.push({
      what: `OPFS ${w} QD${qd}, device / raw`,
      goal: `≥ ${goal}`,
      value: r?.ratio ?? null,
      shown: num(r?.ratio, 2),
      met: r?.ratio != null ? r.ratio >= goal : null,
    });
  }
  return out;
}

export function report(out: BenchReport): string {
  const parts: string[] = [];
  const load = out.host.loadAverageAtStart.map((l) => l.toFixed(1)).join(' ');
  parts.push(
    `virtio-blk-web benchmark — ${out.date}${out.quick ? ' (--quick)' : ''}`,
    `${out.host.cpus} × ${out.host.cpuModel}; load average at start ${load}; ${out.host.userAgent.match(/Chrome\/[\d.]+/)?.[0] ?? ''}`,
    `each row: ${out.timing.durationMs} ms measured after ${out.timing.warmupMs} ms warm-up, best of ${out.timing.rounds}; raw = the storage API alone, one request at a time`,
  );
  if (out.device.length > 0) {
    const header = ['backend', 'workload', 'QD', 'device IOPS', 'MiB/s', 'raw IOPS', 'MiB/s', 'dev/raw', 'CPU µs/req: device', 'vCPU', 'raw', 'IRQs/req', 'vCPU sleeps/req'];
    const rows: Cell[][] = out.device.map((r) => [
      r.backend,
      r.workload,
      r.queueDepth,
      num(r.device.iops),
      mbps(r.device),
      num(r.raw?.iops),
      mbps(r.raw),
      num(r.ratio, 2),
      num(r.device.deviceCpuUsPerRequest, 2),
      num(r.device.vcpuCpuUsPerRequest, 2),
      num(r.raw?.cpuUsPerRequest, 2),
      perRequest(r.device, r.device.interrupts),
      perRequest(r.device, r.device.sleeps),
    ]);
    const p = out.polling;
    parts.push(
      '',
      `Throughput: guest driver (vCPU worker) → device worker → storage → used ring → IRQ; the device worker polls its doorbell up to ${p.spinMicros} µs (createDisk default), the vCPU's WFI halt-polls up to ${p.haltPollMicros} µs`,
      formatTable(header, rows),
    );
    if (out.noPolling.length > 0) {
      const h = ['backend', 'workload', 'QD', 'device IOPS', 'dev/raw', 'with polling IOPS', 'CPU µs/req: device', 'vCPU', 'IRQs/req', 'vCPU sleeps/req'];
      const r: Cell[][] = out.noPolling.map((n) => [
        n.backend,
        n.workload,
        n.queueDepth,
        num(n.device.iops),
        num(n.ratio, 2),
        num(n.polled),
        num(n.device.deviceCpuUsPerRequest, 2),
        num(n.device.vcpuCpuUsPerRequest, 2),
        perRequest(n.device, n.device.interrupts),
        perRequest(n.device, n.device.sleeps),
      ]);
      parts.push('', 'Without polling: spinMicros 0, and a vCPU that sleeps in Atomics.wait at once (one round, same raw figures)', formatTable(h, r));
    }
    parts.push('', 'Targets', formatTable(['target', 'goal', 'measured', ''], targets(out.device).map((t) => [t.what, t.goal, t.shown, t.met === null ? 'not measured' : t.met ? 'met' : 'SHORT'])));
  }
  if (out.latency.length > 0) {
    const header = ['backend', 'workload', 'device median µs', 'p99', 'mean', 'no polling median', 'mean', 'raw median µs', 'p99', 'Atomics RT median µs', 'p99', 'mean', 'CPU µs: device/req', 'pong/RT'];
    const rows: Cell[][] = out.latency.map((l) => [
      l.backend,
      l.workload,
      num(l.device.medianUs, 1),
      num(l.device.p99Us, 1),
      num(l.device.meanUs, 1),
      num(l.noPolling.latency.medianUs, 1),
      num(l.noPolling.latency.meanUs, 1),
      num(l.raw.medianUs, 1),
      num(l.raw.p99Us, 1),
      num(l.atomics.medianUs, 1),
      num(l.atomics.p99Us, 1),
      num(l.atomics.meanUs, 1),
      num(l.deviceCpuUsPerRequest, 2),
      num(l.pongCpuUsPerRoundTrip, 2),
    ]);
    parts.push(
      '',
      'QD1 notify-to-completion latency vs the bare Atomics notify → wait round trip between two workers (both sleep); "no polling": spinMicros 0 and a vCPU that sleeps at once (performance.now in isolated workers: 5 µs steps)',
      formatTable(header, rows),
    );
  }
  if (out.freshViews.length > 0) {
    const header = ['backend', 'raw workload', 'reused views IOPS', 'CPU µs/req', 'new view per request IOPS', 'CPU µs/req', 'ratio'];
    const rows: Cell[][] = out.freshViews.map((f) => [
      f.backend,
      f.workload,
      num(f.reused.iops),
      num(f.reused.cpuUsPerRequest, 2),
      num(f.fresh.iops),
      num(f.fresh.cpuUsPerRequest, 2),
      num(f.fresh.iops / f.reused.iops, 2),
    ]);
    parts.push('', 'Diagnostic: the raw storage API given the same few Uint8Array views vs a new view per request (what GuestMemory.view does)', formatTable(header, rows));
  }
  if (out.memory) {
    const m = out.memory;
    const growth = m.floorLastBytes - m.floorFirstBytes;
    parts.push(
      '',
      `Device worker JS heap over ${num(m.requests)} requests (${m.backend} ${m.workload}, ${num(m.iops)} IOPS): ` +
        `floor (lowest sample) in the first half ${num(m.floorFirstBytes / 1024)} KiB, second half ${num(m.floorLastBytes / 1024)} KiB (${growth >= 0 ? '+' : ''}${num(growth / 1024, 1)} KiB), ` +
        `peak ${num(m.maxBytes / 1024)} KiB, ${m.samples} samples (CDP Runtime.getHeapUsage)`,
    );
  }
  if (out.limiter.length > 0) {
    const header = ['limit (memory backend, worker host)', 'workload', 'configured', 'measured', 'error', 'IOPS', 'MiB/s'];
    const rows: Cell[][] = out.limiter.map((l) => [
      l.label,
      l.workload,
      l.unit === 'IOPS' ? `${num(l.configured)} IOPS` : `${num(l.configured / MiB, 2)} MiB/s`,
      l.unit === 'IOPS' ? `${num(l.measured, 1)} IOPS` : `${num(l.measured / MiB, 2)} MiB/s`,
      `${l.error >= 0 ? '+' : ''}${(l.error * 100).toFixed(2)}%`,
      num(l.iops),
      num(l.bytesPerSecond / MiB, 1),
    ]);
    parts.push('', `Rate limiter accuracy over ${num(out.timing.limiterMs / 1000, 0)} s (target ±2%, reported, not asserted)`, formatTable(header, rows));
  }
  if (out.profile) {
    const p = out.profile;
    const table = (entries: ProfileEntry[]) => formatTable(['self time', 'share', 'function'], entries.slice(0, 10).map((e) => [num(e.selfMs, 1), `${(e.share * 100).toFixed(1)}%`, e.name]));
    parts.push('', `CPU profile, ${p.backend} ${p.workload} (${num(p.iopsWhileProfiling)} IOPS while profiling): device worker`, table(p.device));
    parts.push('', 'vCPU worker', table(p.vcpu));
  }
  if (out.linux) {
    parts.push('', out.linux.ran ? out.linux.table : `Linux guest section: skipped (${out.linux.note})`);
  }
  return parts.join('\n');
}
