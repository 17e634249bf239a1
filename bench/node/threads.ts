// CPU time of Chromium's worker threads, read from Linux's /proc, so that the
// device worker's cost per request is measured from outside, without touching
// the device worker's code: `schedstat`'s first field is the nanoseconds a
// thread has spent on a CPU.
//
// Dedicated workers run on threads named "DedicatedWorker thread" (comm is
// cut to 15 characters). Which one is the device worker is found by
// difference: the thread that appeared while the disk was being created.
// Linux only; elsewhere every figure is null and the table says so.

import { existsSync, readFileSync, readdirSync } from 'node:fs';

const WORKER_COMM = 'DedicatedWorker';

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** Whether per-thread CPU time can be read here. */
export const canReadThreads = existsSync('/proc/self/task');

/** The Chromium processes of the profile in `profileDir`: its browser process and every descendant. */
export function chromiumPids(profileDir: string): number[] {
  const parents = new Map<number, number>();
  let root = -1;
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const stat = read(`/proc/${pid}/stat`);
    if (!stat) continue;
    // Field 4 (ppid) comes after the parenthesised command name, which may hold spaces.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    parents.set(pid, ppid);
    if (root < 0 && (read(`/proc/${pid}/cmdline`) ?? '').includes(`--user-data-dir=${profileDir}`)) {
      const cmd = read(`/proc/${pid}/cmdline`) ?? '';
      if (!cmd.includes('--type=')) root = pid;
    }
  }
  if (root < 0) return [];
  const tree = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of parents) {
      if (!tree.has(pid) && tree.has(ppid)) {
        tree.add(pid);
        grew = true;
      }
    }
  }
  return [...tree];
}

/** A worker thread: where to read it. */
export interface ThreadRef {
  pid: number;
  tid: number;
}

/** Every dedicated-worker thread of these processes. */
export function workerThreads(pids: number[]): ThreadRef[] {
  const out: ThreadRef[] = [];
  for (const pid of pids) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const t of tids) {
      if ((read(`/proc/${pid}/task/${t}/comm`) ?? '').trim() === WORKER_COMM) out.push({ pid, tid: Number(t) });
    }
  }
  return out;
}

/** Nanoseconds the thread has run on a CPU, or null when it is gone. */
export function cpuNs(thread: ThreadRef): number | null {
  const s = read(`/proc/${thread.pid}/task/${thread.tid}/schedstat`);
  return s ? Number(s.split(' ')[0]) : null;
}

/** Threads in `after` that are not in `before`. */
export function newThreads(before: ThreadRef[], after: ThreadRef[]): ThreadRef[] {
  const known = new Set(before.map((t) => t.tid));
  return after.filter((t) => !known.has(t.tid));
}
