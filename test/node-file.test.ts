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

describe('node file backend: vectored I/O', () => {
  test('writev stores views back to back and readv reads them back into views of other sizes', () => {
    const disk = NodeFileBackend.open(makeImage(256 * 1024));
    const data = pattern(3 * 4096 + 1536, 21);
    const pieces = [data.subarray(0, 4096), data.subarray(4096, 4096 + 1536), data.subarray(4096 + 1536)];
    disk.writev(8192, pieces);
    const plain = new Uint8Array(data.length);
    disk.read(8192, plain);
    expect(Buffer.from(plain)).toEqual(Buffer.from(data));
    const big = new Uint8Array(data.length + 100);
    const views = [big.subarray(0, 512), big.subarray(512, 512 + 8192), big.subarray(512 + 8192, data.length)];
    disk.readv(8192, views);
    expect(Buffer.from(big.subarray(0, data.length))).toEqual(Buffer.from(data));
    expect(big.subarray(data.length).every((b) => b === 0)).toBe(true);
    disk.close();
  });

  test('vectored calls are range-checked and refused on a read-only disk like plain ones', () => {
    const disk = NodeFileBackend.open(makeImage(8192), { readOnly: true });
    expect(() => disk.writev(0, [new Uint8Array(512)])).toThrow(expect.objectContaining({ code: 'read-only' }));
    expect(() => disk.readv(4096, [new Uint8Array(4096), new Uint8Array(512)])).toThrow(
      expect.objectContaining({ code: 'out-of-range' }),
    );
    disk.close();
  });

  test('a readv past a file that shrank behind the backend reads zeroes for the missing tail', () => {
    const path = makeImage(16384, new Uint8Array(16384).fill(9));
    const disk = NodeFileBackend.open(path);
    truncateSync(path, 10000);
    const views = [new Uint8Array(8192).fill(1), new Uint8Array(8192).fill(1)];
    disk.readv(0, views);
    expect(views[0]!.every((b) => b === 9)).toBe(true);
    expect(views[1]!.subarray(0, 10000 - 8192).every((b) => b === 9)).toBe(true);
    expect(views[1]!.subarray(10000 - 8192).every((b) => b === 0)).toBe(true);
    disk.close();
  });
});
