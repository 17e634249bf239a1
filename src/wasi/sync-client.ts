// The client half of the synchronous facade: a BlockBackend whose every call
// completes before it returns, for a thread that must not await (a WASI
// program's worker: the shim's calls are synchronous). It posts each request
// on the channel (sync-protocol.ts) and blocks in Atomics.wait while the
// backend's worker does the I/O.
//
// Bounded in space and in time:
// - a read or write larger than the transfer area goes as area-sized pieces,
//   one after another (a request the program made is still all-or-error:
//   a failed piece fails the call);
// - a request that gets no answer within `timeoutMs` fails with StorageError
//   'io', never a hung program. The request may still be running over there,
//   so the transfer area is not reused until the server has finished it: the
//   next call finds the answer and carries on, or, when the server is still
//   silent (a dead worker), fails at once instead of waiting out another
//   timeout.
//
// Copies: a read arrives in the shared transfer area and is copied to the
// caller's buffer, a write is copied into the area. That copy is the one the
// platform forces: the program's memory (a non-shared WebAssembly.Memory) is
// not visible to another worker. Nothing else is copied here.
//
// The client polls the State word for a few µs before it sleeps: a backend
// answering from its cache (IndexedDB's chunk cache) replies in about that
// time, and waking from Atomics.wait costs more (DESIGN.md: 8-20 µs).
//
// Nothing that comes back across the channel is trusted: the backend worker
// runs other code (a module backend is anyone's), and what it writes in the
// shared header decides how far this side reads and checks ranges. The
// disk's size must be a whole number of 512-byte sectors that a double holds
// exactly, a resize must leave the size that was asked, a Read or Write must
// report having moved exactly the bytes asked, the answer's state must be
// one the protocol has, and an error's code and message length must be in
// range. A violation is a StorageError 'io' (EIO to a WASI program) that
// says what came back; nothing of it reaches the caller's buffer.

import { StorageError, StorageErrorCode, type BlockBackend, type StorageErrorCode as Code } from '../backends/backend.ts';
import {
  ChannelOp,
  ChannelSlot,
  ChannelState,
  ChannelWord,
  DiskInfo,
  MAX_MESSAGE_BYTES,
  STORAGE_ERROR_CODES,
  channelViews,
  type ChannelViews,
} from './sync-protocol.ts';

export interface SyncClientOptions {
  /** Longest wait for one piece of a request, in ms (default 15,000). Then the call fails with 'io'. */
  timeoutMs?: number;
  /** Microseconds to poll for the answer before sleeping (default 20; 0: never). */
  pollMicros?: number;
  /** For messages (default 'disk'). */
  name?: string;
}

export const DEFAULT_SYNC_TIMEOUT_MS = 15_000;

const decoder = new TextDecoder();

/**
 * A synchronous BlockBackend over a channel served by `serveSyncChannel` in
 * another worker. Construct it after the server published the disk (the
 * host's `startBackendWorker` resolves then).
 */
export class SyncBackendClient implements BlockBackend {
  readonly readOnly: boolean;
  readonly supportsDiscard: boolean;
  readonly supportsWriteZeroes: boolean;
  readonly name: string;
  readonly #views: ChannelViews;
  readonly #timeoutMs: number;
  readonly #pollMs: number;
  #size: number;
  /** Requests posted; with the server's Served count it tells a dead server from a slow one. */
  #posted = 0;
  /** Whether the last request timed out and its answer has not been seen yet. */
  #abandoned = false;

  constructor(channel: SharedArrayBuffer, options: SyncClientOptions = {}) {
    this.#views = channelViews(channel);
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS;
    this.#pollMs = Math.max(0, options.pollMicros ?? 20) / 1000;
    this.name = options.name ?? 'disk';
    const info = Atomics.load(this.#views.words, ChannelWord.Info);
    if (!(info & DiskInfo.Ready)) throw new StorageError(StorageErrorCode.Closed, `${this.name}: the backend worker has not published the disk yet`);
    this.readOnly = (info & DiskInfo.ReadOnly) !== 0;
    this.supportsDiscard = (info & DiskInfo.Discard) !== 0;
    this.supportsWriteZeroes = (info & DiskInfo.WriteZeroes) !== 0;
    this.#size = this.#checkedSize(this.#views.slots[ChannelSlot.Size]!, 'published');
    this.#posted = Atomics.load(this.#views.words, ChannelWord.Served);
    if (info & DiskInfo.Resize) {
      this.resize = (newSize: number): void => {
        if (!(Number.isSafeInteger(newSize) && newSize >= 0)) {
          throw new StorageError(StorageErrorCode.OutOfRange, `disk size ${newSize} is not a whole number of bytes`);
        }
        this.#call(ChannelOp.Resize, 0, newSize, 0);
        const reported = this.#views.slots[ChannelSlot.Size]!;
        if (reported !== newSize) throw this.#violation(`reported a size of ${reported} bytes after a resize to ${newSize}`);
        this.#size = reported;
      };
    }
  }

  get size(): number {
    return this.#size;
  }

  /** Bytes one round trip carries; larger requests are split. */
  get transferBytes(): number {
    return this.#views.data.length;
  }

  read(offset: number, dst: Uint8Array): void {
    this.#check(offset, dst.length);
    const area = this.#views.data;
    for (let done = 0; done < dst.length; ) {
      const n = Math.min(area.length, dst.length - done);
      this.#call(ChannelOp.Read, offset + done, n, 0);
      dst.set(n === area.length ? area : area.subarray(0, n), done);
      done += n;
    }
  }

  write(offset: number, src: Uint8Array): void {
    this.#check(offset, src.length);
    if (this.readOnly) throw new StorageError(StorageErrorCode.ReadOnly, `${this.name} is read-only`);
    const area = this.#views.data;
    for (let done = 0; done < src.length; ) {
      const n = Math.min(area.length, src.length - done);
      area.set(done === 0 && n === src.length ? src : src.subarray(done, done + n));
      this.#call(ChannelOp.Write, offset + done, n, 0);
      done += n;
    }
  }

  flush(): void {
    this.#call(ChannelOp.Flush, 0, 0, 0);
  }

  discard(offset: number, length: number): void {
    this.#call(ChannelOp.Discard, offset, length, 0);
  }

  writeZeroes(offset: number, length: number, mayUnmap: boolean): void {
    this.#call(ChannelOp.WriteZeroes, offset, length, mayUnmap ? 1 : 0);
  }

  /** Present only when the backend can resize (BlockBackend's optional method). */
  readonly resize?: (newSize: number) => void;

  /** Close the backend in its worker (which then stops serving this channel). */
  close(): void {
    const state = Atomics.load(this.#views.words, ChannelWord.State);
    if (state === ChannelState.Closed) return;
    this.#call(ChannelOp.Close, 0, 0, 0);
  }

  /** Post one request and block until its answer; throws the server's StorageError, or 'io' on timeout. */
  #call(op: ChannelOp, offset: number, length: number, flags: number): void {
    const { words, slots } = this.#views;
    this.#settleAbandoned();
    slots[ChannelSlot.Offset] = offset;
    slots[ChannelSlot.Length] = length;
    Atomics.store(words, ChannelWord.Op, op);
    Atomics.store(words, ChannelWord.Flags, flags);
    // Publishes the fields and any data written above (seq-cst store).
    Atomics.store(words, ChannelWord.State, ChannelState.Request);
    Atomics.notify(words, ChannelWord.State);
    this.#posted++;
    const state = this.#await(op);
    // Closed is the server's answer to Close, and anyone else's end of the channel.
    if (state === ChannelState.Closed) {
      if (op === ChannelOp.Close) return;
      throw this.#closed();
    }
    // Read the result before handing the area back (unless the host closed it meanwhile).
    const error = state === ChannelState.Failed ? this.#error() : this.#checkDone(state, op, length);
    Atomics.compareExchange(words, ChannelWord.State, state, ChannelState.Idle);
    if (error) throw error;
  }

  /** Null when `state` is a well-formed Done for `op`; otherwise the violation. */
  #checkDone(state: number, op: ChannelOp, length: number): StorageError | null {
    if (state !== ChannelState.Done) return this.#violation(`answered ${opName(op)} with state ${state}, which the protocol does not have`);
    if (op !== ChannelOp.Read && op !== ChannelOp.Write) return null;
    const moved = this.#views.slots[ChannelSlot.Result]!;
    return moved === length ? null : this.#violation(`reported ${moved} bytes moved for a ${opName(op)} of ${length}`);
  }

  /** The disk size the server reported, if it is one a disk can have. */
  #checkedSize(size: number, when: string): number {
    if (Number.isSafeInteger(size) && size >= 0 && size % 512 === 0) return size;
    throw this.#violation(`${when} a disk size of ${size} bytes (not a whole number of 512-byte sectors)`);
  }

  #violation(what: string): StorageError {
    return new StorageError(StorageErrorCode.Io, `${this.name}: the backend worker ${what}; the answer is refused`);
  }

  /** Block until the state leaves Request/Working; on timeout throw 'io' and remember the request. */
  #await(op: ChannelOp): number {
    const words = this.#views.words;
    const deadline = performance.now() + this.#timeoutMs;
    let state = Atomics.load(words, ChannelWord.State);
    if (this.#pollMs > 0 && (state === ChannelState.Request || state === ChannelState.Working)) {
      const until = performance.now() + this.#pollMs;
      do {
        for (let i = 0; i < 32 && (state === ChannelState.Request || state === ChannelState.Working); i++) state = Atomics.load(words, ChannelWord.State);
      } while ((state === ChannelState.Request || state === ChannelState.Working) && performance.now() < until);
    }
    while (state === ChannelState.Request || state === ChannelState.Working) {
      const left = deadline - performance.now();
      if (left <= 0) {
        this.#abandoned = true;
        const taken = state === ChannelState.Working ? 'took the request and did not answer' : 'did not take the request';
        throw new StorageError(StorageErrorCode.Io, `${this.name}: the backend worker ${taken} within ${this.#timeoutMs} ms (${opName(op)})`);
      }
      Atomics.wait(words, ChannelWord.State, state, left);
      state = Atomics.load(words, ChannelWord.State);
    }
    return state;
  }

  /**
   * After a timeout: when the server has since answered, drop that answer and
   * go on; when it still has not, fail at once (a dead worker would otherwise
   * cost every later call a full timeout).
   */
  #settleAbandoned(): void {
    const words = this.#views.words;
    const state = Atomics.load(words, ChannelWord.State);
    if (state === ChannelState.Closed) throw this.#closed();
    if (!this.#abandoned) return;
    if (state === ChannelState.Request || state === ChannelState.Working) {
      const served = Atomics.load(words, ChannelWord.Served);
      throw new StorageError(
        StorageErrorCode.Io,
        `${this.name}: the backend worker is still silent about an earlier request (${served} of ${this.#posted} answered)`,
      );
    }
    this.#abandoned = false;
    Atomics.compareExchange(words, ChannelWord.State, state, ChannelState.Idle);
  }

  #error(): StorageError {
    const { words, data } = this.#views;
    const index = Atomics.load(words, ChannelWord.ErrorCode);
    const code: Code | undefined = STORAGE_ERROR_CODES[index];
    if (code === undefined) return this.#violation(`failed a request with error code ${index}, which is no StorageError code`);
    const bytes = Atomics.load(words, ChannelWord.MessageBytes);
    if (!(bytes >= 0 && bytes <= Math.min(MAX_MESSAGE_BYTES, data.length))) {
      return this.#violation(`failed a request ('${code}') with a message of ${bytes} bytes (at most ${MAX_MESSAGE_BYTES})`);
    }
    // TextDecoder refuses views on shared memory: copy the few message bytes.
    return new StorageError(code, decoder.decode(data.slice(0, bytes)));
  }

  #closed(): StorageError {
    return new StorageError(StorageErrorCode.Closed, `${this.name}: the backend worker has closed the disk`);
  }

  #check(offset: number, length: number): void {
    if (!(offset >= 0 && length >= 0 && Number.isSafeInteger(offset + length) && offset + length <= this.#size)) {
      throw new StorageError(StorageErrorCode.OutOfRange, `range ${offset}+${length} outside disk of ${this.#size} bytes`);
    }
  }
}

function opName(op: ChannelOp): string {
  return Object.entries(ChannelOp).find(([, v]) => v === op)?.[0].toLowerCase() ?? String(op);
}
