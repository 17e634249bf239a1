// The lab's disks that have state worth showing (IndexedDB, overlay), opened
// in the device worker as a `module` backend: `openBackend` opens the real
// backend from its BackendSpec and wraps it so that, after every call the
// device makes, the backend's state (IndexedDB: cached, dirty, in-flight
// chunks; overlay: blocks from the base, in the top, zeroed) is written into
// a small shared buffer the page reads without asking. The device worker
// sleeps in Atomics.wait between requests, so it could not answer a message
// promptly; shared memory needs no answer. The state is as of the last
// request's completion.

import { isPromise, type BlockBackend } from '../backends/backend.ts';
import { IndexedDbBackend } from '../backends/indexeddb.ts';
import { OverlayBackend } from '../backends/overlay.ts';
import { openBackend as openSpec } from '../host/browser/open-backend.ts';
import type { BackendSpec } from '../host/browser/worker-protocol.ts';

/** Slots of the state buffer (Float64Array). */
export const LabState = {
  /** Bumped after every publish. */
  Updates: 0,
  CachedChunks: 1,
  DirtyChunks: 2,
  InFlightTransactions: 3,
  BaseBlocks: 4,
  TopBlocks: 5,
  ZeroBlocks: 6,
  MapDirty: 7,
} as const;
export const LAB_STATE_BYTES = 8 * 8;

export interface LabBackendOptions {
  spec: BackendSpec;
  /** LAB_STATE_BYTES; shared when the device runs in a worker. */
  state: SharedArrayBuffer | ArrayBuffer;
}

function publish(backend: BlockBackend, state: Float64Array): void {
  if (backend instanceof IndexedDbBackend) {
    const c = backend.cacheState;
    state[LabState.CachedChunks] = c.cachedChunks;
    state[LabState.DirtyChunks] = c.dirtyChunks;
    state[LabState.InFlightTransactions] = c.inFlightTransactions;
  } else if (backend instanceof OverlayBackend) {
    const s = backend.state;
    state[LabState.BaseBlocks] = s.baseBlocks;
    state[LabState.TopBlocks] = s.topBlocks;
    state[LabState.ZeroBlocks] = s.zeroBlocks;
    state[LabState.MapDirty] = s.mapDirty ? 1 : 0;
  }
  state[LabState.Updates]! += 1;
}

export async function openBackend(options: LabBackendOptions): Promise<BlockBackend> {
  const backend = await openSpec(options.spec);
  const state = new Float64Array(options.state);
  publish(backend, state);
  // Every method call publishes once it completes; synchronous calls stay
  // synchronous (the device's fast path depends on it).
  return new Proxy(backend, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        const result = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (!isPromise(result)) {
          publish(target, state);
          return result;
        }
        return result.then(
          (v) => (publish(target, state), v),
          (e: unknown) => {
            publish(target, state);
            throw e;
          },
        );
      };
    },
  });
}
