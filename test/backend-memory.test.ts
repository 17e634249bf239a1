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
  for (const c of backendContract) {
    test.skipIf(!c.applies(factory))(c.name, () => c.run(factory));
  }
});
