// The Node file backend: the shared backend contract on real files, plus what
// only a file can show (bytes really on disk, clear open errors, big ranges
// zeroed in bounded chunks).

import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { StorageError } from '../src/backends/backend.ts';
import { NodeFileBackend, type Fallocate } from '../src/backends/node-file.ts';
import { loadAddon } from '../src/host/vhost-user/addon.ts';
import { openDiskImage } from '../src/node.ts';
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
  // Only the cases that apply are registered: the count above is the check, not a skip.
  for (const c of backendContract) {
    if (c.applies(factory)) test(c.name, () => c.run(factory));
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

// DISCARD and WRITE_ZEROES give space back (virtio 1.2 §5.2.6.2): one fstrim
// in a guest must not allocate the whole image. fallocate comes from the
// vhost-user addon (Linux only).
describe.runIf(process.platform === 'linux')('node file backend: holes', () => {
  const MIB = 1 << 20;
  /** Bytes the file really occupies (st_blocks is in 512-byte units whatever the fs block size). */
  const allocated = (path: string): number => statSync(path).blocks * 512;

  /** A sparse 8 MiB image with its middle 4 MiB written (allocated). */
  function writtenImage(fallocate?: Fallocate): { path: string; disk: NodeFileBackend } {
    const path = makeImage(8 * MIB);
    const disk = NodeFileBackend.open(path, { fallocate });
    disk.write(2 * MIB, new Uint8Array(4 * MIB).fill(0x5a));
    disk.flush();
    return { path, disk };
  }

  const readBack = (disk: NodeFileBackend, offset: number, length: number): Uint8Array => {
    const out = new Uint8Array(length).fill(1);
    disk.read(offset, out);
    return out;
  };

  test('a discard of written data punches a hole: allocated blocks shrink, the range reads zeroes', () => {
    const addon = loadAddon();
    const { path, disk } = writtenImage(addon.fallocate);
    const before = allocated(path);
    expect(before).toBeGreaterThanOrEqual(4 * MIB);
    disk.discard(3 * MIB, 2 * MIB);
    disk.flush();
    expect(allocated(path)).toBeLessThanOrEqual(before - 2 * MIB);
    expect(statSync(path).size).toBe(8 * MIB); // KEEP_SIZE
    expect(readBack(disk, 3 * MIB, 2 * MIB).every((b) => b === 0)).toBe(true);
    // The edges of the hole keep their data.
    expect(readBack(disk, 2 * MIB, MIB).every((b) => b === 0x5a)).toBe(true);
    expect(readBack(disk, 5 * MIB, MIB).every((b) => b === 0x5a)).toBe(true);
    disk.close();
  });

  test('write-zeroes with UNMAP punches a hole; without it the blocks stay allocated and read zeroes', () => {
    const addon = loadAddon();
    const { path, disk } = writtenImage(addon.fallocate);
    const before = allocated(path);
    disk.writeZeroes(2 * MIB, MIB, false);
    expect(readBack(disk, 2 * MIB, MIB).every((b) => b === 0)).toBe(true);
    expect(allocated(path)).toBe(before);
    disk.writeZeroes(4 * MIB, 2 * MIB, true);
    expect(allocated(path)).toBeLessThanOrEqual(before - 2 * MIB);
    expect(readBack(disk, 4 * MIB, 2 * MIB).every((b) => b === 0)).toBe(true);
    expect(readBack(disk, 3 * MIB, MIB).every((b) => b === 0x5a)).toBe(true);
    disk.close();
  });

  test('where the file system refuses (EOPNOTSUPP) the range is zero-filled, and the mode is not retried', () => {
    const calls: number[] = [];
    const refuse: Fallocate = (_fd, mode) => {
      calls.push(mode);
      throw Object.assign(new Error('fallocate: Operation not supported'), { code: 'EOPNOTSUPP' });
    };
    const { path, disk } = writtenImage(refuse);
    const before = allocated(path);
    disk.discard(3 * MIB, MIB);
    disk.discard(4 * MIB, MIB);
    expect(calls).toEqual([0x03]); // PUNCH_HOLE | KEEP_SIZE, tried once
    expect(readBack(disk, 3 * MIB, 2 * MIB).every((b) => b === 0)).toBe(true);
    expect(allocated(path)).toBe(before); // written zeroes, not a hole
    disk.writeZeroes(2 * MIB, MIB, false);
    expect(calls).toEqual([0x03, 0x11]); // ZERO_RANGE | KEEP_SIZE is its own mode
    expect(readBack(disk, 2 * MIB, MIB).every((b) => b === 0)).toBe(true);
    disk.close();
  });

  test('a real fallocate failure (EIO) is a storage error, not a silent zero-fill', () => {
    const broken: Fallocate = () => {
      throw Object.assign(new Error('fallocate: Input/output error'), { code: 'EIO' });
    };
    const { disk } = writtenImage(broken);
    expect(() => disk.discard(3 * MIB, MIB)).toThrow(expect.objectContaining({ code: 'io' }));
    expect(readBack(disk, 3 * MIB, MIB).every((b) => b === 0x5a)).toBe(true);
    disk.close();
  });

  test("openDiskImage ('virtio-blk-web/node') punches holes; NodeFileBackend.open without fallocate leaves the blocks allocated", () => {
    const through = (open: (path: string) => NodeFileBackend): { before: number; after: number } => {
      const path = makeImage(8 * MIB);
      const disk = open(path);
      disk.write(2 * MIB, new Uint8Array(4 * MIB).fill(0x5a));
      const before = allocated(path);
      disk.discard(2 * MIB, 4 * MIB);
      expect(readBack(disk, 2 * MIB, 4 * MIB).every((b) => b === 0)).toBe(true);
      disk.close();
      return { before, after: allocated(path) };
    };
    const punched = through((path) => openDiskImage(path));
    expect(punched.before).toBeGreaterThanOrEqual(4 * MIB);
    expect(punched.after).toBeLessThanOrEqual(punched.before - 4 * MIB);
    const plain = through((path) => NodeFileBackend.open(path));
    expect(plain.after).toBe(plain.before);
    const readOnly = openDiskImage(makeImage(MIB), { readOnly: true });
    expect(readOnly.readOnly).toBe(true);
    readOnly.close();
  });

  test('without fallocate, discard still reads back zeroes (zero-fill)', () => {
    const { disk } = writtenImage();
    disk.discard(3 * MIB, MIB);
    expect(readBack(disk, 3 * MIB, MIB).every((b) => b === 0)).toBe(true);
    disk.close();
  });

  test('a directory as the image is one sentence saying so, read-write or read-only', () => {
    for (const readOnly of [false, true]) {
      expect(() => NodeFileBackend.open(dir, { readOnly })).toThrow(new RegExp(`^disk image ${dir} is a directory$`));
    }
  });
});
