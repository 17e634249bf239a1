// The server half of the synchronous facade: runs in the backend's worker,
// takes one request at a time from the channel (sync-protocol.ts) and
// awaits the backend, so IndexedDB transactions, fetches and timers keep
// running on this worker's event loop between and during requests.
//
// Waiting for the next request: a short poll of the State word first (a
// program doing back-to-back I/O posts its next request within a few µs, and
// a wake-up through waitAsync costs an event-loop hop, DESIGN.md: 20-60 µs),
// then Atomics.waitAsync, which leaves the event loop free.
//
// Reads go straight into the transfer area and writes come straight from it:
// the backend sees a view on the shared buffer (every backend accepts one;
// IndexedDB copies into its own chunks because a SharedArrayBuffer cannot be
// stored), so the server adds no copy of its own, except after a readahead.
//
// Readahead: when a read starts where the previous one ended and the backend
// answered it asynchronously (IndexedDB, HTTP: its own latency), the server
// starts reading the next range of the same length into a buffer of its own
// as soon as it has answered, so the backend works while the answer crosses
// to the program and the next request crosses back. A request for exactly
// that range is answered from it (one copy into the area); any other
// request first waits for the readahead to settle and drops it, so the
// backend still sees one call at a time and a write is never followed by
// data read before it. At most one readahead, at most the area's size; a
// failed one is dropped and the read it stood for is made again, so its
// error, if any, is the program's. Synchronous backends (OPFS, memory) get
// none: their read is already a copy.

import { StorageError, StorageErrorCode, toStorageError, type BlockBackend } from '../backends/backend.ts';
import { waitAsync } from '../host/browser/wait-async.ts';
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

export interface ServeOptions {
  /** Microseconds to poll for the next request before sleeping in waitAsync (default 50; 0: never). */
  pollMicros?: number;
}

const encoder = new TextEncoder();

/**
 * Serve `backend` on `channel` until the client sends Close (the backend is
 * closed then) or the state turns Closed. Publishes the disk's properties
 * first; the promise settles when serving ends.
 */
export async function serveSyncChannel(channel: SharedArrayBuffer, backend: BlockBackend, options: ServeOptions = {}): Promise<void> {
  const views = channelViews(channel);
  const { words, slots, data } = views;
  const pollMs = Math.max(0, options.pollMicros ?? 50) / 1000;
  slots[ChannelSlot.Size] = backend.size;
  const info =
    DiskInfo.Ready |
    (backend.readOnly ? DiskInfo.ReadOnly : 0) |
    (backend.supportsDiscard ? DiskInfo.Discard : 0) |
    (backend.supportsWriteZeroes ? DiskInfo.WriteZeroes : 0) |
    (backend.resize ? DiskInfo.Resize : 0);
  // Orders Size before Info: a client that sees Ready sees the size.
  Atomics.store(words, ChannelWord.Info, info);
  let readahead: Readahead | null = null;
  let aheadBuffer: Uint8Array | null = null;
  /** Where the last successful read ended (-1 after anything else): the next read starting there is sequential. */
  let lastReadEnd = -1;
  for (;;) {
    const state = Atomics.load(words, ChannelWord.State);
    if (state === ChannelState.Closed) return;
    if (state !== ChannelState.Request) {
      if (!poll(words, state, pollMs)) await waitAsync(words, ChannelWord.State, state);
      continue;
    }
    // Take the request; only the client posts, so this fails only when the
    // host closed the channel meanwhile.
    if (Atomics.compareExchange(words, ChannelWord.State, ChannelState.Request, ChannelState.Working) !== ChannelState.Request) continue;
    const op = Atomics.load(words, ChannelWord.Op);
    const offset = slots[ChannelSlot.Offset]!;
    const length = slots[ChannelSlot.Length]!;
    let outcome: ChannelState = ChannelState.Done;
    let asynchronous = false;
    try {
      const ahead = readahead;
      readahead = null;
      if (op === ChannelOp.Read && ahead && ahead.offset === offset && ahead.length === length && (await ahead.done)) {
        area(data, length).set(ahead.buffer.subarray(0, length));
        asynchronous = true;
      } else {
        if (ahead) await ahead.done;
        asynchronous = await execute(backend, views, op);
      }
      slots[ChannelSlot.Result] = op === ChannelOp.Read || op === ChannelOp.Write ? length : 0;
    } catch (err) {
      failWith(views, err);
      outcome = ChannelState.Failed;
    }
    const sequential = op === ChannelOp.Read && offset === lastReadEnd;
    lastReadEnd = op === ChannelOp.Read && outcome === ChannelState.Done ? offset + length : -1;
    Atomics.add(words, ChannelWord.Served, 1);
    // A closed backend answers Closed: this worker serves the channel no more.
    const closing = op === ChannelOp.Close && outcome === ChannelState.Done;
    // Publishes the result (data, Size, error) written above; only the
    // Working state is ours to replace, so a host's Closed stays.
    Atomics.compareExchange(words, ChannelWord.State, ChannelState.Working, closing ? ChannelState.Closed : outcome);
    Atomics.notify(words, ChannelWord.State);
    if (closing) return;
    if (sequential && asynchronous && lastReadEnd >= 0 && lastReadEnd + length <= backend.size && length > 0) {
      aheadBuffer ??= new Uint8Array(data.length);
      readahead = readAhead(backend, lastReadEnd, aheadBuffer.subarray(0, length));
    }
  }
}

/** A read the server started before it was asked (see the header). */
interface Readahead {
  readonly offset: number;
  readonly length: number;
  readonly buffer: Uint8Array;
  /** True when the bytes are in `buffer`; false when the read failed (then it is made again when asked). */
  readonly done: Promise<boolean>;
}

function readAhead(backend: BlockBackend, offset: number, buffer: Uint8Array): Readahead {
  let done: Promise<boolean>;
  try {
    done = Promise.resolve(backend.read(offset, buffer)).then(
      () => true,
      () => false,
    );
  } catch {
    done = Promise.resolve(false);
  }
  return { offset, length: buffer.length, buffer, done };
}

/** Poll the State word for up to `ms`; true when it changed. */
function poll(words: Int32Array, state: number, ms: number): boolean {
  if (ms === 0) return false;
  const until = performance.now() + ms;
  do {
    for (let i = 0; i < 32; i++) if (Atomics.load(words, ChannelWord.State) !== state) return true;
  } while (performance.now() < until);
  return false;
}

/** Run one request; true when the backend answered a read with a promise (it has latency of its own). */
async function execute(backend: BlockBackend, { words, slots, data }: ChannelViews, op: number): Promise<boolean> {
  const offset = slots[ChannelSlot.Offset]!;
  const length = slots[ChannelSlot.Length]!;
  switch (op) {
    case ChannelOp.Read: {
      const pending = backend.read(offset, area(data, length));
      if (!pending) return false;
      await pending;
      return true;
    }
    case ChannelOp.Write:
      await backend.write(offset, area(data, length));
      return false;
    case ChannelOp.Flush:
      await backend.flush();
      return false;
    case ChannelOp.Discard:
      await backend.discard(offset, length);
      return false;
    case ChannelOp.WriteZeroes:
      await backend.writeZeroes(offset, length, Atomics.load(words, ChannelWord.Flags) === 1);
      return false;
    case ChannelOp.Resize:
      if (!backend.resize) throw new StorageError(StorageErrorCode.Unsupported, 'this backend cannot resize');
      await backend.resize(length);
      slots[ChannelSlot.Size] = backend.size;
      return false;
    case ChannelOp.Close:
      await backend.close();
      return false;
    default:
      throw new RangeError(`unknown channel operation ${op}`);
  }
}

/** The first `length` bytes of the transfer area; a client bug cannot reach past it. */
function area(data: Uint8Array, length: number): Uint8Array {
  if (!(Number.isSafeInteger(length) && length >= 0 && length <= data.length)) {
    throw new RangeError(`request of ${length} bytes exceeds the ${data.length}-byte transfer area`);
  }
  return length === data.length ? data : data.subarray(0, length);
}

function failWith({ words, data }: ChannelViews, err: unknown): void {
  const error = toStorageError(err, 'backend worker');
  // A bug's RangeError is an I/O error to the program, with its message kept.
  const code = STORAGE_ERROR_CODES.indexOf(error.code);
  Atomics.store(words, ChannelWord.ErrorCode, code < 0 ? STORAGE_ERROR_CODES.indexOf(StorageErrorCode.Io) : code);
  const { written } = encoder.encodeInto(error.message.slice(0, 1024), data.subarray(0, Math.min(MAX_MESSAGE_BYTES, data.length)));
  Atomics.store(words, ChannelWord.MessageBytes, written);
}
