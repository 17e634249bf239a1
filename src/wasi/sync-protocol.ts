// The synchronous facade's wire: one SharedArrayBuffer per disk, shared by a
// client that blocks (the WASI program's worker, in Atomics.wait) and a
// server that awaits (the backend worker, where IndexedDB or fetch run on an
// event loop). This file is the whole protocol: the layout, the states, the
// operations and how an error crosses.
//
// Layout: a 64-byte header, then the transfer area. Requests move one at a
// time (the program is blocked while its request runs), so one area serves
// both directions: a write's bytes go in before the request is posted, a
// read's come back before it is completed. The area is bounded; the client
// splits a larger read or write into area-sized pieces.
//
// States (Int32 word `State`), and who moves them:
//   Idle -> Request          client, after writing the fields and any data
//   Request -> Working       server, by compareExchange (it took the request)
//   Working -> Done | Failed server, after writing the result
//   Done | Failed -> Idle    client, after reading the result
//   Working -> Closed        server, when a Close succeeded (the answer to Close)
//   any -> Closed            the host that ended the worker
// Moves that may race the host's Closed are compareExchanges, so Closed sticks.
// Every move is an Atomics operation (sequentially consistent), so the plain
// writes of fields and data before it are visible to whoever loads the new
// state; each move is followed by Atomics.notify on the same word.

import { StorageErrorCode } from '../backends/backend.ts';

/** Values of the State word. */
export const ChannelState = {
  Idle: 0,
  Request: 1,
  Working: 2,
  Done: 3,
  Failed: 4,
  Closed: 5,
} as const;
export type ChannelState = (typeof ChannelState)[keyof typeof ChannelState];

/** What the client asks for (the Op word). */
export const ChannelOp = {
  Read: 1,
  Write: 2,
  Flush: 3,
  Discard: 4,
  WriteZeroes: 5,
  Resize: 6,
  Close: 7,
} as const;
export type ChannelOp = (typeof ChannelOp)[keyof typeof ChannelOp];

/** Int32 words of the header. */
export const ChannelWord = {
  State: 0,
  Op: 1,
  /** WriteZeroes: 1 when the range may be unmapped. */
  Flags: 2,
  /** Failed: index into STORAGE_ERROR_CODES. */
  ErrorCode: 3,
  /** Failed: UTF-8 bytes of the message at the start of the transfer area. */
  MessageBytes: 4,
  /** Set once by the server before it serves: DiskInfo bits. */
  Info: 5,
  /** Requests the server completed (diagnostics: a timed-out client reports it). */
  Served: 6,
} as const;

/** Float64 slots of the header, after the eight Int32 words. */
export const ChannelSlot = {
  /** Byte offset of the request. */
  Offset: 0,
  /** Byte length of the request (the new size for Resize). */
  Length: 1,
  /** The disk's size: published before serving and after every resize. */
  Size: 2,
  /** Done: bytes the server moved for a Read or Write (the client checks it is the length it asked). */
  Result: 3,
} as const;

/** Bits of the Info word: the backend's fixed properties. */
export const DiskInfo = {
  /** The server published the other bits and Size, and serves. */
  Ready: 16,
  ReadOnly: 1,
  Discard: 2,
  WriteZeroes: 4,
  Resize: 8,
} as const;

export const CHANNEL_HEADER_BYTES = 64;
/** Default transfer area: a 1 MiB request (a common emulator and dd block) is one round trip. */
export const DEFAULT_TRANSFER_BYTES = 1 << 20;

/** Longest error message a Failed answer carries, in UTF-8 bytes. */
export const MAX_MESSAGE_BYTES = 4096;

/** StorageError codes by index, so an error's code crosses as one word. */
export const STORAGE_ERROR_CODES = Object.values(StorageErrorCode);

/** The views both sides make over the channel's buffer. */
export interface ChannelViews {
  readonly words: Int32Array;
  readonly slots: Float64Array;
  readonly data: Uint8Array;
}

export function channelViews(buffer: SharedArrayBuffer): ChannelViews {
  if (!(buffer.byteLength > CHANNEL_HEADER_BYTES)) throw new RangeError(`a channel needs more than ${CHANNEL_HEADER_BYTES} bytes`);
  return {
    words: new Int32Array(buffer, 0, 8),
    slots: new Float64Array(buffer, 32, 4),
    data: new Uint8Array(buffer, CHANNEL_HEADER_BYTES),
  };
}

/** A new channel with a transfer area of `transferBytes`. */
export function createChannel(transferBytes = DEFAULT_TRANSFER_BYTES): SharedArrayBuffer {
  if (!(Number.isSafeInteger(transferBytes) && transferBytes >= 4096)) throw new RangeError(`transfer area of ${transferBytes} bytes: at least 4096`);
  return new SharedArrayBuffer(CHANNEL_HEADER_BYTES + transferBytes);
}
