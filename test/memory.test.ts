import { describe, expect, it } from 'vitest';
import { GuestMemory, GuestMemoryError } from '../src/virtio/memory.ts';

const BASE = 0x4000_0000;

describe('GuestMemory', () => {
  it('accepts a range ending exactly at the last byte of RAM, and refuses one byte more (end-inclusive)', () => {
    const mem = GuestMemory.of(new ArrayBuffer(4096), BASE);
    expect(mem.contains(BASE, 4096)).toBe(true);
    expect(mem.contains(BASE + 4095, 1)).toBe(true);
    expect(mem.contains(BASE, 4097)).toBe(false);
    expect(mem.contains(BASE + 4096, 1)).toBe(false);
    expect(mem.contains(BASE - 1, 1)).toBe(false);
    expect(mem.view(BASE + 4000, 96)?.length).toBe(96);
    expect(mem.view(BASE + 4000, 97)).toBeNull();
    expect(() => mem.readU32(BASE + 4094)).toThrow(GuestMemoryError);
  });

  it('refuses addresses that overflow or are not safe integers', () => {
    const mem = GuestMemory.of(new ArrayBuffer(4096), BASE);
    expect(mem.contains(2 ** 64, 1)).toBe(false);
    expect(mem.contains(BASE, 2 ** 53)).toBe(false);
    expect(mem.contains(-1, 2)).toBe(false);
  });

  it('reads and writes little-endian scalars, including u64 above 2^32', () => {
    const buf = new ArrayBuffer(64);
    const mem = GuestMemory.of(buf, BASE);
    mem.writeU64(BASE + 8, 0x1_2345_6789);
    expect(new Uint8Array(buf, 8, 8)).toEqual(new Uint8Array([0x89, 0x67, 0x45, 0x23, 1, 0, 0, 0]));
    expect(mem.readU64(BASE + 8)).toBe(0x1_2345_6789);
    mem.writeU16(BASE, 0xbeef);
    expect(mem.readU8(BASE)).toBe(0xef);
    expect(mem.loadU16Acquire(BASE)).toBe(0xbeef);
  });

  it('gives zero-copy views: writes through a view land in the source', () => {
    const buf = new SharedArrayBuffer(4096);
    const mem = GuestMemory.of(buf, BASE);
    mem.view(BASE + 100, 4)!.set([1, 2, 3, 4]);
    expect(Array.from(new Uint8Array(buf, 100, 4))).toEqual([1, 2, 3, 4]);
  });

  it('maps several regions, splits copies across adjacent ones, and rejects gaps', () => {
    const a = new ArrayBuffer(4096);
    const b = new ArrayBuffer(4096);
    const mem = new GuestMemory([
      { guestAddress: BASE, source: a },
      { guestAddress: BASE + 4096, source: b },
      { guestAddress: BASE + 3 * 4096, source: new ArrayBuffer(4096) },
    ]);
    expect(mem.contains(BASE + 4000, 200)).toBe(true);
    expect(mem.view(BASE + 4000, 200)).toBeNull(); // not one region
    expect(mem.contiguous(BASE + 4000, 200)).toBe(96);
    expect(mem.write(BASE + 4000, new Uint8Array(200).fill(7))).toBe(true);
    expect(new Uint8Array(a)[4095]).toBe(7);
    expect(new Uint8Array(b)[103]).toBe(7);
    expect(mem.contains(BASE + 2 * 4096 - 1, 2)).toBe(false); // into the gap
    expect(mem.write(BASE + 2 * 4096 - 1, new Uint8Array(2))).toBe(false);
    expect(() => new GuestMemory([{ guestAddress: 0, source: a }, { guestAddress: 100, source: b }])).toThrow(/overlap/);
  });

  it('re-derives views after a WebAssembly.Memory grows (non-shared: old buffer detached)', () => {
    const wasm = new WebAssembly.Memory({ initial: 1, maximum: 4 });
    const mem = new GuestMemory([{ guestAddress: BASE, source: wasm, size: 4 * 65536 }]);
    expect(mem.contains(BASE + 65536, 1)).toBe(false);
    wasm.grow(1);
    expect(mem.contains(BASE + 65536, 1)).toBe(true);
    mem.writeU32(BASE + 65536, 42);
    expect(new Uint32Array(wasm.buffer)[65536 / 4]).toBe(42);
    mem.writeU32(BASE, 7); // the first page still works through fresh views
    expect(new Uint32Array(wasm.buffer)[0]).toBe(7);
  });

  it('re-derives views after a shared WebAssembly.Memory grows', () => {
    const wasm = new WebAssembly.Memory({ initial: 1, maximum: 4, shared: true });
    const mem = new GuestMemory([{ guestAddress: BASE, source: wasm, size: 4 * 65536 }]);
    mem.writeU32(BASE + 8, 1);
    wasm.grow(2);
    mem.writeU32(BASE + 2 * 65536 + 8, 9);
    expect(new Uint32Array(wasm.buffer)[(2 * 65536 + 8) / 4]).toBe(9);
    expect(mem.readU32(BASE + 8)).toBe(1);
  });
});

describe('GuestMemory.cachedView', () => {
  it('returns the same view for the same range, and a fresh one after a non-shared memory grew (old views detach)', () => {
    const wasm = new WebAssembly.Memory({ initial: 1, maximum: 4 });
    const mem = new GuestMemory([{ guestAddress: BASE, source: wasm, size: 4 * 65536 }]);
    const a = mem.cachedView(BASE + 4096, 512)!;
    expect(mem.cachedView(BASE + 4096, 512)).toBe(a);
    expect(mem.cachedView(BASE + 4096, 1024)).not.toBe(a); // another length: another view
    wasm.grow(1);
    const b = mem.cachedView(BASE + 4096, 1024)!;
    expect(b.length).toBe(1024);
    b[0] = 9;
    expect(new Uint8Array(wasm.buffer)[4096]).toBe(9);
    expect(mem.cachedView(BASE + 65536, 16)).not.toBeNull();
  });

  it('keeps using views across a shared memory grow (they stay valid)', () => {
    const wasm = new WebAssembly.Memory({ initial: 1, maximum: 4, shared: true });
    const mem = new GuestMemory([{ guestAddress: BASE, source: wasm, size: 4 * 65536 }]);
    const a = mem.cachedView(BASE, 64)!;
    wasm.grow(1);
    expect(mem.cachedView(BASE, 64)).toBe(a);
    a[1] = 5;
    expect(new Uint8Array(wasm.buffer)[1]).toBe(5);
  });
});

describe('GuestMemory after a non-shared grow', () => {
  it('re-derives views for addresses below the old end too (the old buffer is detached)', () => {
    const wasm = new WebAssembly.Memory({ initial: 1, maximum: 4 });
    const mem = new GuestMemory([{ guestAddress: BASE, source: wasm, size: 4 * 65536 }]);
    mem.writeU32(BASE + 16, 3);
    wasm.grow(1);
    expect(mem.readU32(BASE + 16)).toBe(3);
    expect(mem.view(BASE, 32)!.length).toBe(32);
  });
});
