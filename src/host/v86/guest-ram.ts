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
//
// The memory grows while the guest runs (v86's JIT allocates inside the wasm
// module), which detaches every view. A synchronous backend is done before
// that can happen; an asynchronous one (IndexedDB, HTTP) holds its views
// across event-loop turns, so a call whose views were detached meanwhile is
// redone on fresh views of the same guest range (jitDirtyingBackend).

import { StorageError, StorageErrorCode, type BlockBackend, type MaybePromise } from '../../backends/backend.ts';
import { GuestMemory } from '../../virtio/memory.ts';
import type { PendingCalls } from './diagnosis.ts';
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

/** Most times one request is redone because guest RAM moved under it. */
const MAX_REDOS = 8;

/**
 * `backend` as the device must use it over v86's RAM:
 * - a read reports the guest ranges it filled once it has completed;
 * - an asynchronous call whose guest views were detached while it ran (v86's
 *   wasm code grew its memory: its JIT allocates) is redone on fresh views
 *   of the same guest range. A detached view has length 0, so the backend
 *   read into, or wrote from, nothing (or threw); the guest's buffer cannot
 *   change while its request is in flight, so redoing either is safe.
 * A view is guest RAM when it lies on the wasm memory's current buffer; its
 * physical address is its offset from the RAM window's start.
 * `calls`, if given, counts every asynchronous call until it settles (for
 * `diagnose`: storage that never answers shows there).
 */
export function jitDirtyingBackend(backend: BlockBackend, cpu: V86Cpu, dirty: DirtyRange, onRedo: () => void = () => {}, calls?: PendingCalls): BlockBackend {
  const ramOffset = cpu.mem8.byteOffset;
  const track = (what: string, offset: number, length: number, result: MaybePromise): MaybePromise =>
    calls ? calls.track(what, offset, length, result) : result;
  const bytes = (views: Uint8Array[]): number => views.reduce((n, v) => n + v.length, 0);
  const run = (views: Uint8Array[], call: (views: Uint8Array[]) => MaybePromise, read: boolean): MaybePromise => {
    const buffer = cpu.wasm_memory.buffer;
    const spans = views.map((v) => ({ at: v.byteOffset, length: v.length, guest: v.buffer === buffer }));
    const report = (): void => {
      if (!read) return;
      for (const s of spans) if (s.guest && s.length > 0) dirty(s.at - ramOffset, s.at - ramOffset + s.length);
    };
    const moved = (vs: Uint8Array[]): boolean => vs.some((v, i) => spans[i]!.guest && v.length !== spans[i]!.length);
    const first = call(views);
    if (first === undefined) {
      report();
      return undefined;
    }
    return (async () => {
      let pending: MaybePromise = first;
      for (let redo = 0; ; redo++) {
        let failure: unknown = null;
        try {
          await pending;
        } catch (err) {
          failure = err;
        }
        if (!moved(views)) {
          if (failure !== null) throw failure;
          report();
          return;
        }
        if (redo === MAX_REDOS) {
          throw new StorageError(StorageErrorCode.Io, 'guest memory kept moving under an asynchronous request', { cause: failure ?? undefined });
        }
        onRedo();
        const now = cpu.wasm_memory.buffer;
        views = views.map((v, i) => (spans[i]!.guest ? new Uint8Array(now, spans[i]!.at, spans[i]!.length) : v));
        pending = call(views);
      }
    })();
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
    read: (offset, dst) => track('read', offset, dst.length, run([dst], (vs) => backend.read(offset, vs[0]!), true)),
    write: (offset, src) => track('write', offset, src.length, run([src], (vs) => backend.write(offset, vs[0]!), false)),
    flush: () => track('flush', 0, -1, backend.flush()),
    discard: (offset, length) => track('discard', offset, length, backend.discard(offset, length)),
    writeZeroes: (offset, length, mayUnmap) => track('write-zeroes', offset, length, backend.writeZeroes(offset, length, mayUnmap)),
    close: () => backend.close(),
  };
  if (backend.readv) {
    const readv = backend.readv.bind(backend);
    wrapped.readv = (offset, dsts) => track('readv', offset, bytes(dsts), run(dsts, (vs) => readv(offset, vs), true));
  }
  if (backend.writev) {
    const writev = backend.writev.bind(backend);
    wrapped.writev = (offset, srcs) => track('writev', offset, bytes(srcs), run(srcs, (vs) => writev(offset, vs), false));
  }
  if (backend.resize) wrapped.resize = backend.resize.bind(backend);
  return wrapped;
}
