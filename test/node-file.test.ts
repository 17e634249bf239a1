// The Node file backend: the shared backend contract on real files, plus what
// only a file can show (bytes really on disk, clear open errors, big ranges
// zeroed in bounded chunks).

import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { StorageError } from '../src/backends/backend.ts';
import { NodeFileBackend } from '../src/backends/node-file.ts';
import { backendContract, pattern, type BackendFactory } from './contract/backend-contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'vbw-node-file-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;

function makeImage(size: number, data?: Uint8Array): string {
  const path = join(dir, `disk-${serial++}.img`);
  writeFileSync(path, data ?? new Uint8Array(0));
  truncateSync(path, size);
  return path;
}

const factory: BackendFactory = {
  create: async ({ size, data, readOnly }) => NodeFileBackend.open(makeImage(size, data), { readOnly }),
  reopen: async (backend, options) => {
    const file = backend as NodeFileBackend;
    file.close();
    return NodeFileBackend.open(file.path, options);
  },
  sparseHugeDisks: true,
  resizable: true,
};

describe('backend contract: node file', () => {
  test('every contract case applies to files', () => {
    expect(backendContract.filter((c) => c.applies(factory)).length).toBe(backendContract.length);
  });
  for (const c of backendContract) {
    test.skipIf(!c.applies(factory))(c.name, () => c.run(factory));
  }
});

describe('node file backend', () => {
  test('writes land in the file at their offset', () => {
    const path = makeImage(64 * 1024);
    const disk = NodeFileBackend.open(path);
    disk.write(4096 + 7, pattern(1000, 1));
    disk.flush();
    disk.close();
    const bytes = readFileSync(path);
    expect(Buffer.compare(bytes.subarray(4103, 5103), Buffer.from(pattern(1000, 1)))).toBe(0);
    expect(bytes.subarray(0, 4103).every((b) => b === 0)).toBe(true);
  });

  test('write-zeroes over several zero chunks clears exactly the range', () => {
    const size = 3 * 1024 * 1024 + 8192;
    const path = makeImage(size, new Uint8Array(size).fill(0xa5));
    const disk = NodeFileBackend.open(path);
    disk.writeZeroes(4096, size - 8192);
    disk.close();
    const bytes = readFileSync(path);
    expect(bytes.subarray(0, 4096).every((b) => b === 0xa5)).toBe(true);
    expect(bytes.subarray(4096, size - 4096).every((b) => b === 0)).toBe(true);
    expect(bytes.subarray(size - 4096).every((b) => b === 0xa5)).toBe(true);
  });

  test('a missing image is a not-found StorageError naming the path', () => {
    const path = join(dir, 'nope.img');
    const error = (() => {
      try {
        NodeFileBackend.open(path);
      } catch (err) {
        return err;
      }
      return null;
    })();
    expect(error).toBeInstanceOf(StorageError);
    expect((error as StorageError).code).toBe('not-found');
    expect((error as StorageError).message).toContain(path);
  });

  test('a directory is refused', () => {
    expect(() => NodeFileBackend.open(dir, { readOnly: true })).toThrow(StorageError);
  });

  test('calls after close fail with closed', () => {
    const disk = NodeFileBackend.open(makeImage(4096));
    disk.close();
    expect(() => disk.read(0, new Uint8Array(512))).toThrow(expect.objectContaining({ code: 'closed' }));
  });
});
