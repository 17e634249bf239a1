// Contract factories for the copy-on-write overlay (src/backends/overlay.ts),
// shared by the Node run (test/overlay.test.ts) and the Chromium harness
// worker (overlay-worker.ts). A case's initial data goes into the base, so
// its reads exercise the merge; the top starts empty. A read-only disk is an
// overlay opened read-only over a top made once before.

import type { BlockBackend } from '../../src/backends/backend.ts';
import { MemoryBackend } from '../../src/backends/memory.ts';
import { OverlayBackend, overlayTopBytes } from '../../src/backends/overlay.ts';
import { openBackend as openSpec } from '../../src/host/browser/open-backend.ts';
import type { BackendSpec } from '../../src/host/browser/worker-protocol.ts';
import type { BackendFactory } from '../../test/contract/backend-contract.ts';
import { OVERLAY_CAPABILITIES } from './overlay-configs.ts';

/** Overlays over a memory base with a memory top that outlives each overlay object (so reopen sees it). */
export function memoryOverlayFactory(blockSize?: number): BackendFactory {
  const parts = new WeakMap<BlockBackend, { base: MemoryBackend; top: MemoryBackend }>();
  const open = async (base: MemoryBackend, top: MemoryBackend, readOnly: boolean) => {
    const topView = readOnly ? new MemoryBackend(0, { data: top.bytes, shareBuffer: true, readOnly: true }) : top;
    const overlay = await OverlayBackend.open({ base, top: topView, blockSize, baseIdentity: 'contract-base', readOnly });
    parts.set(overlay, { base, top });
    return overlay;
  };
  return {
    async create({ size, data, readOnly = false }) {
      const base = new MemoryBackend(size, { data, readOnly: true });
      const top = new MemoryBackend(overlayTopBytes(size, blockSize));
      if (readOnly) await (await open(base, top, false)).close();
      return open(base, top, readOnly);
    },
    async reopen(backend, options) {
      const p = parts.get(backend);
      if (!p) throw new Error('reopen of a disk this factory did not make');
      await backend.close();
      return open(p.base, p.top, options?.readOnly ?? false);
    },
  };
}

/**
 * Overlays opened through the 'overlay' BackendSpec (as createDisk and the
 * device worker open them), base and top both OPFS disks or both IndexedDB
 * disks, named `PREFIX-base-N` and `PREFIX-top-N`. `openBackend` opens a
 * spec (default: in this thread; the WASI harness passes its facade).
 */
export function specOverlayFactory(
  kind: 'opfs' | 'indexeddb',
  prefix: string,
  openBackend: (spec: BackendSpec) => Promise<BlockBackend> = openSpec,
): BackendFactory {
  let disks = 0;
  const specs = new WeakMap<BlockBackend, Extract<BackendSpec, { kind: 'overlay' }>>();
  const disk = (name: string, extra: { size?: number; readOnly?: boolean }): BackendSpec =>
    kind === 'opfs' ? { kind, name, directory: prefix, ...extra } : { kind, name: `${prefix}-${name}`, ...extra };
  const open = async (spec: Extract<BackendSpec, { kind: 'overlay' }>) => {
    const overlay = await openBackend(spec);
    specs.set(overlay, spec);
    return overlay;
  };
  return {
    async create({ size, data, readOnly = false }) {
      const id = ++disks;
      const base = await openBackend(disk(`base-${id}`, { size }));
      if (data) await base.write(0, data);
      await base.close();
      const spec = { kind: 'overlay', base: disk(`base-${id}`, { readOnly: true }), top: disk(`top-${id}`, {}) } as const;
      if (readOnly) await (await openBackend(spec)).close();
      return open({ ...spec, readOnly });
    },
    async reopen(backend, options) {
      const spec = specs.get(backend);
      if (!spec) throw new Error('reopen of a disk this factory did not make');
      await backend.close();
      return open({ ...spec, readOnly: options?.readOnly ?? false });
    },
    sparseHugeDisks: OVERLAY_CAPABILITIES[kind].sparseHugeDisks,
  };
}
