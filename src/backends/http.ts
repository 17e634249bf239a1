// The HTTP read-only image backends, in one import: a Range image served by
// any HTTP server (http-range.ts) and a chunked image packed by
// `virtio-blk-web pack` for static hosts and CDNs (http-chunked.ts). Both read
// through the same block cache (http-blocks.ts) and retry policy
// (http-fetch.ts). docs/http.md says which hosts suit which form.

export { HttpRangeBackend, type HttpRangeOptions, type ImageIdentity } from './http-range.ts';
export { HttpChunkedBackend, type HttpChunkedOptions } from './http-chunked.ts';
export { HttpImageBackend } from './http-image.ts';
export { type BlockCacheOptions, type HttpStats } from './http-blocks.ts';
export { HttpError, HttpErrorReason, type RetryOptions } from './http-fetch.ts';
export { ChunkCache, chunkCacheAvailable, type ChunkCacheOptions, type ChunkCacheStats } from './http-chunk-cache.ts';
