// v86's guest RAM as the device sees it, and the JIT invalidation every
// device write to it needs.
//
// RAM is a window of `cpu.wasm_memory`: physical address 0 is at
// `cpu.mem8.byteOffset`, `cpu.memory_size[0]` bytes long. The memory is not
// shared (so the device runs on v86's thread) and can grow, which detaches
// the old buffer; `GuestMemory` re-derives its views when one reads short,
// so nothing here caches a view across calls.
//
// v86 compiles guest code to wasm per physical page and must be told when
// anything but the CPU changes a page (its own IDE and virtio devices call
// `jit_dirty_cache` after every DMA write). The device writes guest RAM two
// ways: scalar stores through `GuestMemory` (status byte, used ring, GET_ID
// data), which `JitDirtyingMemory` reports as it makes them; and reads from
// storage straight into views of RAM (zero-copy), which only the backend
// performs, so `jitDirtyingBackend` reports a read's views once the read has
// completed — synchronously, or when its promise settles, before the device
// publishes the used element that lets the guest look at the data.

import type { BlockBackend, MaybePromise } from '../../backends/backend.ts';
import { GuestMemory } from '../../virtio/memory.ts';
import type { V86Cpu } from './hooks.ts';

/** Tells v86's JIT that physical [start, end) changed. */
export type DirtyRange = (start: number, end: number) => void;

/** `GuestMemory` over v86's RAM window that reports every store it makes. */
export class JitDirtyingMemory extends GuestMemory {
  readonly #dirty: DirtyRange;

  constructor(cpu: V86Cpu, dirty: DirtyRange) {
    super([{ guestAddress: 0, source: cpu.wasm_memory, sourceOffset: cpu.mem8.byteOffset, size: cpu.memory_size[0]! }]);
    this.#dirty = dirty;
  }

  override write(addr: number, src: Uint8Array): boolean {
    const ok = super.write(addr, src);
    if (ok) this.#dirty(addr, addr + src.length);
    return ok;
  }

  override fill(addr: number, len: number, value = 0): boolean {
    const ok = super.fill(addr, len, value);
    if (ok) this.#dirty(addr, addr + len);
    return ok;
  }

  override writeU8(addr: number, value: number): void {
    super.writeU8(addr, value);
    this.#dirty(addr, addr + 1);
  }

  override writeU16(addr: number, value: number): void {
    super.writeU16(addr, value);
    this.#dirty(addr, addr + 2);
  }

  override writeU32(addr: number, value: number): void {
    super.writeU32(addr, value);
    this.#dirty(addr, addr + 4);
  }

  override writeU64(addr: number, value: number): void {
    super.writeU64(addr, value);
    this.#dirty(addr, addr + 8);
  }

  override storeU16Release(addr: number, value: number): void {
    super.storeU16Release(addr, value);
    this.#dirty(addr, addr + 2);
  }
}

/**
 * `backend` with reads that report the guest ranges they filled. A view is
 * guest RAM when it lies on the wasm memory's current buffer; its physical
 * address is its offset from the RAM window's start.
 */
export function jitDirtyingBackend(backend: BlockBackend, cpu: V86Cpu, dirty: DirtyRange): BlockBackend {
  const ramOffset = cpu.mem8.byteOffset;
  const report = (view: Uint8Array): void => {
    if (view.buffer !== cpu.wasm_memory.buffer || view.length === 0) return;
    const start = view.byteOffset - ramOffset;
    dirty(start, start + view.length);
  };
  const after = (r: MaybePromise, views: readonly Uint8Array[]): MaybePromise => {
    if (r === undefined) {
      for (const v of views) report(v);
      return undefined;
    }
    return r.then(() => {
      for (const v of views) report(v);
    });
  };
  const wrapped: BlockBackend = {
    get size() {
      return backend.size;
    },
    get readOnly() {
      return backend.readOnly;
    },
    get supportsDiscard() {
      return backend.supportsDiscard;
    },
    get supportsWriteZeroes() {
      return backend.supportsWriteZeroes;
    },
    read: (offset, dst) => after(backend.read(offset, dst), [dst]),
    write: (offset, src) => backend.write(offset, src),
    flush: () => backend.flush(),
    discard: (offset, length) => backend.discard(offset, length),
    writeZeroes: (offset, length, mayUnmap) => backend.writeZeroes(offset, length, mayUnmap),
    close: () => backend.close(),
  };
  if (backend.readv) {
    const readv = backend.readv.bind(backend);
    wrapped.readv = (offset, dsts) => after(readv(offset, dsts), dsts);
  }
  if (backend.writev) wrapped.writev = backend.writev.bind(backend);
  if (backend.resize) wrapped.resize = backend.resize.bind(backend);
  return wrapped;
}
