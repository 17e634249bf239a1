// The demo/e2e workload engine against the same-thread host in Node: the
// verify workload finds no mismatch on a correct device at every queue depth,
// and does find one when the disk is changed behind the guest's back.

import { describe, expect, test } from 'vitest';
import { MemoryBackend } from '../src/backends/memory.ts';
import { DiskModel, runWorkload, verifyAgainstModel, workloadBuffers } from '../src/demo/workload.ts';
import { makeRig } from './support/rig.ts';

const DISK = 2 << 20;

describe('workload engine', () => {
  for (const queueDepth of [1, 8, 64]) {
    test(`verify at queue depth ${queueDepth} matches the model`, async () => {
      const { driver } = await makeRig({ diskBytes: DISK, ramBytes: 32 << 20 });
      const model = new DiskModel(DISK);
      const buffers = workloadBuffers(driver, queueDepth, 32 * 1024);
      const result = await runWorkload(driver, { kind: 'verify', queueDepth, blockBytes: 32 * 1024, ops: 2000, seed: queueDepth, flushEvery: 16 }, buffers, model);
      expect(result.mismatches).toBe(0);
      expect(result.ioErrors).toBe(0);
      expect(result.completed).toBe(2000);
      expect(result.reads).toBeGreaterThan(0);
      expect(result.writes).toBeGreaterThan(0);
      expect(result.flushes).toBeGreaterThan(0);
      expect(result.zeroes + result.discards).toBeGreaterThan(0);
      expect(await verifyAgainstModel(driver, model, buffers[0]!)).toBe(0);
    });
  }

  test('verify notices data changed behind its back', async () => {
    const backend = new MemoryBackend(DISK);
    const { driver } = await makeRig({ backend, ramBytes: 32 << 20 });
    const model = new DiskModel(DISK);
    const buffers = workloadBuffers(driver, 4, 4096);
    await runWorkload(driver, { kind: 'randwrite', queueDepth: 4, blockBytes: 4096, ops: 0 }, buffers, model);
    backend.bytes[12345] ^= 0xff;
    expect(await verifyAgainstModel(driver, model, buffers[0]!)).toBe(1);
  });

  for (const kind of ['randread', 'randwrite', 'randrw', 'seqread', 'seqwrite'] as const) {
    test(`${kind} completes the requested operations with progress reports`, async () => {
      const { driver } = await makeRig({ diskBytes: DISK, ramBytes: 32 << 20 });
      const buffers = workloadBuffers(driver, 16, 4096);
      let reported = 0;
      const result = await runWorkload(driver, { kind, queueDepth: 16, blockBytes: 4096, ops: 1000, progressEvery: 100, onProgress: (p) => (reported += p.completed) }, buffers);
      expect(result.completed).toBe(1000);
      expect(reported).toBe(1000);
      expect(result.bytes).toBe(1000 * 4096);
      expect(result.ioErrors).toBe(0);
    });
  }
});
