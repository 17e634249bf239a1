// The synchronous facade over any backend, free of WASI: a thread that must
// not await (an emulator's CPU loop, a WASI program) reads and writes a disk
// that lives in another worker. Exported from both 'virtio-blk-web' and
// 'virtio-blk-web/wasi'.

export { SyncBackendClient, DEFAULT_SYNC_TIMEOUT_MS, type SyncClientOptions } from './sync-client.ts';
export { serveSyncChannel, type ServeOptions } from './sync-server.ts';
export {
  startBackendWorker,
  type BackendWorkerDisk,
  type BackendWorkerOptions,
  type BackendWorkerReply,
  type BackendWorkerRequest,
} from './backend-host.ts';
export { CHANNEL_HEADER_BYTES, DEFAULT_TRANSFER_BYTES, createChannel } from './sync-protocol.ts';
