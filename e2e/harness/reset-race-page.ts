// The reset race harness page: a disk from createDisk on the worker host
// (the device in its module worker, over an asynchronous backend), guest RAM
// a shared WebAssembly.Memory, and a vCPU worker that resets and
// re-initialises the disk in a tight loop (reset-race-vcpu.ts). With
// `burners`, that many more workers spin meanwhile, competing for the cores.
// Playwright calls `window.harness.call('run', {cycles, seed, burners})`.

import { createDisk } from '../../src/host/browser/disk.ts';
import { DISK, RACE_RAM_BYTES, fillGolden } from '../../test/race/reset-cycles.ts';
import { connect, toWireError } from './rpc.ts';

const RAM_BASE = 0x4000_0000;
const PAGE = 64 * 1024;

/** Workers that spin until `stop` is set. */
function burn(count: number): { stop: () => void } {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const code = `onmessage = (e) => { const f = new Int32Array(e.data); let x = 0; while (Atomics.load(f, 0) === 0) for (let i = 0; i < 10000; i++) x = (x * 31 + i) | 0; postMessage(x); };`;
  const url = URL.createObjectURL(new Blob([code], { type: 'text/javascript' }));
  const workers = Array.from({ length: count }, () => new Worker(url));
  for (const w of workers) w.postMessage(flag.buffer);
  return {
    stop: () => {
      Atomics.store(flag, 0, 1);
      for (const w of workers) w.terminate();
      URL.revokeObjectURL(url);
    },
  };
}

async function run({ cycles, seed, burners = 0 }: { cycles: number; seed: number; burners?: number }): Promise<unknown> {
  const ram = new WebAssembly.Memory({ initial: RACE_RAM_BYTES / PAGE, maximum: RACE_RAM_BYTES / PAGE, shared: true });
  const disk = new SharedArrayBuffer(DISK.bytes);
  fillGolden(new Uint8Array(disk));
  const handle = await createDisk({
    memory: [{ guestAddress: RAM_BASE, source: ram }],
    backend: { kind: 'module', url: '/e2e/harness/reset-race-backend.ts', options: { disk, seed } },
    host: 'worker',
  });
  const vcpuWorker = new Worker(new URL('./reset-race-vcpu.ts', import.meta.url), { type: 'module', name: 'vcpu' });
  const load = burners > 0 ? burn(burners) : null;
  try {
    const vcpu = await connect(vcpuWorker);
    const started = performance.now();
    const report = await vcpu.call('run', { state: handle.state, ram, ramBase: RAM_BASE, disk, cycles, seed });
    return { report, ms: performance.now() - started, stats: handle.stats };
  } finally {
    load?.stop();
    vcpuWorker.terminate();
    await handle.close();
  }
}

async function call(op: string, args: unknown): Promise<unknown> {
  if (op === 'isolated') return crossOriginIsolated;
  if (op === 'run') return run(args as Parameters<typeof run>[0]);
  throw new Error(`unknown op "${op}"`);
}

window.harness = {
  call: <T>(op: string, args?: unknown) =>
    call(op, args).then(
      (value) => value as T,
      (err: unknown) => {
        const wire = toWireError(err);
        throw new Error(`${wire.name}: ${wire.message}`);
      },
    ),
  attempt: (op: string, args?: unknown) => call(op, args).then(() => null, toWireError),
};
document.body.dataset.ready = 'true';
