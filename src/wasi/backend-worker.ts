// The backend worker: opens a disk from its BackendSpec (the same specs the
// device worker takes, open-backend.ts) and serves it on a channel to a
// synchronous client in another worker (sync-server.ts). One message starts
// it; everything after goes through the channel. It may serve several disks,
// one channel each.
//
// Messages (backend-host.ts sends them):
//   in:  { type: 'serve', id, spec, channel, pollMicros }
//   out: { type: 'ready', id, size } | { type: 'failed', id, error }
//        { type: 'stopped', id } when a channel is closed

import { openBackend } from '../host/browser/open-backend.ts';
import { toWireError } from '../host/browser/worker-protocol.ts';
import { serveSyncChannel } from './sync-server.ts';
import type { BackendWorkerReply, BackendWorkerRequest } from './backend-host.ts';

const scope = globalThis as unknown as DedicatedWorkerGlobalScope;

function send(message: BackendWorkerReply): void {
  scope.postMessage(message);
}

scope.onmessage = async (event: MessageEvent<BackendWorkerRequest>) => {
  const { id, spec, channel, pollMicros } = event.data;
  let backend;
  try {
    backend = await openBackend(spec);
  } catch (err) {
    send({ type: 'failed', id, error: toWireError(err) });
    return;
  }
  const serving = serveSyncChannel(channel, backend, { pollMicros });
  send({ type: 'ready', id, size: backend.size });
  try {
    await serving;
  } finally {
    send({ type: 'stopped', id });
  }
};
