// A backend for e2e/wasi.spec.ts, loaded by the backend worker as a 'module'
// BackendSpec: a memory disk whose read at STALL_OFFSET never answers, so a
// test can end the worker while it is working on a request.

import { MemoryBackend } from '../../src/backends/memory.ts';

export const STALL_OFFSET = 1 << 20;

export function openBackend(options: { size: number }): MemoryBackend {
  const disk = new MemoryBackend(options.size, { data: new Uint8Array([1, 2, 3, 4]) });
  const read = disk.read.bind(disk);
  return Object.assign(disk, {
    read: (offset: number, dst: Uint8Array) => (offset === STALL_OFFSET ? new Promise<void>(() => undefined) : read(offset, dst)),
  });
}
