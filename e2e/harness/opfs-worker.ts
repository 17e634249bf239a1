// Harness worker for e2e/opfs.spec.ts: runs the backend contract against OPFS
// and exposes single disk operations, because sync access handles exist only
// in dedicated workers. Disks are addressed by name inside the 'e2e' folder.

import { OpfsBackend, deleteOpfsDisk, listOpfsDisks, opfsDirectory } from '../../src/backends/opfs.ts';
import { backendContract, pattern } from '../../test/contract/backend-contract.ts';
import { namedDiskFactory } from '../../test/contract/named-disks.ts';
import { serve } from './rpc.ts';

const DIRECTORY = 'e2e';
const CONTRACT_DIRECTORY = 'contract';

const factory = namedDiskFactory((name, options) => OpfsBackend.open({ name, directory: CONTRACT_DIRECTORY, ...options }), { sparseHugeDisks: true, resizable: true });

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
  /**
   * Put a file at `file` in the harness folder directly, bypassing the
   * backend: `length` bytes of pattern(length, seed). This recreates what a
   * crash left behind (an empty disk file, a half-made temporary one).
   */
  plantFile: async ({ file, length, seed }: { file: string; length: number; seed: number }) => {
    const handle = await (await opfsDirectory(DIRECTORY, true)).getFileHandle(file, { create: true });
    const access = await handle.createSyncAccessHandle();
    access.truncate(0);
    access.write(pattern(length, seed), { at: 0 });
    access.flush();
    access.close();
  },
  /** Names and sizes of every file in the harness folder, temporary ones included. */
  files: async () => {
    const out: Array<{ name: string; size: number }> = [];
    const folder = (await opfsDirectory(DIRECTORY, true)) as unknown as { values(): AsyncIterable<FileSystemFileHandle> };
    for await (const entry of folder.values()) out.push({ name: entry.name, size: (await entry.getFile()).size });
    return out.sort((a, b) => a.name.localeCompare(b.name));
  },
});
