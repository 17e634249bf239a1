// The chunked image format, shared by `virtio-blk-web pack` (which writes it)
// and the HTTP chunked backend (which reads it). Plain data and web APIs
// only, so both Node and a browser worker use this file.
//
// An image of `size` bytes is cut into chunks of `chunkSize` bytes (the last
// one shorter). Chunk i is stored as the file `chunks/<sha256>` — or
// `chunks/<sha256>.gz` when compressed — where <sha256> is the hex SHA-256 of
// the chunk's uncompressed bytes. A chunk of zeroes is not stored: its entry
// is null. Naming by content means a CDN may cache every chunk forever, two
// versions of an image share their unchanged chunks, and a client can check
// each chunk against its name before using it.

export const MANIFEST_FORMAT = 'virtio-blk-web/chunked';
export const MANIFEST_VERSION = 1;
/** File name of the manifest inside a packed directory. */
export const MANIFEST_FILE = 'manifest.json';
/** Folder of the chunk files, relative to the manifest. */
export const CHUNK_DIR = 'chunks';

export const Compression = { None: 'none', Gzip: 'gzip' } as const;
export type Compression = (typeof Compression)[keyof typeof Compression];

export interface ChunkedManifest {
  format: typeof MANIFEST_FORMAT;
  version: typeof MANIFEST_VERSION;
  /** Image size in bytes. */
  size: number;
  /** Bytes per chunk; the last chunk holds the remainder. */
  chunkSize: number;
  /** How chunk files are stored. */
  compression: Compression;
  /** Hash of each chunk's uncompressed bytes. */
  hash: 'sha-256';
  /** Per chunk: lowercase hex SHA-256, or null for an all-zero chunk (not stored). */
  chunks: Array<string | null>;
}

/** Smallest and largest chunk sizes accepted (powers of two are usual, not required). */
export const MIN_CHUNK_SIZE = 4096;
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024;

/** Where chunk `hash` lives, relative to the manifest. */
export function chunkPath(hash: string, compression: Compression): string {
  return `${CHUNK_DIR}/${hash}${compression === Compression.Gzip ? '.gz' : ''}`;
}

/** Why a manifest was refused. */
export class ManifestError extends Error {
  override readonly name = 'ManifestError';
}

const HEX_SHA256 = /^[0-9a-f]{64}$/;

/** Check that `value` (parsed JSON) is a manifest this version understands. */
export function parseManifest(value: unknown): ChunkedManifest {
  const m = value as Partial<ChunkedManifest> | null;
  const fail = (why: string): never => {
    throw new ManifestError(why);
  };
  if (typeof m !== 'object' || m === null) return fail('not a JSON object');
  if (m.format !== MANIFEST_FORMAT) return fail(`format is ${JSON.stringify(m.format)}, expected "${MANIFEST_FORMAT}"`);
  if (m.version !== MANIFEST_VERSION) return fail(`version ${JSON.stringify(m.version)} is not supported (expected ${MANIFEST_VERSION})`);
  if (!Number.isSafeInteger(m.size) || m.size! < 0) return fail(`size ${JSON.stringify(m.size)} is not a byte count`);
  const chunkSize = m.chunkSize;
  if (!Number.isSafeInteger(chunkSize) || chunkSize! < MIN_CHUNK_SIZE || chunkSize! > MAX_CHUNK_SIZE) {
    return fail(`chunkSize ${JSON.stringify(chunkSize)} is outside ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE}`);
  }
  if (m.compression !== Compression.None && m.compression !== Compression.Gzip) {
    return fail(`compression ${JSON.stringify(m.compression)} is not "none" or "gzip"`);
  }
  if (m.hash !== 'sha-256') return fail(`hash ${JSON.stringify(m.hash)} is not "sha-256"`);
  if (!Array.isArray(m.chunks)) return fail('chunks is not an array');
  const expected = Math.ceil(m.size! / chunkSize!);
  if (m.chunks.length !== expected) return fail(`${m.chunks.length} chunks listed, ${expected} expected for ${m.size} bytes`);
  m.chunks.forEach((c, i) => {
    if (c !== null && (typeof c !== 'string' || !HEX_SHA256.test(c))) fail(`chunk ${i} is not null or a hex SHA-256`);
  });
  return m as ChunkedManifest;
}

/** Lowercase hex of a digest. */
export function hex(digest: ArrayBuffer): string {
  const bytes = new Uint8Array(digest);
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}

/** SHA-256 of `bytes` as lowercase hex (WebCrypto: Node ≥ 20 and browsers). */
export async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  return hex(await crypto.subtle.digest('SHA-256', bytes));
}

/** Whether every byte is zero. */
export function isAllZero(bytes: Uint8Array): boolean {
  // Four bytes at a time where the view is aligned (BigInt words are slower in V8).
  const aligned = bytes.byteOffset % 4 === 0 ? Math.floor(bytes.length / 4) : 0;
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, aligned);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  for (let i = aligned * 4; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}
