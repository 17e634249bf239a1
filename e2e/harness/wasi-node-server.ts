// The backend side of test/wasi-facade.test.ts: a Node worker thread that
// serves a memory disk on the channel it is given (serveSyncChannel), with
// the faults a test asks for. Node has SharedArrayBuffer, Atomics.wait and
// Atomics.waitAsync, so the facade's two halves run here as in Chromium.

import { parentPort, workerData } from 'node:worker_threads';
import { StorageError, StorageErrorCode } from '../../src/backends/backend.ts';
import { MemoryBackend } from '../../src/backends/memory.ts';
import { serveSyncChannel } from '../../src/wasi/sync-server.ts';

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
}

const data = workerData as NodeServerData;
const disk = new MemoryBackend(data.size, { data: data.data, readOnly: data.readOnly });
const read = disk.read.bind(disk);
disk.read = (offset: number, dst: Uint8Array): void | Promise<void> => {
  if (offset === data.corruptAt) throw new StorageError(StorageErrorCode.Corrupt, `checksum mismatch at ${offset}`);
  if (offset === data.slowAt) return new Promise((resolve) => setTimeout(() => resolve(read(offset, dst)), data.slowMs));
  return read(offset, dst);
};
// Node ends a thread whose only pending work is an Atomics.waitAsync (a
// browser worker lives on): keep this one alive while it serves.
const keepAlive = setInterval(() => undefined, 1 << 30);
await serveSyncChannel(data.channel, disk);
clearInterval(keepAlive);
parentPort?.postMessage('stopped');
