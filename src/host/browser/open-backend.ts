// Turn a BackendSpec (plain data that can cross to a worker) into a backend.
// Both hosts use it, so a spec means the same thing on either.
//
// The IndexedDB backend is loaded only when a spec asks for it: it imports
// idb-keyval by its bare name, and a page without a bundler resolves bare
// names through an import map, which a module worker does not inherit. So the
// device worker itself needs no import map for the other kinds.

import type { BlockBackend } from '../../backends/backend.ts';
import { HttpChunkedBackend } from '../../backends/http-chunked.ts';
import { HttpRangeBackend } from '../../backends/http-range.ts';
import { MemoryBackend } from '../../backends/memory.ts';
import { OpfsBackend } from '../../backends/opfs.ts';
import type { BackendSpec } from './worker-protocol.ts';

export async function openBackend(spec: BackendSpec): Promise<BlockBackend> {
  switch (spec.kind) {
    case 'memory':
      return new MemoryBackend(spec.size, { data: spec.data, readOnly: spec.readOnly });
    case 'opfs':
      return OpfsBackend.open(spec);
    case 'indexeddb': {
      const { IndexedDbBackend } = await import('../../backends/indexeddb.ts');
      return IndexedDbBackend.open(spec);
    }
    case 'http-range':
      return HttpRangeBackend.open(spec.url, spec.options);
    case 'http-chunked':
      return HttpChunkedBackend.open(spec.url, spec.options);
    case 'module': {
      const module = (await import(/* @vite-ignore */ new URL(spec.url, globalThis.location?.href).href)) as {
        openBackend?: (options: unknown) => BlockBackend | Promise<BlockBackend>;
      };
      if (typeof module.openBackend !== 'function') throw new TypeError(`${spec.url} does not export openBackend(options)`);
      return module.openBackend(spec.options);
    }
  }
}
