// DevTools protocol access to the page's workers, for what only the inside of
// a worker can tell: its JavaScript heap (Runtime.getHeapUsage, after
// HeapProfiler.collectGarbage) and CPU profiles (Profiler).
//
// Playwright opens CDP sessions on pages and frames, not on workers, so the
// page's session auto-attaches to its workers in the non-flattened mode and
// talks to each through Target.sendMessageToTarget. This works even while the
// device worker is blocked in Atomics.wait: V8 serves inspector messages from
// an interrupt.

import type { BrowserContext, CDPSession, Page } from 'playwright';

interface AttachedEvent {
  sessionId: string;
  targetInfo: { type: string; title: string; url: string };
}

/** Longest wait for one CDP answer from a worker. */
const SEND_TIMEOUT_MS = 20_000;

export interface WorkerTarget {
  readonly title: string;
  readonly url: string;
  /** Send a CDP command to this worker; resolves with its result. */
  send<T = unknown>(method: string, params?: Record<string, unknown>): Promise<T>;
}

export interface WorkerInspector {
  /** The attached worker whose name (title) is `title`; waits for it to appear. */
  worker(title: string, timeoutMs?: number): Promise<WorkerTarget>;
  close(): Promise<void>;
}

export async function inspectWorkers(context: BrowserContext, page: Page): Promise<WorkerInspector> {
  const cdp: CDPSession = await context.newCDPSession(page);
  const targets = new Map<string, AttachedEvent>();
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  cdp.on('Target.attachedToTarget', (e: AttachedEvent) => void targets.set(e.sessionId, e));
  cdp.on('Target.detachedFromTarget', (e: { sessionId: string }) => void targets.delete(e.sessionId));
  cdp.on('Target.receivedMessageFromTarget', (e: { message: string }) => {
    const m = JSON.parse(e.message) as { id?: number; result?: unknown; error?: { message: string } };
    const p = m.id === undefined ? undefined : pending.get(m.id);
    if (!p) return;
    pending.delete(m.id!);
    if (m.error) p.reject(new Error(m.error.message));
    else p.resolve(m.result);
  });
  await cdp.send('Target.setAutoAttach', { autoAttach: true, waitForDebuggerOnStart: false, flatten: false });

  const target = (e: AttachedEvent): WorkerTarget => ({
    title: e.targetInfo.title,
    url: e.targetInfo.url,
    send: <T>(method: string, params: Record<string, unknown> = {}) =>
      new Promise<T>((resolve, reject) => {
        const id = nextId++;
        // A worker that never answers must not hang the run.
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`CDP ${method} on worker "${e.targetInfo.title}" got no answer in ${SEND_TIMEOUT_MS / 1000} s`));
        }, SEND_TIMEOUT_MS);
        pending.set(id, {
          resolve: (v) => {
            clearTimeout(timer);
            (resolve as (v: unknown) => void)(v);
          },
          reject: (err) => {
            clearTimeout(timer);
            reject(err);
          },
        });
        cdp
          .send('Target.sendMessageToTarget', { sessionId: e.sessionId, message: JSON.stringify({ id, method, params }) })
          .catch(reject);
      }),
  });

  return {
    async worker(title, timeoutMs = 10_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        // The newest match: a closed disk's worker may linger until detached.
        const found = [...targets.values()].reverse().find((e) => e.targetInfo.title === title);
        if (found) return target(found);
        if (Date.now() > until) throw new Error(`no worker named "${title}" attached`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    close: () => cdp.detach().catch(() => undefined),
  };
}

/**
 * The JS heap a worker uses now, in bytes. No GC is forced: the device worker
 * never yields to its task queue while it serves (it sleeps in Atomics.wait),
 * and HeapProfiler.collectGarbage waits for a task turn, so it never answers.
 * Runtime.getHeapUsage is served from an interrupt and does.
 */
export async function heapUsed(worker: WorkerTarget): Promise<number> {
  return (await worker.send<{ usedSize: number }>('Runtime.getHeapUsage')).usedSize;
}

/** Sample `heapUsed` every `everyMs` until `until` settles; returns the samples in order. */
export async function sampleHeap<T>(worker: WorkerTarget, until: Promise<T>, everyMs = 200): Promise<{ result: T; samples: number[] }> {
  const samples: number[] = [await heapUsed(worker)];
  let settled = false;
  const done = until.finally(() => void (settled = true));
  while (!settled) {
    await Promise.race([done.catch(() => undefined), new Promise((r) => setTimeout(r, everyMs))]);
    samples.push(await heapUsed(worker));
  }
  return { result: await done, samples };
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  /** "function (file:line)". */
  name: string;
  /** Self time in ms. */
  selfMs: number;
  /** Share of all sampled time. */
  share: number;
}

/** Run `during` with the worker's sampling profiler on; returns self time per function, highest first. */
export async function profileWorker(worker: WorkerTarget, during: () => Promise<void>, intervalUs = 100): Promise<ProfileEntry[]> {
  await worker.send('Profiler.enable');
  await worker.send('Profiler.setSamplingInterval', { interval: intervalUs });
  await worker.send('Profiler.start');
  let profile: Profile | undefined;
  try {
    await during();
  } finally {
    profile = (await worker.send<{ profile: Profile }>('Profiler.stop')).profile;
    await worker.send('Profiler.disable');
  }
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const node = byId.get(id)!;
    const dt = profile.timeDeltas[i + 1] ?? 0;
    const f = node.callFrame;
    const file = f.url.replace(/^.*\/(src|bench|e2e)\//, '$1/').replace(/\?.*$/, '');
    const name = `${f.functionName || '(anonymous)'}${file ? ` (${file}:${f.lineNumber + 1})` : ''}`;
    selfUs.set(name, (selfUs.get(name) ?? 0) + dt);
    total += dt;
  });
  return [...selfUs.entries()]
    .map(([name, us]) => ({ name, selfMs: us / 1000, share: total > 0 ? us / total : 0 }))
    .sort((a, b) => b.selfMs - a.selfMs);
}
