// The reset race's backend, loaded by the device worker through BackendSpec
// {kind: 'module'}: a memory disk over a SharedArrayBuffer the page made (so
// the vCPU can watch for late disk writes), answering every call later
// (test/race/async-backend.ts).

import type { BlockBackend } from '../../src/backends/backend.ts';
import { MemoryBackend } from '../../src/backends/memory.ts';
import { AsyncBackend } from '../../test/race/async-backend.ts';

export interface ResetRaceBackendOptions {
  disk: SharedArrayBuffer;
  seed: number;
}

export function openBackend({ disk, seed }: ResetRaceBackendOptions): BlockBackend {
  return new AsyncBackend(new MemoryBackend(disk.byteLength, { data: new Uint8Array(disk), shareBuffer: true }), seed);
}
