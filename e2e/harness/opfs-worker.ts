// Harness worker for e2e/opfs.spec.ts: runs the backend contract against OPFS
// and exposes single disk operations, because sync access handles exist only
// in dedicated workers. Disks are addressed by name inside the 'e2e' folder.

import { OpfsBackend, deleteOpfsDisk, listOpfsDisks } from '../../src/backends/opfs.ts';
import type { BlockBackend } from '../../src/backends/backend.ts';
import { backendContract, pattern, type BackendFactory } from '../../test/contract/backend-contract.ts';
import { serve } from './rpc.ts';

const DIRECTORY = 'e2e';
const CONTRACT_DIRECTORY = 'contract';

let contractDisks = 0;
const contractNames = new WeakMap<BlockBackend, string>();

const factory: BackendFactory = {
  async create({ size, data, readOnly }) {
    const name = `disk-${++contractDisks}`;
    const writer = await OpfsBackend.open({ name, directory: CONTRACT_DIRECTORY, size });
    if (data) writer.write(0, data);
    let backend: OpfsBackend = writer;
    if (readOnly) {
      await writer.close();
      backend = await OpfsBackend.open({ name, directory: CONTRACT_DIRECTORY, readOnly: true });
    }
    contractNames.set(backend, name);
    return backend;
  },
  async reopen(backend, options) {
    const name = contractNames.get(backend)!;
    await backend.close();
    const again = await OpfsBackend.open({ name, directory: CONTRACT_DIRECTORY, readOnly: options?.readOnly });
    contractNames.set(again, name);
    return again;
  },
  sparseHugeDisks: true,
  resizable: true,
};

/** Disks this worker has open, by name. */
const open = new Map<string, OpfsBackend>();

function disk(name: string): OpfsBackend {
  const backend = open.get(name);
  if (!backend) throw new Error(`disk "${name}" is not open in this worker`);
  return backend;
}

serve({
  contractCases: () => backendContract.map((c) => ({ name: c.name, applies: c.applies(factory) })),
  contractRun: async ({ name }: { name: string }) => {
    const c = backendContract.find((x) => x.name === name);
    if (!c) throw new Error(`no contract case "${name}"`);
    await c.run(factory);
  },
  open: async (args: { name: string; size?: number; readOnly?: boolean }) => {
    const backend = await OpfsBackend.open({ ...args, directory: DIRECTORY });
    open.set(args.name, backend);
    return { size: backend.size, readOnly: backend.readOnly };
  },
  close: async ({ name }: { name: string }) => {
    await disk(name).close();
    open.delete(name);
  },
  /** Write pattern(length, seed) at offset. */
  write: ({ name, offset, length, seed }: { name: string; offset: number; length: number; seed: number }) =>
    disk(name).write(offset, pattern(length, seed)),
  /** Index of the first byte at offset that differs from pattern(length, seed) (seed 0: from zeroes), or -1. */
  mismatch: ({ name, offset, length, seed }: { name: string; offset: number; length: number; seed: number }) => {
    const actual = new Uint8Array(length);
    disk(name).read(offset, actual);
    const expected = seed === 0 ? new Uint8Array(length) : pattern(length, seed);
    return actual.findIndex((b, i) => b !== expected[i]);
  },
  writeZeroes: ({ name, offset, length, mayUnmap }: { name: string; offset: number; length: number; mayUnmap: boolean }) =>
    disk(name).writeZeroes(offset, length, mayUnmap),
  discard: ({ name, offset, length }: { name: string; offset: number; length: number }) => disk(name).discard(offset, length),
  flush: ({ name }: { name: string }) => disk(name).flush(),
  size: ({ name }: { name: string }) => disk(name).size,
  delete: ({ name }: { name: string }) => deleteOpfsDisk(name, DIRECTORY),
  list: () => listOpfsDisks(DIRECTORY),
  isolated: () => crossOriginIsolated,
});
