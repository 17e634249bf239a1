// The backend side of test/wasi-facade.test.ts: a Node worker thread that
// serves a memory disk on the channel it is given (serveSyncChannel), with
// the faults a test asks for, or (`forge`) a server that breaks the
// protocol on purpose, to show what the client refuses. Node has
// SharedArrayBuffer, Atomics.wait and Atomics.waitAsync, so the facade's two
// halves run here as in Chromium.

import { parentPort, workerData } from 'node:worker_threads';
import { StorageError, StorageErrorCode } from '../../src/backends/backend.ts';
import { MemoryBackend } from '../../src/backends/memory.ts';
import { serveSyncChannel } from '../../src/wasi/sync-server.ts';
import { ChannelSlot, ChannelState, ChannelWord, DiskInfo, STORAGE_ERROR_CODES, channelViews } from '../../src/wasi/sync-protocol.ts';

/** How a forging server answers every request (and what it publishes). */
export interface Forgery {
  /** The disk size it publishes (default: `size`). */
  publishedSize?: number;
  answer?: 'bad-state' | 'long-result' | 'short-result' | 'bad-error-code' | 'long-message' | 'resize-other-size';
}

export interface NodeServerData {
  channel: SharedArrayBuffer;
  size: number;
  /** Initial contents, and whether the disk refuses writes. */
  data?: Uint8Array;
  readOnly?: boolean;
  /** Reads at this offset fail with StorageError 'corrupt'. */
  corruptAt?: number;
  /** Reads at this offset answer after `slowMs`. */
  slowAt?: number;
  slowMs?: number;
  /** Every read answers with a promise (a backend with latency of its own, as IndexedDB). */
  asyncReads?: boolean;
  /** Int32 words: [count, offset of read 1, offset of read 2, ...] of the reads the backend got. */
  readLog?: SharedArrayBuffer;
  forge?: Forgery;
}

const data = workerData as NodeServerData;

function forge(channel: SharedArrayBuffer, f: Forgery): void {
  const { words, slots, data: area } = channelViews(channel);
  slots[ChannelSlot.Size] = f.publishedSize ?? data.size;
  Atomics.store(words, ChannelWord.Info, DiskInfo.Ready | DiskInfo.Resize);
  for (;;) {
    const state = Atomics.load(words, ChannelWord.State);
    if (state === ChannelState.Closed) return;
    if (state !== ChannelState.Request) {
      Atomics.wait(words, ChannelWord.State, state, 1000);
      continue;
    }
    Atomics.store(words, ChannelWord.State, ChannelState.Working);
    const length = slots[ChannelSlot.Length]!;
    let answer: number = ChannelState.Done;
    area.fill(0xee);
    slots[ChannelSlot.Result] = length;
    if (f.answer === 'bad-state') answer = 9;
    if (f.answer === 'long-result') slots[ChannelSlot.Result] = length + 4096;
    if (f.answer === 'short-result') slots[ChannelSlot.Result] = length - 1;
    if (f.answer === 'resize-other-size') slots[ChannelSlot.Size] = length + 512;
    if (f.answer === 'bad-error-code' || f.answer === 'long-message') {
      answer = ChannelState.Failed;
      Atomics.store(words, ChannelWord.ErrorCode, f.answer === 'bad-error-code' ? 99 : STORAGE_ERROR_CODES.indexOf(StorageErrorCode.Corrupt));
      Atomics.store(words, ChannelWord.MessageBytes, f.answer === 'long-message' ? 1 << 30 : 0);
    }
    Atomics.add(words, ChannelWord.Served, 1);
    Atomics.store(words, ChannelWord.State, answer);
    Atomics.notify(words, ChannelWord.State);
  }
}

if (data.forge) {
  forge(data.channel, data.forge);
} else {
  const disk = new MemoryBackend(data.size, { data: data.data, readOnly: data.readOnly });
  const read = disk.read.bind(disk);
  const log = data.readLog ? new Int32Array(data.readLog) : null;
  disk.read = (offset: number, dst: Uint8Array): void | Promise<void> => {
    if (log) log[1 + Atomics.add(log, 0, 1)] = offset;
    if (offset === data.corruptAt) {
      const error = new StorageError(StorageErrorCode.Corrupt, `checksum mismatch at ${offset}`);
      if (data.asyncReads) return Promise.reject(error);
      throw error;
    }
    if (offset === data.slowAt) return new Promise((resolve) => setTimeout(() => resolve(read(offset, dst)), data.slowMs));
    if (data.asyncReads) return new Promise((resolve) => setTimeout(() => resolve(read(offset, dst)), 1));
    return read(offset, dst);
  };
  // Node ends a thread whose only pending work is an Atomics.waitAsync (a
  // browser worker lives on): keep this one alive while it serves.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  await serveSyncChannel(data.channel, disk);
  clearInterval(keepAlive);
  parentPort?.postMessage('stopped');
}
