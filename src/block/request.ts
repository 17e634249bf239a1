// Parse a descriptor chain into a block request (virtio 1.2 §5.2.6).
//
// Framing is the driver's choice: the 16-byte header may span descriptors,
// data may be any number of segments, and the status byte is simply the last
// device-writable byte. The chain is seen as one byte string, readable bytes
// [0, R) followed by writable bytes [R, R + W); the request is a set of ranges
// in it. Parsing reads only the header; data stays in guest memory.

import type { GuestMemory } from '../virtio/memory.ts';
import type { DescriptorChain } from '../virtio/queue.ts';
import { BLK_HEADER_BYTES, BlkRequestType } from './constants.ts';

/** Why a chain cannot be answered with a status byte at all. */
export const MalformedRequest = {
  /** The queue layer found the chain malformed (see chain.error). */
  BadChain: 'bad-chain',
  /** No device-writable byte to hold the status (§5.2.6). */
  NoStatus: 'no-status',
  /** Fewer than 16 device-readable bytes: no header (§5.2.6). */
  ShortHeader: 'short-header',
} as const;
export type MalformedRequest = (typeof MalformedRequest)[keyof typeof MalformedRequest];

/** A parsed request. One per in-flight chain, reused. */
export class BlockRequest {
  /** The chain the request came in on. */
  chain: DescriptorChain;
  /** VIRTIO_BLK_T_*. */
  type = 0;
  /** First sector (512-byte units). */
  sector = 0;
  /** Chain byte offset where the data starts (OUT, DISCARD, WRITE_ZEROES: 16; IN, GET_ID: R). */
  dataOffset = 0;
  /** Data length in bytes. */
  dataBytes = 0;
  /** Guest address of the status byte. */
  statusAddr = 0;
  /** Scratch for a header or a discard segment that spans descriptors. */
  readonly scratch = new Uint8Array(16);
  readonly scratchView = new DataView(this.scratch.buffer);

  constructor(chain: DescriptorChain) {
    this.chain = chain;
  }
}

/** Parse `req.chain` into `req`. Returns null on success, or why no status can be written. */
export function parseRequest(mem: GuestMemory, req: BlockRequest): MalformedRequest | null {
  const chain = req.chain;
  if (chain.error) return MalformedRequest.BadChain;
  if (chain.writableBytes < 1) return MalformedRequest.NoStatus;
  if (chain.readableBytes < BLK_HEADER_BYTES) return MalformedRequest.ShortHeader;
  // The status byte is the last device-writable byte (§5.2.6).
  const last = chain.count - 1;
  req.statusAddr = chain.addr[last]! + chain.len[last]! - 1;

  let type: number;
  let sector: number;
  if (chain.len[0]! >= BLK_HEADER_BYTES) {
    const at = chain.addr[0]!;
    type = mem.readU32(at);
    // at + 4: `reserved`, Linux's ioprio: ignored.
    sector = mem.readU64(at + 8);
  } else {
    copyFromChain(mem, chain, 0, req.scratch, BLK_HEADER_BYTES);
    type = req.scratchView.getUint32(0, true);
    sector = req.scratchView.getUint32(8, true) + req.scratchView.getUint32(12, true) * 0x1_0000_0000;
  }
  req.type = type;
  req.sector = sector;
  if (type === BlkRequestType.In || type === BlkRequestType.GetId) {
    req.dataOffset = chain.readableBytes;
    req.dataBytes = chain.writableBytes - 1;
  } else {
    req.dataOffset = BLK_HEADER_BYTES;
    req.dataBytes = chain.readableBytes - BLK_HEADER_BYTES;
  }
  return null;
}

/**
 * Find the segment holding chain byte `offset`: returns the segment index and
 * stores the offset inside it in `cursor.within`. Chains are short; a linear
 * walk is cheaper than any index.
 */
export function seek(chain: DescriptorChain, offset: number, cursor: { within: number }): number {
  let i = 0;
  while (i < chain.count && offset >= chain.len[i]!) {
    offset -= chain.len[i]!;
    i++;
  }
  cursor.within = offset;
  return i;
}

const seekCursor = { within: 0 };

/** Copy `length` chain bytes from chain offset `offset` into `dst`. The range lies inside the chain. */
export function copyFromChain(
  mem: GuestMemory,
  chain: DescriptorChain,
  offset: number,
  dst: Uint8Array,
  length: number,
): void {
  let i = seek(chain, offset, seekCursor);
  let within = seekCursor.within;
  let done = 0;
  while (done < length && i < chain.count) {
    const n = Math.min(chain.len[i]! - within, length - done);
    mem.read(chain.addr[i]! + within, dst.subarray(done, done + n));
    done += n;
    i++;
    within = 0;
  }
}

/** Copy `src` into the chain's bytes starting at chain offset `offset`. */
export function copyToChain(mem: GuestMemory, chain: DescriptorChain, offset: number, src: Uint8Array): void {
  let i = seek(chain, offset, seekCursor);
  let within = seekCursor.within;
  let done = 0;
  while (done < src.length && i < chain.count) {
    const n = Math.min(chain.len[i]! - within, src.length - done);
    mem.write(chain.addr[i]! + within, src.subarray(done, done + n));
    done += n;
    i++;
    within = 0;
  }
}
