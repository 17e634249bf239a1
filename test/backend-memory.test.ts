// The backend contract (test/contract/backend-contract.ts) against the memory
// backend, in Node. The OPFS run of the same cases is e2e/opfs.spec.ts.

import { describe, expect, test } from 'vitest';
import { MemoryBackend } from '../src/backends/memory.ts';
import { backendContract, type BackendFactory } from './contract/backend-contract.ts';

const factory: BackendFactory = {
  create: async ({ size, data, readOnly }) => new MemoryBackend(size, { data, readOnly }),
  resizable: true,
};

describe('backend contract: memory', () => {
  test('every contract case is either run or declared not applicable', () => {
    expect(backendContract.filter((c) => c.applies(factory)).length).toBeGreaterThanOrEqual(13);
  });
  // Only the cases that apply are registered: the count above is the check, not a skip.
  for (const c of backendContract) {
    if (c.applies(factory)) test(c.name, () => c.run(factory));
  }
});
