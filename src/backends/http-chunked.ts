// A read-only disk image packed by `virtio-blk-web pack` (src/pack/): a
// manifest and one file per chunk, named by its SHA-256. Works from any static
// host or CDN — no Range support needed, and a Content-Encoding the host adds
// is undone by fetch and then checked like any other byte.
//
// Each chunk is fetched whole, decompressed (DecompressionStream, bounded to
// the chunk's length) when the manifest says gzip, and hashed with WebCrypto;
// only a chunk whose SHA-256 matches its manifest entry reaches the block
// cache, so no unverified byte reaches the guest. A mismatch is IOERR with a
// 'corrupt' HttpError (reason 'integrity') naming the chunk; it is not
// retried, because a cache or CDN in between would answer the same. A chunk
// the manifest lists as null (all zeroes) reads as zeroes without a request;
// a chunk it lists whose file is missing (404) is a 'not-found' error naming
// the chunk, never zeroes.
//
// With `chunkCache` (http-chunk-cache.ts), verified chunks are also kept in
// OPFS by their hash and read from there — checked again — before asking
// the network; where OPFS sync access handles do not exist the option does
// nothing (`chunkCache` on the backend is then null).

import { StorageErrorCode } from './backend.ts';
import { BlockReader, type BlockCacheOptions, type BlockSource } from './http-blocks.ts';
import {
  HttpError,
  HttpErrorReason,
  discardBody,
  readBody,
  retryPolicy,
  statusError,
  withRetries,
  type RetryOptions,
  type RetryPolicy,
} from './http-fetch.ts';
import { HttpImageBackend } from './http-image.ts';
import { openChunkCache, type ChunkCache, type ChunkCacheOptions } from './http-chunk-cache.ts';
import {
  Compression,
  ManifestError,
  chunkPath,
  parseManifest,
  sha256Hex,
  type ChunkedManifest,
} from '../pack/manifest.ts';

export interface HttpChunkedOptions extends RetryOptions, BlockCacheOptions {
  /** Extra request headers (Authorization, say). */
  headers?: Record<string, string>;
  /** fetch's credentials mode. Default 'same-origin'. */
  credentials?: RequestCredentials;
  /** Keep verified chunks in OPFS, bounded, keyed by hash (dedicated workers only; elsewhere ignored). */
  chunkCache?: ChunkCacheOptions;
}

/** Largest manifest accepted: 64 bytes and a bit per chunk, for 2^20 chunks. */
const MAX_MANIFEST_BYTES = 80 * 1024 * 1024;
/** gzip of incompressible data is a little larger than the data (RFC 1952 framing). */
const GZIP_SLACK_BYTES = 64 * 1024;

export class HttpChunkedBackend extends HttpImageBackend {
  /** The manifest's URL. */
  readonly url: string;
  readonly manifest: ChunkedManifest;
  /** SHA-256 of the manifest's bytes: the image's identity. */
  readonly identity: string;
  /** The OPFS chunk cache in use (its `stats` count hits and stores), or null. */
  readonly chunkCache: ChunkCache | null;

  private constructor(url: string, manifest: ChunkedManifest, identity: string, reader: BlockReader, cache: ChunkCache | null) {
    super(manifest.size, reader);
    this.url = url;
    this.manifest = manifest;
    this.identity = identity;
    this.chunkCache = cache;
  }

  /** Fetch and check the manifest at `url` (e.g. https://host/image/manifest.json). */
  static async open(url: string, options: HttpChunkedOptions = {}): Promise<HttpChunkedBackend> {
    const href = new URL(url, globalThis.location?.href).href;
    const policy = retryPolicy(options);
    const opening = new AbortController();
    const bytes = await withRetries(href, policy, opening.signal, async (signal) => {
      const response = await fetch(href, init(options, signal));
      if (response.status !== 200) {
        discardBody(response);
        throw statusError(response, href);
      }
      return readBody(response, MAX_MANIFEST_BYTES, href, { atMost: true });
    });
    let manifest: ChunkedManifest;
    try {
      manifest = parseManifest(JSON.parse(new TextDecoder().decode(bytes)));
    } catch (err) {
      const why = err instanceof ManifestError || err instanceof SyntaxError ? err.message : String(err);
      throw new HttpError(StorageErrorCode.Corrupt, HttpErrorReason.BadManifest, `bad manifest at ${href}: ${why}`, {
        url: href,
        cause: err,
      });
    }
    const identity = await sha256Hex(bytes.slice());
    const cache = options.chunkCache ? await openChunkCache(options.chunkCache) : null;
    const reader = new BlockReader(new ChunkSource(href, manifest, options, policy, cache), options);
    return new HttpChunkedBackend(href, manifest, identity, reader, cache);
  }
}

function init(options: HttpChunkedOptions, signal: AbortSignal): RequestInit {
  return { headers: options.headers, signal, credentials: options.credentials ?? 'same-origin' };
}

class ChunkSource implements BlockSource {
  readonly blockSize: number;
  readonly size: number;
  /** One file per chunk: nothing to merge. */
  readonly maxRunBlocks = 1;
  readonly #base: string;
  readonly #manifest: ChunkedManifest;
  readonly #options: HttpChunkedOptions;
  readonly #policy: RetryPolicy;
  readonly #cache: ChunkCache | null;

  constructor(base: string, manifest: ChunkedManifest, options: HttpChunkedOptions, policy: RetryPolicy, cache: ChunkCache | null) {
    this.#cache = cache;
    this.#base = base;
    this.#manifest = manifest;
    this.blockSize = manifest.chunkSize;
    this.size = manifest.size;
    this.#options = options;
    this.#policy = policy;
  }

  isHole(index: number): boolean {
    return this.#manifest.chunks[index] === null;
  }

  async fetchRun(first: number, _count: number, closed: AbortSignal): Promise<Uint8Array[]> {
    const hash = this.#manifest.chunks[first]!;
    const compression = this.#manifest.compression;
    const url = new URL(chunkPath(hash, compression), this.#base).href;
    const length = Math.min(this.blockSize, this.size - first * this.blockSize);
    const cached = await this.#cache?.get(hash, length);
    if (cached) return [cached];
    const stored = await withRetries(url, this.#policy, closed, async (signal) => {
      const response = await fetch(url, init(this.#options, signal));
      if (response.status !== 200) {
        discardBody(response);
        throw statusError(response, url, first);
      }
      return compression === Compression.Gzip
        ? readBody(response, length + GZIP_SLACK_BYTES, url, { atMost: true })
        : readBody(response, length, url, { atMost: true });
    });
    const bytes = compression === Compression.Gzip ? await gunzip(stored, length, url, first) : stored;
    const actual = await sha256Hex(bytes.length === length ? bytes : bytes.slice());
    if (bytes.length !== length || actual !== hash) {
      throw new HttpError(
        StorageErrorCode.Corrupt,
        HttpErrorReason.Integrity,
        `chunk ${first} (${url}) failed its integrity check: ${bytes.length} bytes hashing to ${actual}, ` +
          `expected ${length} bytes hashing to ${hash}`,
        { url, chunk: first },
      );
    }
    await this.#cache?.put(hash, bytes);
    return [bytes];
  }
}

/**
 * Decompress a gzip chunk into at most `length` bytes. A host may already
 * have undone the gzip (it served the .gz file with Content-Encoding: gzip and
 * fetch decoded it): without the gzip magic the bytes are taken as they are,
 * and the hash decides.
 */
async function gunzip(stored: Uint8Array, length: number, url: string, chunk: number): Promise<Uint8Array<ArrayBuffer>> {
  if (stored.length < 2 || stored[0] !== 0x1f || stored[1] !== 0x8b) return stored.slice();
  const out = new Uint8Array(length);
  let filled = 0;
  const reader = new Blob([stored.slice()]).stream().pipeThrough(new DecompressionStream('gzip')).getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (filled + value.length > length) {
        throw new HttpError(StorageErrorCode.Corrupt, HttpErrorReason.Integrity, `chunk ${chunk} (${url}) inflates past ${length} bytes`, {
          url,
          chunk,
        });
      }
      out.set(value, filled);
      filled += value.length;
    }
  } catch (err) {
    await reader.cancel().catch(() => undefined);
    if (err instanceof HttpError) throw err;
    throw new HttpError(StorageErrorCode.Corrupt, HttpErrorReason.Integrity, `chunk ${chunk} (${url}) is not valid gzip: ${String(err)}`, {
      url,
      chunk,
      cause: err,
    });
  }
  return out.subarray(0, filled);
}
