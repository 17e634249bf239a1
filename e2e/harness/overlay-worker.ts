// Harness worker for e2e/overlay.spec.ts: runs the backend contract against
// overlays over memory, OPFS and IndexedDB (overlay-factories.ts), and
// exposes single operations on overlays opened from a BackendSpec, in a
// dedicated worker because that is where the device (and so the backend)
// runs. Overlays are addressed by a name the test chooses.

import { OverlayBackend } from '../../src/backends/overlay.ts';
import { openBackend } from '../../src/host/browser/open-backend.ts';
import type { BackendSpec } from '../../src/host/browser/worker-protocol.ts';
import { backendContract, pattern, type BackendFactory } from '../../test/contract/backend-contract.ts';
import type { OverlayConfig } from './overlay-configs.ts';
import { memoryOverlayFactory, specOverlayFactory } from './overlay-factories.ts';
import { serve } from './rpc.ts';
import { overlayBench } from './overlay-bench.ts';

const factories: Record<OverlayConfig, BackendFactory> = {
  memory: memoryOverlayFactory(),
  opfs: specOverlayFactory('opfs', 'overlay-contract'),
  indexeddb: specOverlayFactory('indexeddb', 'overlay-contract'),
};

/** Overlays this worker has open, by name. */
const open = new Map<string, OverlayBackend>();

function overlay(name: string): OverlayBackend {
  const backend = open.get(name);
  if (!backend) throw new Error(`overlay "${name}" is not open in this worker`);
  return backend;
}

type Range = { name: string; offset: number; length: number };

serve({
  contractRun: async ({ config, name }: { config: OverlayConfig; name: string }) => {
    const c = backendContract.find((x) => x.name === name);
    if (!c) throw new Error(`no contract case "${name}"`);
    if (!c.applies(factories[config])) throw new Error(`contract case "${name}" does not apply to ${config}`);
    await c.run(factories[config]);
  },
  /** Make a disk (OPFS or IndexedDB) holding pattern(size, seed), and close it. */
  makeDisk: async ({ spec, seed }: { spec: BackendSpec & { size: number }; seed: number }) => {
    const disk = await openBackend(spec);
    await disk.write(0, pattern(spec.size, seed));
    await disk.close();
  },
  open: async ({ name, spec }: { name: string; spec: BackendSpec }) => {
    const backend = await openBackend(spec);
    if (!(backend instanceof OverlayBackend)) throw new Error('the spec did not open an overlay');
    open.set(name, backend);
    return { size: backend.size, readOnly: backend.readOnly, blockSize: backend.blockSize, baseIdentity: backend.baseIdentity };
  },
  close: async ({ name }: { name: string }) => {
    await overlay(name).close();
    open.delete(name);
  },
  /** Write pattern(length, seed) at offset. */
  write: ({ name, offset, length, seed }: Range & { seed: number }) => overlay(name).write(offset, pattern(length, seed)),
  /**
   * Index of the first byte at offset that differs from pattern(length, seed)
   * (seed 0: from zeroes; `from`: compare with the pattern from its byte
   * `from` on), or -1.
   */
  mismatch: async ({ name, offset, length, seed, from = 0 }: Range & { seed: number; from?: number }) => {
    const actual = new Uint8Array(length);
    await overlay(name).read(offset, actual);
    const expected = seed === 0 ? new Uint8Array(length) : pattern(from + length, seed).subarray(from);
    return actual.findIndex((b, i) => b !== expected[i]);
  },
  writeZeroes: ({ name, offset, length }: Range) => overlay(name).writeZeroes(offset, length, false),
  discard: ({ name, offset, length }: Range) => overlay(name).discard(offset, length),
  flush: ({ name }: { name: string }) => overlay(name).flush(),
  state: ({ name }: { name: string }) => overlay(name).state,
  reset: ({ name }: { name: string }) => overlay(name).reset(),
  commit: ({ name }: { name: string }) => overlay(name).commit(),
  isolated: () => crossOriginIsolated,
  /** The `overlay` bench section's measurements (bench/node/overlay.ts). */
  bench: (args: { diskBytes: number; seconds: number; rounds: number }) => overlayBench(args),
});
