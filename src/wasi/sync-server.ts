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
// stored), so the server adds no copy of its own.

import { StorageError, StorageErrorCode, toStorageError, type BlockBackend } from '../backends/backend.ts';
import { waitAsync } from '../host/browser/wait-async.ts';
import {
  ChannelOp,
  ChannelSlot,
  ChannelState,
  ChannelWord,
  DiskInfo,
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
  const { words, slots } = views;
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
    let outcome: ChannelState = ChannelState.Done;
    try {
      await execute(backend, views, op);
    } catch (err) {
      failWith(views, err);
      outcome = ChannelState.Failed;
    }
    Atomics.add(words, ChannelWord.Served, 1);
    // A closed backend answers Closed: this worker serves the channel no more.
    const closing = op === ChannelOp.Close && outcome === ChannelState.Done;
    // Publishes the result (data, Size, error) written above; only the
    // Working state is ours to replace, so a host's Closed stays.
    Atomics.compareExchange(words, ChannelWord.State, ChannelState.Working, closing ? ChannelState.Closed : outcome);
    Atomics.notify(words, ChannelWord.State);
    if (closing) return;
  }
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

async function execute(backend: BlockBackend, { words, slots, data }: ChannelViews, op: number): Promise<void> {
  const offset = slots[ChannelSlot.Offset]!;
  const length = slots[ChannelSlot.Length]!;
  switch (op) {
    case ChannelOp.Read:
      await backend.read(offset, area(data, length));
      return;
    case ChannelOp.Write:
      await backend.write(offset, area(data, length));
      return;
    case ChannelOp.Flush:
      await backend.flush();
      return;
    case ChannelOp.Discard:
      await backend.discard(offset, length);
      return;
    case ChannelOp.WriteZeroes:
      await backend.writeZeroes(offset, length, Atomics.load(words, ChannelWord.Flags) === 1);
      return;
    case ChannelOp.Resize:
      if (!backend.resize) throw new StorageError(StorageErrorCode.Unsupported, 'this backend cannot resize');
      await backend.resize(length);
      slots[ChannelSlot.Size] = backend.size;
      return;
    case ChannelOp.Close:
      await backend.close();
      return;
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
  const { written } = encoder.encodeInto(error.message.slice(0, 1024), data.subarray(0, Math.min(4096, data.length)));
  Atomics.store(words, ChannelWord.MessageBytes, written);
}
