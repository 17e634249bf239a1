// A thread that hammers a RateLimitGroup (test/limiter-group.test.ts): it
// waits for the start word, tries `attempts` one-op reads, and reports how
// many went through.
import { parentPort, workerData } from 'node:worker_threads';
import { RateLimitGroup } from '../../src/limiter/group.ts';
import { ManualClock } from '../../src/limiter/clock.ts';

const { buffer, start, attempts } = workerData as { buffer: SharedArrayBuffer; start: SharedArrayBuffer; attempts: number };
// Time stands still: every thread sees the same instant, so only the lock decides.
const group = new RateLimitGroup(buffer, new ManualClock(0));
const go = new Int32Array(start);
Atomics.add(go, 1, 1);
Atomics.wait(go, 0, 0);
let ok = 0;
for (let i = 0; i < attempts; i++) if (group.consume('read', 0)) ok++;
parentPort!.postMessage(ok);
