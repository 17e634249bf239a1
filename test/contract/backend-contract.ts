// The contract every BlockBackend honours, as one list of named async cases.
//
// Framework-agnostic on purpose: Vitest runs it in Node against the memory
// backend (test/backend-memory.test.ts) and a Chromium worker runs it against
// OPFS (e2e/harness/opfs-worker.ts, driven by e2e/opfs.spec.ts). A case gets a
// factory, builds the disks it needs, and throws ContractFailure on a broken
// promise. Capabilities a backend may lack (reopening, resize, huge sparse
// disks) are declared by the factory; a case needing one it lacks is skipped
// by `applies`, so every runner reports the same names.

import { StorageError, type BlockBackend, type StorageErrorCode } from '../../src/backends/backend.ts';

export interface CreateOptions {
  /** Disk size in bytes. */
  size: number;
  /** Initial contents from offset 0 (the rest reads as zeroes). */
  data?: Uint8Array;
  readOnly?: boolean;
}

export interface BackendFactory {
  /** A fresh disk, never seen by another case. */
  create(options: CreateOptions): Promise<BlockBackend>;
  /**
   * Close `backend` and open the same disk again (persistence). Omit for
   * backends whose data lives only as long as the object.
   */
  reopen?(backend: BlockBackend, options?: { readOnly?: boolean }): Promise<BlockBackend>;
  /** Whether disks larger than 4 GiB can be created cheaply (sparse). */
  readonly sparseHugeDisks?: boolean;
  /** Whether the backend implements the optional `resize`. */
  readonly resizable?: boolean;
  /**
   * False for backends that only serve read-only images (HTTP): cases that
   * write are skipped, and `create` returns a read-only disk of `data`.
   */
  readonly writable?: boolean;
}

export interface ContractCase {
  readonly name: string;
  /** False when the factory lacks a capability the case needs. */
  applies(factory: BackendFactory): boolean;
  run(factory: BackendFactory): Promise<void>;
}

export class ContractFailure extends Error {
  override readonly name = 'ContractFailure';
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new ContractFailure(message);
}

/** A deterministic, position-dependent pattern: misplaced bytes never match by luck. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    // xorshift32
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

function sameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  check(actual.length === expected.length, `${what}: length ${actual.length}, expected ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      throw new ContractFailure(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

function allZero(bytes: Uint8Array, what: string): void {
  const i = bytes.findIndex((b) => b !== 0);
  check(i < 0, `${what}: byte ${i} is ${bytes[i]}, expected 0`);
}

async function readBack(backend: BlockBackend, offset: number, length: number): Promise<Uint8Array> {
  const dst = new Uint8Array(length).fill(0xee);
  await backend.read(offset, dst);
  return dst;
}

async function expectStorageError(code: StorageErrorCode, what: string, call: () => unknown): Promise<void> {
  let thrown: unknown;
  try {
    await call();
  } catch (err) {
    thrown = err;
  }
  check(thrown !== undefined, `${what}: expected StorageError '${code}', nothing was thrown`);
  check(thrown instanceof StorageError, `${what}: expected StorageError '${code}', got ${String(thrown)}`);
  check(thrown.code === code, `${what}: expected code '${code}', got '${thrown.code}' (${thrown.message})`);
}

/** Run `body` with a backend and close it after, whatever happens. */
async function using(backend: BlockBackend, body: (b: BlockBackend) => Promise<void>): Promise<void> {
  try {
    await body(backend);
  } finally {
    await backend.close();
  }
}

const always = (): boolean => true;
const writable = (f: BackendFactory): boolean => f.writable !== false;

export const backendContract: readonly ContractCase[] = [
  {
    name: 'reports its size and is writable by default',
    applies: writable,
    run: async (f) =>
      using(await f.create({ size: 3 * MiB }), async (b) => {
        check(b.size === 3 * MiB, `size is ${b.size}, expected ${3 * MiB}`);
        check(!b.readOnly, 'a default disk is read-only');
      }),
  },
  {
    name: 'a new disk reads as zeroes',
    applies: always,
    run: async (f) =>
      using(await f.create({ size: 1 * MiB }), async (b) => {
        allZero(await readBack(b, 0, 1 * MiB), 'whole new disk');
      }),
  },
  {
    name: 'initial data is readable and the rest is zero',
    applies: always,
    run: async (f) => {
      const data = pattern(10_000, 1);
      await using(await f.create({ size: 64 * KiB, data }), async (b) => {
        sameBytes(await readBack(b, 0, data.length), data, 'initial data');
        allZero(await readBack(b, data.length, 64 * KiB - data.length), 'after initial data');
      });
    },
  },
  {
    name: 'writes read back at sector and unaligned offsets',
    applies: writable,
    run: async (f) =>
      using(await f.create({ size: 1 * MiB }), async (b) => {
        const at = [
          [0, 512],
          [4096, 65536],
          [777, 3],
          [1 * MiB - 1000, 1000],
        ] as const;
        for (const [i, [offset, length]] of at.entries()) await b.write(offset, pattern(length, 10 + i));
        for (const [i, [offset, length]] of at.entries()) {
          sameBytes(await readBack(b, offset, length), pattern(length, 10 + i), `range ${offset}+${length}`);
        }
        allZero(await readBack(b, 512, 777 - 512), 'gap before the 3-byte write');
        allZero(await readBack(b, 780, 4096 - 780), 'gap after the 3-byte write');
      }),
  },
  {
    name: 'overlapping writes: the last one wins, neighbours stay',
    applies: writable,
    run: async (f) =>
      using(await f.create({ size: 64 * KiB }), async (b) => {
        await b.write(0, pattern(16 * KiB, 2));
        await b.write(4 * KiB, pattern(4 * KiB, 3));
        const expected = pattern(16 * KiB, 2);
        expected.set(pattern(4 * KiB, 3), 4 * KiB);
        sameBytes(await readBack(b, 0, 16 * KiB), expected, 'after overlap');
      }),
  },
  {
    name: 'reads and writes through views into a larger buffer touch only the view',
    applies: writable,
    run: async (f) =>
      using(await f.create({ size: 64 * KiB }), async (b) => {
        // Guest RAM is one big buffer; the device passes subarrays of it.
        const ram = new Uint8Array(32 * KiB).fill(0xaa);
        ram.set(pattern(8 * KiB, 4), 8 * KiB);
        await b.write(16 * KiB, ram.subarray(8 * KiB, 16 * KiB));
        const out = new Uint8Array(32 * KiB).fill(0x55);
        await b.read(16 * KiB, out.subarray(12 * KiB, 20 * KiB));
        sameBytes(out.subarray(12 * KiB, 20 * KiB), pattern(8 * KiB, 4), 'view read');
        check(out[12 * KiB - 1] === 0x55 && out[20 * KiB] === 0x55, 'read wrote outside its view');
      }),
  },
  {
    name: 'reads and writes accept views on shared memory (guest RAM)',
    applies: (f) => writable(f) && typeof SharedArrayBuffer === 'function',
    run: async (f) =>
      using(await f.create({ size: 64 * KiB }), async (b) => {
        const memory = new WebAssembly.Memory({ initial: 1, maximum: 4, shared: true });
        const ram = new Uint8Array(memory.buffer);
        ram.set(pattern(4 * KiB, 5), 1000);
        await b.write(8 * KiB, ram.subarray(1000, 1000 + 4 * KiB));
        const sab = new Uint8Array(new SharedArrayBuffer(16 * KiB));
        await b.read(8 * KiB, sab.subarray(333, 333 + 4 * KiB));
        sameBytes(sab.slice(333, 333 + 4 * KiB), pattern(4 * KiB, 5), 'shared view');
      }),
  },
  {
    name: 'write-zeroes reads back zeroes and leaves neighbours alone',
    applies: writable,
    run: async (f) =>
      using(await f.create({ size: 4 * MiB }), async (b) => {
        await b.write(0, pattern(4 * MiB, 6));
        // Larger than any sensible zero chunk, unaligned ends, both flag values.
        await b.writeZeroes(1000, 3 * MiB - 2000, false);
        await b.writeZeroes(3 * MiB + 5, 100, true);
        const expected = pattern(4 * MiB, 6);
        expected.fill(0, 1000, 3 * MiB - 1000);
        expected.fill(0, 3 * MiB + 5, 3 * MiB + 105);
        sameBytes(await readBack(b, 0, 4 * MiB), expected, 'after write-zeroes');
      }),
  },
  {
    name: 'write-zeroes with unmap to the end of the disk keeps the size',
    applies: writable,
    run: async (f) =>
      using(await f.create({ size: 1 * MiB }), async (b) => {
        await b.write(0, pattern(1 * MiB, 7));
        await b.writeZeroes(512 * KiB, 512 * KiB, true);
        check(b.size === 1 * MiB, `size changed to ${b.size}`);
        sameBytes(await readBack(b, 0, 512 * KiB), pattern(512 * KiB, 7), 'before zeroed tail');
        allZero(await readBack(b, 512 * KiB, 512 * KiB), 'zeroed tail');
      }),
  },
  {
    name: 'discard leaves the range zero or unchanged and neighbours alone',
    applies: writable,
    run: async (f) =>
      using(await f.create({ size: 1 * MiB }), async (b) => {
        const data = pattern(1 * MiB, 8);
        await b.write(0, data);
        await b.discard(64 * KiB, 128 * KiB);
        const after = await readBack(b, 0, 1 * MiB);
        sameBytes(after.subarray(0, 64 * KiB), data.subarray(0, 64 * KiB), 'before discard');
        sameBytes(after.subarray(192 * KiB), data.subarray(192 * KiB), 'after discard');
        const range = after.subarray(64 * KiB, 192 * KiB);
        const zero = range.every((x) => x === 0);
        check(zero || range.every((x, i) => x === data[64 * KiB + i]), 'discarded range is neither zero nor the old data');
      }),
  },
  {
    name: 'flush keeps the data',
    applies: writable,
    run: async (f) =>
      using(await f.create({ size: 64 * KiB }), async (b) => {
        await b.write(512, pattern(1024, 9));
        await b.flush();
        await b.flush();
        sameBytes(await readBack(b, 512, 1024), pattern(1024, 9), 'after flush');
      }),
  },
  {
    name: 'ranges outside the disk fail with out-of-range and change nothing',
    applies: writable,
    run: async (f) =>
      using(await f.create({ size: 64 * KiB }), async (b) => {
        await b.write(60 * KiB, pattern(4 * KiB, 11));
        await expectStorageError('out-of-range', 'read past the end', () => b.read(63 * KiB, new Uint8Array(2 * KiB)));
        await expectStorageError('out-of-range', 'write past the end', () => b.write(63 * KiB, new Uint8Array(2 * KiB)));
        await expectStorageError('out-of-range', 'write at a negative offset', () => b.write(-1, new Uint8Array(1)));
        await expectStorageError('out-of-range', 'zeroes past the end', () => b.writeZeroes(60 * KiB, 8 * KiB, false));
        sameBytes(await readBack(b, 60 * KiB, 4 * KiB), pattern(4 * KiB, 11), 'tail after refused calls');
        check(b.size === 64 * KiB, `size changed to ${b.size}`);
      }),
  },
  {
    name: 'a read-only image reads back at unaligned offsets, across blocks, concurrently and into views',
    applies: always,
    run: async (f) => {
      // Not a power of two: the backend's last block (or chunk) is partial.
      const size = 3 * MiB + 4096 + 512;
      const data = pattern(size, 18);
      await using(await f.create({ size, data, readOnly: true }), async (b) => {
        check(b.size === size, `size is ${b.size}, expected ${size}`);
        const at = [
          [0, 512],
          [777, 3],
          [64 * KiB - 1, 2],
          [300_000, 500_000],
          [size - 1000, 1000],
          [0, size],
        ] as const;
        for (const [offset, length] of at) {
          sameBytes(await readBack(b, offset, length), data.subarray(offset, offset + length), `range ${offset}+${length}`);
        }
        // Sixteen adjacent reads in flight at once, as a queue of requests.
        const parts = await Promise.all(Array.from({ length: 16 }, (_, i) => readBack(b, 1 * MiB + i * 12 * KiB, 12 * KiB)));
        parts.forEach((p, i) => sameBytes(p, data.subarray(1 * MiB + i * 12 * KiB, 1 * MiB + (i + 1) * 12 * KiB), `concurrent read ${i}`));
        const out = new Uint8Array(32 * KiB).fill(0x55);
        await b.read(2 * MiB + 5, out.subarray(4 * KiB, 20 * KiB));
        sameBytes(out.subarray(4 * KiB, 20 * KiB), data.subarray(2 * MiB + 5, 2 * MiB + 5 + 16 * KiB), 'view read');
        check(out[4 * KiB - 1] === 0x55 && out[20 * KiB] === 0x55, 'read wrote outside its view');
        if (typeof SharedArrayBuffer === 'function') {
          const sab = new Uint8Array(new SharedArrayBuffer(16 * KiB));
          await b.read(100, sab.subarray(333, 333 + 8 * KiB));
          sameBytes(sab.slice(333, 333 + 8 * KiB), data.subarray(100, 100 + 8 * KiB), 'shared view');
        }
        if (b.readv) {
          const segs = [new Uint8Array(4096), new Uint8Array(100), new Uint8Array(70 * KiB)];
          await b.readv(123_456, segs);
          let at2 = 123_456;
          for (const [i, seg] of segs.entries()) {
            sameBytes(seg, data.subarray(at2, at2 + seg.length), `readv segment ${i}`);
            at2 += seg.length;
          }
        }
      });
    },
  },
  {
    name: 'reads outside a read-only image fail with out-of-range',
    applies: always,
    run: async (f) => {
      const data = pattern(64 * KiB, 19);
      await using(await f.create({ size: 64 * KiB, data, readOnly: true }), async (b) => {
        await expectStorageError('out-of-range', 'read past the end', () => b.read(63 * KiB, new Uint8Array(2 * KiB)));
        await expectStorageError('out-of-range', 'read at a negative offset', () => b.read(-1, new Uint8Array(1)));
        sameBytes(await readBack(b, 60 * KiB, 4 * KiB), data.subarray(60 * KiB), 'tail after refused reads');
      });
    },
  },
  {
    name: 'a read-only disk refuses writes, zeroes and discards and keeps its data',
    applies: always,
    run: async (f) => {
      const data = pattern(8 * KiB, 12);
      await using(await f.create({ size: 8 * KiB, data, readOnly: true }), async (b) => {
        check(b.readOnly, 'readOnly is false');
        await expectStorageError('read-only', 'write', () => b.write(0, new Uint8Array(512)));
        await expectStorageError('read-only', 'write-zeroes', () => b.writeZeroes(0, 512, false));
        await expectStorageError('read-only', 'discard', () => b.discard(0, 512));
        // The device may send FLUSH to a read-only disk; it must not fail.
        await b.flush();
        sameBytes(await readBack(b, 0, 8 * KiB), data, 'read-only data');
      });
    },
  },
  {
    name: 'resize grows with zeroes and shrinks, keeping the common prefix',
    applies: (f) => f.resizable === true,
    run: async (f) =>
      using(await f.create({ size: 64 * KiB }), async (b) => {
        check(b.resize !== undefined, 'the factory says resizable but the backend has no resize');
        await b.write(0, pattern(64 * KiB, 13));
        await b.resize!(128 * KiB);
        check(b.size === 128 * KiB, `size after growing is ${b.size}`);
        sameBytes(await readBack(b, 0, 64 * KiB), pattern(64 * KiB, 13), 'prefix after growing');
        allZero(await readBack(b, 64 * KiB, 64 * KiB), 'grown tail');
        await b.resize!(16 * KiB);
        check(b.size === 16 * KiB, `size after shrinking is ${b.size}`);
        sameBytes(await readBack(b, 0, 16 * KiB), pattern(16 * KiB, 13), 'prefix after shrinking');
        await expectStorageError('out-of-range', 'read past the shrunk end', () => b.read(16 * KiB, new Uint8Array(1)));
        // Growing again must not resurrect the old bytes.
        await b.resize!(64 * KiB);
        allZero(await readBack(b, 16 * KiB, 48 * KiB), 'regrown tail');
      }),
  },
  {
    name: 'data survives close and reopen after flush',
    applies: (f) => f.reopen !== undefined,
    run: async (f) => {
      const first = await f.create({ size: 256 * KiB });
      await first.write(4096, pattern(100 * KiB, 14));
      await first.flush();
      const second = await f.reopen!(first);
      await using(second, async (b) => {
        check(b.size === 256 * KiB, `size after reopen is ${b.size}`);
        sameBytes(await readBack(b, 4096, 100 * KiB), pattern(100 * KiB, 14), 'after reopen');
      });
    },
  },
  {
    name: 'reopened read-only, the data is there and writes are refused',
    applies: (f) => f.reopen !== undefined,
    run: async (f) => {
      const first = await f.create({ size: 64 * KiB });
      await first.write(0, pattern(4 * KiB, 15));
      await first.flush();
      await using(await f.reopen!(first, { readOnly: true }), async (b) => {
        check(b.readOnly, 'reopened read-only but readOnly is false');
        sameBytes(await readBack(b, 0, 4 * KiB), pattern(4 * KiB, 15), 'read-only reopen');
        await expectStorageError('read-only', 'write', () => b.write(0, new Uint8Array(512)));
      });
    },
  },
  {
    name: 'disks over 4 GiB: I/O beyond 4 GiB lands where it should',
    applies: (f) => f.sparseHugeDisks === true,
    run: async (f) =>
      using(await f.create({ size: 5 * GiB }), async (b) => {
        check(b.size === 5 * GiB, `size is ${b.size}`);
        const high = 4 * GiB + 12345;
        await b.write(high, pattern(64 * KiB, 16));
        await b.write(5 * GiB - 4096, pattern(4096, 17));
        // The same offsets modulo 2^32 must not have been hit (no 32-bit wrap).
        allZero(await readBack(b, 12345, 64 * KiB), 'offset modulo 2^32');
        sameBytes(await readBack(b, high, 64 * KiB), pattern(64 * KiB, 16), 'beyond 4 GiB');
        sameBytes(await readBack(b, 5 * GiB - 4096, 4096), pattern(4096, 17), 'last sector');
        await b.writeZeroes(high + 4096, 8192, false);
        allZero(await readBack(b, high + 4096, 8192), 'zeroes beyond 4 GiB');
        await b.flush();
      }),
  },
];
