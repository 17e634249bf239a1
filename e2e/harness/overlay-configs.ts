// The overlay configurations the Chromium contract run covers, as plain data
// shared by the harness worker (which builds them) and e2e/overlay.spec.ts
// (which registers only the contract cases each one can run, instead of
// skipping the rest).

import type { BackendFactory } from '../../test/contract/backend-contract.ts';

/** Where the base and the top live: both in memory, both in OPFS, or both in IndexedDB. */
export const OVERLAY_CONFIGS = ['memory', 'opfs', 'indexeddb'] as const;
export type OverlayConfig = (typeof OVERLAY_CONFIGS)[number];

/** What each configuration's factory can do (BackendFactory's capability fields). */
export const OVERLAY_CAPABILITIES: Record<OverlayConfig, { reopens: boolean; sparseHugeDisks: boolean }> = {
  memory: { reopens: true, sparseHugeDisks: false },
  // Chromium counts a sparse OPFS file's whole size against the quota, and a
  // huge case needs a base and a top of 5 GiB each.
  opfs: { reopens: true, sparseHugeDisks: false },
  indexeddb: { reopens: true, sparseHugeDisks: true },
};

/** A factory with `config`'s capabilities and no disks: enough for ContractCase.applies. */
export function capabilityProbe(config: OverlayConfig): BackendFactory {
  const none = () => Promise.reject(new Error('a capability probe makes no disks'));
  const c = OVERLAY_CAPABILITIES[config];
  return { create: none, ...(c.reopens ? { reopen: none } : {}), sparseHugeDisks: c.sparseHugeDisks };
}
