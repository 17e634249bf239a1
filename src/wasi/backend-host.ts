// Start a backend worker and hand back the channel a synchronous client
// needs (sync-client.ts). Runs on the page or in any worker (the program's
// own worker may start it: dedicated workers can start workers).
//
// The host is also where a dead backend becomes visible at once: `terminate`
// ends the worker and marks the channel Closed, so a client blocked on it
// wakes now with 'closed' instead of at its timeout. A worker that dies on its
// own (crash, killed by the browser) tells no one; the client's timeout
// covers that case.

import { StorageError, StorageErrorCode } from '../backends/backend.ts';
import { fromWireError, type BackendSpec, type WireError } from '../host/browser/worker-protocol.ts';
import { ChannelState, ChannelWord, createChannel, DEFAULT_TRANSFER_BYTES } from './sync-protocol.ts';
import { SyncBackendClient, type SyncClientOptions } from './sync-client.ts';

/** Host -> backend worker. */
export interface BackendWorkerRequest {
  type: 'serve';
  id: number;
  spec: BackendSpec;
  channel: SharedArrayBuffer;
  pollMicros?: number;
}

/** Backend worker -> host. */
export type BackendWorkerReply =
  | { type: 'ready'; id: number; size: number }
  | { type: 'failed'; id: number; error: WireError }
  | { type: 'stopped'; id: number };

export interface BackendWorkerOptions {
  /** Bytes of the shared transfer area (default 1 MiB): the largest piece one round trip carries. */
  transferBytes?: number;
  /** Microseconds the server polls for the next request before sleeping (default 50). */
  pollMicros?: number;
  /** A worker to reuse (one started by an earlier call); default: a new one. */
  worker?: Worker;
}

export interface BackendWorkerDisk {
  /** The channel: post it to the program's worker and build a SyncBackendClient there (or call `client`). */
  readonly channel: SharedArrayBuffer;
  /** The worker serving the disk. */
  readonly worker: Worker;
  /** The disk's size when it was opened. */
  readonly size: number;
  /** A synchronous client on this thread (only where Atomics.wait is allowed: a worker). */
  client(options?: SyncClientOptions): SyncBackendClient;
  /** Settles when the worker stopped serving the channel (the client closed it). */
  readonly stopped: Promise<void>;
  /** End the worker now and wake a blocked client with 'closed'. Unflushed writes are lost. */
  terminate(): void;
}

let nextId = 1;

/** Open `spec` in a backend worker and serve it on a new channel. */
export async function startBackendWorker(spec: BackendSpec, options: BackendWorkerOptions = {}): Promise<BackendWorkerDisk> {
  if (typeof SharedArrayBuffer !== 'function') {
    throw new StorageError(StorageErrorCode.Unsupported, 'the synchronous facade needs SharedArrayBuffer: serve the page cross-origin isolated (COOP same-origin, COEP require-corp)');
  }
  const worker = options.worker ?? new Worker(new URL('./backend-worker.ts', import.meta.url), { type: 'module', name: 'virtio-blk-web backend' });
  const channel = createChannel(options.transferBytes ?? DEFAULT_TRANSFER_BYTES);
  const id = nextId++;
  let stop: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const size = await new Promise<number>((resolve, reject) => {
    const onMessage = (event: MessageEvent<BackendWorkerReply>): void => {
      const reply = event.data;
      if (reply.id !== id) return;
      if (reply.type === 'ready') resolve(reply.size);
      else if (reply.type === 'failed') reject(fromWireError(reply.error));
      else {
        worker.removeEventListener('message', onMessage);
        stop();
      }
    };
    worker.addEventListener('message', onMessage);
    worker.addEventListener('error', (event) => reject(new StorageError(StorageErrorCode.Io, `backend worker failed to start: ${event.message}`)), { once: true });
    const request: BackendWorkerRequest = { type: 'serve', id, spec, channel, pollMicros: options.pollMicros };
    worker.postMessage(request);
  });
  const words = new Int32Array(channel, 0, 8);
  return {
    channel,
    worker,
    size,
    stopped,
    client: (clientOptions) => new SyncBackendClient(channel, clientOptions),
    terminate() {
      worker.terminate();
      Atomics.store(words, ChannelWord.State, ChannelState.Closed);
      Atomics.notify(words, ChannelWord.State);
      stop();
    },
  };
}
