// Pack a disk image into the chunked format (manifest.ts): the streaming core.
//
// Web APIs only (WebCrypto, CompressionStream, async iterables), so the CLI
// (pack-files.ts, reading a file and writing a folder) and the test server
// (packing into memory) run the same code. Memory is bounded by one chunk:
// input is gathered into a single chunk buffer, each full chunk is checked for
// zeroes, hashed, compressed if asked and handed to the store before the
// buffer is reused — so an image of any size (over 4 GiB included) packs in
// O(chunkSize) memory. Chunks the store already holds (same hash: an earlier
// version of the image, or a repeated chunk) are not written again.

import {
  Compression,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  MAX_CHUNK_SIZE,
  MIN_CHUNK_SIZE,
  chunkPath,
  isAllZero,
  sha256Hex,
  type ChunkedManifest,
} from './manifest.ts';

/** Where packed chunks go. Paths are relative to the manifest (`chunks/<hash>[.gz]`). */
export interface ChunkStore {
  /** Whether `path` is already stored (its name is its content's hash). */
  has(path: string): Promise<boolean>;
  /** Store `bytes` at `path`. The view is reused after the promise settles: copy or write it before. */
  put(path: string, bytes: Uint8Array): Promise<void>;
}

export interface PackOptions {
  /** Bytes per chunk. Default 256 KiB. */
  chunkSize?: number;
  /** gzip each stored chunk. Default false. */
  compress?: boolean;
  /** Called after each chunk with the bytes packed so far. */
  onProgress?(progress: PackProgress): void;
}

export interface PackProgress {
  /** Image bytes consumed. */
  bytes: number;
  /** Chunks seen. */
  chunks: number;
  /** Chunk files written. */
  stored: number;
  /** All-zero chunks (not stored). */
  zero: number;
  /** Chunks whose file was already there (same content). */
  shared: number;
  /** Bytes of chunk files written (compressed size when compressing). */
  storedBytes: number;
  /** Zero bytes added after the image to end it on a whole sector (counted in `bytes`). */
  paddedBytes: number;
}

export const DEFAULT_CHUNK_SIZE = 256 * 1024;

/** Check a chunk size, or throw a RangeError that says why. */
export function checkChunkSize(chunkSize: number): void {
  if (!Number.isSafeInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    throw new RangeError(`chunk size must be an integer from ${MIN_CHUNK_SIZE} to ${MAX_CHUNK_SIZE}, got ${chunkSize}`);
  }
  if (chunkSize % 512 !== 0) throw new RangeError(`chunk size must be a multiple of 512 bytes, got ${chunkSize}`);
}

/** Pack the bytes of `source` into `store`; returns the manifest (not stored: the caller writes it last). */
export async function packStream(
  source: AsyncIterable<Uint8Array>,
  store: ChunkStore,
  options: PackOptions = {},
): Promise<ChunkedManifest> {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  checkChunkSize(chunkSize);
  const compression = options.compress ? Compression.Gzip : Compression.None;
  const chunks: Array<string | null> = [];
  const progress: PackProgress = { bytes: 0, chunks: 0, stored: 0, zero: 0, shared: 0, storedBytes: 0, paddedBytes: 0 };
  const buffer = new Uint8Array(chunkSize);
  let filled = 0;

  const emit = async (chunk: Uint8Array<ArrayBuffer>): Promise<void> => {
    progress.chunks++;
    progress.bytes += chunk.length;
    if (isAllZero(chunk)) {
      chunks.push(null);
      progress.zero++;
    } else {
      const hash = await sha256Hex(chunk);
      chunks.push(hash);
      const path = chunkPath(hash, compression);
      if (await store.has(path)) {
        progress.shared++;
      } else {
        const bytes = compression === Compression.Gzip ? await gzip(chunk) : chunk;
        await store.put(path, bytes);
        progress.stored++;
        progress.storedBytes += bytes.length;
      }
    }
    options.onProgress?.({ ...progress });
  };

  for await (const piece of source) {
    let at = 0;
    while (at < piece.length) {
      const n = Math.min(chunkSize - filled, piece.length - at);
      buffer.set(piece.subarray(at, at + n), filled);
      filled += n;
      at += n;
      if (filled === chunkSize) {
        await emit(buffer);
        filled = 0;
      }
    }
  }
  // A disk is whole sectors: the device shows floor(size / 512) of them, so
  // an image that ends inside a sector is padded with zeroes to the next
  // boundary (as an import rounds up), or the guest could not see its tail.
  const padding = (512 - (filled % 512)) % 512;
  if (padding > 0) {
    buffer.fill(0, filled, filled + padding);
    filled += padding;
    progress.paddedBytes = padding;
  }
  if (filled > 0) await emit(buffer.subarray(0, filled));

  return {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    size: progress.bytes,
    chunkSize,
    compression,
    hash: 'sha-256',
    chunks,
  };
}

async function gzip(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The manifest as the file's text (one chunk per line, so diffs of two versions read well). */
export function manifestText(manifest: ChunkedManifest): string {
  const { chunks, ...head } = manifest;
  const lines = chunks.map((c) => `    ${JSON.stringify(c)}`).join(',\n');
  const top = JSON.stringify(head, null, 2).slice(0, -2);
  return `${top},\n  "chunks": [\n${lines}${chunks.length ? '\n' : ''}  ]\n}\n`;
}
