// Where the overlay keeps things inside its top, and the header that ties a
// top to one base.
//
// The top is an ordinary BlockBackend (OPFS file, IndexedDB disk, memory),
// laid out as
//
//   [0, 512)                 header: magic, version, block size, base size,
//                            the base's identity, a checksum
//   [4096, 4096 + mapBytes)  the block map (overlay-map.ts), 2 bits per block
//   [dataOffset, ...)        block i's bytes at dataOffset + i * blockSize
//
// Fixed slots rather than an allocation log: a run of blocks the top holds
// is one contiguous range of the top, so a merged read of it is one top read,
// and the map needs no offsets (2 bits, not 8 bytes, per block). Sparse tops
// (OPFS, IndexedDB) spend no space on slots never written.
//
// The header fits one 512-byte sector, written once when the top is made
// (after the map region is zeroed and flushed), so a crash leaves either no
// header (the top is made again) or a whole one. The checksum tells a header
// from some other disk's first sector.

import { StorageError, StorageErrorCode } from './backend.ts';
import { MAP_PAGE_BYTES, mapBytesFor } from './overlay-map.ts';

export const HEADER_BYTES = 512;
export const MAP_OFFSET = 4096;
const MAGIC = 'VBWOVRL1';
const VERSION = 1;
/** Bytes before the identity: magic 8, version 4, block size 4, base size 8, data offset 8, identity length 4, checksum 4. */
const FIXED_BYTES = 40;
/** Longest identity (UTF-8 bytes) that fits the header's one sector. */
export const MAX_IDENTITY_BYTES = HEADER_BYTES - FIXED_BYTES;

export interface OverlayLayout {
  blockSize: number;
  /** The base's (and so the overlay's) size in bytes. */
  baseSize: number;
  blocks: number;
  mapBytes: number;
  dataOffset: number;
  /** Bytes the top must hold. */
  topBytes: number;
}

export function overlayLayout(baseSize: number, blockSize: number): OverlayLayout {
  if (!(Number.isSafeInteger(blockSize) && blockSize >= 4096 && (blockSize & (blockSize - 1)) === 0 && blockSize <= 1 << 24)) {
    throw new RangeError(`overlay block size ${blockSize} is not a power of two from 4 KiB to 16 MiB`);
  }
  const blocks = Math.ceil(baseSize / blockSize);
  const mapBytes = mapBytesFor(blocks);
  const dataOffset = Math.ceil((MAP_OFFSET + mapBytes) / Math.max(blockSize, MAP_PAGE_BYTES)) * Math.max(blockSize, MAP_PAGE_BYTES);
  return { blockSize, baseSize, blocks, mapBytes, dataOffset, topBytes: dataOffset + blocks * blockSize };
}

export interface OverlayHeader {
  blockSize: number;
  baseSize: number;
  dataOffset: number;
  identity: string;
}

export function encodeHeader(header: OverlayHeader): Uint8Array {
  const identity = new TextEncoder().encode(header.identity);
  if (identity.length > MAX_IDENTITY_BYTES) {
    throw new RangeError(`base identity of ${identity.length} bytes is longer than the ${MAX_IDENTITY_BYTES} an overlay header holds`);
  }
  const bytes = new Uint8Array(HEADER_BYTES);
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode(MAGIC), 0);
  view.setUint32(8, VERSION, true);
  view.setUint32(12, header.blockSize, true);
  view.setBigUint64(16, BigInt(header.baseSize), true);
  view.setBigUint64(24, BigInt(header.dataOffset), true);
  view.setUint32(32, identity.length, true);
  bytes.set(identity, FIXED_BYTES);
  view.setUint32(36, checksum(bytes), true);
  return bytes;
}

/** The header in `bytes`, or null when the sector is all zeroes (no overlay made yet). */
export function decodeHeader(bytes: Uint8Array, what: string): OverlayHeader | null {
  if (bytes.every((b) => b === 0)) return null;
  const corrupt = (why: string) => new StorageError(StorageErrorCode.Corrupt, `${what} is not an overlay top this version can read: ${why}`);
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) throw corrupt('no overlay magic');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(8, true) !== VERSION) throw corrupt(`version ${view.getUint32(8, true)}`);
  const length = view.getUint32(32, true);
  if (length > MAX_IDENTITY_BYTES) throw corrupt(`identity length ${length}`);
  if (view.getUint32(36, true) !== checksum(bytes)) throw corrupt('header checksum mismatch');
  return {
    blockSize: view.getUint32(12, true),
    baseSize: Number(view.getBigUint64(16, true)),
    dataOffset: Number(view.getBigUint64(24, true)),
    identity: new TextDecoder().decode(bytes.subarray(FIXED_BYTES, FIXED_BYTES + length)),
  };
}

/** FNV-1a over the header with its checksum field read as zero. */
function checksum(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < HEADER_BYTES; i++) {
    h ^= i >= 36 && i < 40 ? 0 : bytes[i]!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** A backend's own content identity, as BlockBackend.identity offers it, in words; null when it has none. */
export function describeIdentity(identity: BackendIdentity | undefined): string | null {
  if (identity === undefined) return null;
  if (typeof identity === 'string') return identity === '' ? null : identity;
  if (identity.etag !== null) return `etag ${identity.etag}`;
  if (identity.lastModified !== null) return `last-modified ${identity.lastModified}`;
  return null;
}

/** The two shapes BlockBackend.identity takes (backend.ts). */
export type BackendIdentity = string | { readonly etag: string | null; readonly lastModified: string | null };
