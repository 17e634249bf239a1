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
import { describeIdentity } from '../../backends/overlay-header.ts';
import { OverlayBackend, overlayTopBytes } from '../../backends/overlay.ts';
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
    case 'overlay':
      return openOverlay(spec);
    case 'module': {
      const module = (await import(/* @vite-ignore */ new URL(spec.url, globalThis.location?.href).href)) as {
        openBackend?: (options: unknown) => BlockBackend | Promise<BlockBackend>;
      };
      if (typeof module.openBackend !== 'function') throw new TypeError(`${spec.url} does not export openBackend(options)`);
      return module.openBackend(spec.options);
    }
  }
}

/** Open the base, then a top sized for it, then the overlay; close what was opened if a later step fails. */
async function openOverlay(spec: Extract<BackendSpec, { kind: 'overlay' }>): Promise<BlockBackend> {
  const base = await openBackend(spec.base);
  try {
    const baseIdentity = spec.baseIdentity ?? describeIdentity(base.identity) ?? (await specIdentity(spec.base));
    const size = overlayTopBytes(base.size, spec.blockSize);
    const topSpec = { ...spec.top, size, ...(spec.readOnly ? { readOnly: true } : {}) } as BackendSpec;
    const top = await openBackend(topSpec);
    try {
      return await OverlayBackend.open({ base, top, blockSize: spec.blockSize, baseIdentity: baseIdentity ?? undefined, readOnly: spec.readOnly });
    } catch (err) {
      await top.close();
      throw err;
    }
  } catch (err) {
    await base.close();
    throw err;
  }
}

/** An identity for a base that names none (see BackendSpec's overlay kind). */
async function specIdentity(spec: BackendSpec): Promise<string | null> {
  switch (spec.kind) {
    case 'opfs':
      return `opfs:${spec.directory ?? ''}/${spec.name}`;
    case 'indexeddb':
      return `indexeddb:${spec.name}`;
    case 'memory': {
      const data = new Uint8Array(spec.size);
      if (spec.data) data.set(spec.data.subarray(0, spec.size));
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', data));
      return `memory:sha256:${Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('')}`;
    }
    default:
      return null;
  }
}
