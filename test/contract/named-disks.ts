// A BackendFactory for backends whose disks have names and outlive the
// object (OPFS, IndexedDB): a fresh name per case, and reopening by name.

import type { BlockBackend } from '../../src/backends/backend.ts';
import type { BackendFactory } from './backend-contract.ts';

/** Opens disk `name`: created at `size` when given, read-only when asked. */
export type OpenNamedDisk = (name: string, options: { size?: number; readOnly?: boolean }) => Promise<BlockBackend>;

export function namedDiskFactory(
  open: OpenNamedDisk,
  capabilities: Pick<BackendFactory, 'sparseHugeDisks' | 'resizable'>,
  prefix = 'disk-',
): BackendFactory {
  let disks = 0;
  const names = new WeakMap<BlockBackend, string>();
  return {
    async create({ size, data, readOnly }) {
      const name = `${prefix}${++disks}`;
      const writer = await open(name, { size });
      if (data) await writer.write(0, data);
      let backend = writer;
      if (readOnly) {
        await writer.close();
        backend = await open(name, { readOnly: true });
      }
      names.set(backend, name);
      return backend;
    },
    async reopen(backend, options) {
      const name = names.get(backend);
      if (name === undefined) throw new Error('reopen of a disk this factory did not make');
      await backend.close();
      const again = await open(name, { readOnly: options?.readOnly });
      names.set(again, name);
      return again;
    },
    ...capabilities,
  };
}
