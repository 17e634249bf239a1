// The vhost-user wire format (QEMU docs/interop/vhost-user.rst): message codes,
// feature bits, and the payload layouts this host reads and writes.
//
// Every message is a 12-byte header (request u32, flags u32, size u32, all
// little-endian) followed by `size` payload bytes; file descriptors ride along
// as SCM_RIGHTS ancillary data on the header. This file only parses and
// encodes; it does no I/O, so it is unit-tested without sockets.

/** Front-end → back-end requests (the ones this host understands, plus a few it refuses by name). */
export const Request = {
  GetFeatures: 1,
  SetFeatures: 2,
  SetOwner: 3,
  ResetOwner: 4,
  SetMemTable: 5,
  SetLogBase: 6,
  SetLogFd: 7,
  SetVringNum: 8,
  SetVringAddr: 9,
  SetVringBase: 10,
  GetVringBase: 11,
  SetVringKick: 12,
  SetVringCall: 13,
  SetVringErr: 14,
  GetProtocolFeatures: 15,
  SetProtocolFeatures: 16,
  GetQueueNum: 17,
  SetVringEnable: 18,
  SetBackendReqFd: 21,
  GetConfig: 24,
  SetConfig: 25,
  GetInflightFd: 31,
  SetInflightFd: 32,
  ResetDevice: 34,
  GetMaxMemSlots: 36,
  AddMemReg: 37,
  RemMemReg: 38,
  SetStatus: 39,
  GetStatus: 40,
} as const;
export type Request = (typeof Request)[keyof typeof Request];

/** Names for log lines. */
export const requestName: Record<number, string> = Object.fromEntries(
  Object.entries(Request).map(([name, code]) => [code, name]),
);

/** Requests that carry their own reply (REPLY_ACK does not add a second one). */
export const repliesItself: ReadonlySet<number> = new Set([
  Request.GetFeatures,
  Request.GetProtocolFeatures,
  Request.GetVringBase,
  Request.GetQueueNum,
  Request.GetConfig,
  Request.GetInflightFd,
  Request.GetMaxMemSlots,
  Request.GetStatus,
]);

/** Back-end → front-end requests on the backend channel. */
export const BackendRequest = {
  ConfigChange: 2,
} as const;

/** Header flags. */
export const HeaderFlag = {
  /** Protocol version 1, in bits 0–1 of every message. */
  Version: 0x1,
  VersionMask: 0x3,
  Reply: 0x4,
  NeedReply: 0x8,
} as const;

/** Virtio feature bit 30: the back-end speaks the protocol-features extension. */
export const F_PROTOCOL_FEATURES = 30n;

/** Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
export const ProtocolFeature = {
  Mq: 0n,
  LogShmfd: 1n,
  ReplyAck: 3n,
  /** Called SLAVE_REQ before QEMU 8: a channel for back-end-initiated messages. */
  BackendReq: 5n,
  /** GET_CONFIG / SET_CONFIG; QEMU's vhost-user-blk refuses a back-end without it. */
  Config: 9n,
  ResetDevice: 13n,
} as const;

/** SET_VRING_KICK/CALL/ERR payload: low byte is the ring index, bit 8 "no fd". */
export const VRING_INDEX_MASK = 0xffn;
export const VRING_NOFD_MASK = 0x100n;
/** Bits 9–63 of that payload are reserved (zero). */
export const VRING_RESERVED_MASK = ~(VRING_INDEX_MASK | VRING_NOFD_MASK) & 0xffff_ffff_ffff_ffffn;

/** Header size in bytes. */
export const HEADER_SIZE = 12;
/** Largest payload accepted: a memory table of 8 regions or a 256-byte config is far below it. */
export const MAX_PAYLOAD = 4096;
/** VHOST_USER_MAX_CONFIG_SIZE. */
export const MAX_CONFIG_SIZE = 256;
/** VHOST_MEMORY_BASELINE_NREGIONS: regions one SET_MEM_TABLE may carry. */
export const MAX_MEM_REGIONS = 8;

export interface Header {
  request: number;
  flags: number;
  size: number;
}

/** A payload did not have the layout its request needs. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

export function decodeHeader(bytes: Uint8Array): Header {
  const v = view(bytes);
  return { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
}

export function encodeHeader(request: number, flags: number, size: number): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE);
  const v = view(out);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  return out;
}

/** A whole message: header then payload. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  out.set(encodeHeader(request, flags, payload.length));
  out.set(payload, HEADER_SIZE);
  return out;
}

/** A reply to `request` (version 1, REPLY set). */
export function encodeReply(request: number, payload: Uint8Array): Uint8Array {
  return encodeMessage(request, HeaderFlag.Version | HeaderFlag.Reply, payload);
}

export function decodeU64(payload: Uint8Array): bigint {
  need(payload, 8, 'u64');
  return view(payload).getBigUint64(0, true);
}

export function encodeU64(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  view(out).setBigUint64(0, value, true);
  return out;
}

/** struct vhost_vring_state: ring index and a number (size, base, enable). */
export interface VringState {
  index: number;
  num: number;
}

export function decodeVringState(payload: Uint8Array): VringState {
  need(payload, 8, 'vring state');
  const v = view(payload);
  return { index: v.getUint32(0, true), num: v.getUint32(4, true) };
}

export function encodeVringState(state: VringState): Uint8Array {
  const out = new Uint8Array(8);
  const v = view(out);
  v.setUint32(0, state.index, true);
  v.setUint32(4, state.num, true);
  return out;
}

/** struct vhost_vring_addr: ring addresses in the front-end's address space. */
export interface VringAddr {
  index: number;
  flags: number;
  descUser: number;
  usedUser: number;
  availUser: number;
  logGuest: number;
}

export function decodeVringAddr(payload: Uint8Array): VringAddr {
  need(payload, 40, 'vring address');
  const v = view(payload);
  return {
    index: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    descUser: u64Number(v, 8),
    usedUser: u64Number(v, 16),
    availUser: u64Number(v, 24),
    // Only meaningful with dirty logging, which this host does not offer.
    logGuest: Number(v.getBigUint64(32, true)),
  };
}

/** One region of SET_MEM_TABLE. */
export interface MemRegion {
  guestAddress: number;
  size: number;
  /** Where the front-end (QEMU) has it mapped: ring addresses are in this space. */
  userAddress: number;
  /** Offset of the region inside its fd. */
  mmapOffset: number;
}

/**
 * SET_MEM_TABLE's VhostUserMemory. Besides the layout, what makes the table
 * usable is checked here: no empty region, no range that wraps (or leaves the
 * exact-number range), and no two regions overlapping in guest-physical space
 * (a guest address would have two meanings). Regions may share front-end
 * addresses: an alias of the same memory at a second guest address is legal,
 * and a ring address in it means the same bytes whichever region translates it.
 */
export function decodeMemTable(payload: Uint8Array): MemRegion[] {
  need(payload, 8, 'memory table');
  const v = view(payload);
  const count = v.getUint32(0, true);
  if (count === 0 || count > MAX_MEM_REGIONS) {
    throw new ProtocolError(`memory table with ${count} regions (1 to ${MAX_MEM_REGIONS} allowed)`);
  }
  need(payload, 8 + 32 * count, 'memory table');
  const regions: MemRegion[] = [];
  for (let i = 0; i < count; i++) {
    const at = 8 + 32 * i;
    const region = {
      guestAddress: u64Number(v, at),
      size: u64Number(v, at + 8),
      userAddress: u64Number(v, at + 16),
      mmapOffset: u64Number(v, at + 24),
    };
    if (region.size === 0) throw new ProtocolError(`memory region ${i} is empty`);
    for (const start of [region.guestAddress, region.userAddress, region.mmapOffset]) {
      if (start + region.size > Number.MAX_SAFE_INTEGER) {
        throw new ProtocolError(`memory region ${i} (0x${start.toString(16)}+0x${region.size.toString(16)}) overflows`);
      }
    }
    regions.push(region);
  }
  for (const [i, a] of regions.entries()) {
    for (const b of regions.slice(i + 1)) {
      if (a.guestAddress < b.guestAddress + b.size && b.guestAddress < a.guestAddress + a.size) {
        throw new ProtocolError(`memory regions overlap: 0x${a.guestAddress.toString(16)} and 0x${b.guestAddress.toString(16)}`);
      }
    }
  }
  return regions;
}

/**
 * How many fds `request` must carry (vhost-user.rst, "Front-end message
 * types"): SET_MEM_TABLE one per region, SET_VRING_KICK/CALL/ERR one unless
 * the payload's invalid-FD bit is set, SET_BACKEND_REQ_FD (and the log,
 * inflight and single-region requests) one, every other named request none. Null when the request is unknown here (it
 * is refused anyway) or its payload is too short to tell (its decoder says so).
 */
export function fdsCarried(request: number, payload: Uint8Array): number | null {
  switch (request) {
    case Request.SetMemTable:
      return payload.length < 4 ? null : view(payload).getUint32(0, true);
    case Request.SetVringKick:
    case Request.SetVringCall:
    case Request.SetVringErr:
      return payload.length < 8 ? null : view(payload).getBigUint64(0, true) & VRING_NOFD_MASK ? 0 : 1;
    case Request.SetBackendReqFd:
    case Request.SetLogFd:
    case Request.SetInflightFd:
    case Request.AddMemReg:
    case Request.RemMemReg:
      return 1;
    default:
      return requestName[request] === undefined ? null : 0;
  }
}

/** Take a message's first fd: the caller now owns it, and it is −1 in `fds` (so not closed with the rest). */
export function takeFd(fds: number[]): number | null {
  const index = fds.findIndex((fd) => fd >= 0);
  if (index < 0) return null;
  const fd = fds[index]!;
  fds[index] = -1;
  return fd;
}

/** struct vhost_user_config: a window of the device config space. */
export interface ConfigWindow {
  offset: number;
  size: number;
  flags: number;
  data: Uint8Array;
}

export function decodeConfig(payload: Uint8Array): ConfigWindow {
  need(payload, 12, 'config');
  const v = view(payload);
  const offset = v.getUint32(0, true);
  const size = v.getUint32(4, true);
  const flags = v.getUint32(8, true);
  if (size > MAX_CONFIG_SIZE || offset > MAX_CONFIG_SIZE) throw new ProtocolError(`config window ${offset}+${size}`);
  need(payload, 12 + size, 'config');
  return { offset, size, flags, data: payload.subarray(12, 12 + size) };
}

export function encodeConfig(window: ConfigWindow): Uint8Array {
  const out = new Uint8Array(12 + window.size);
  const v = view(out);
  v.setUint32(0, window.offset, true);
  v.setUint32(4, window.size, true);
  v.setUint32(8, window.flags, true);
  out.set(window.data.subarray(0, window.size), 12);
  return out;
}

/** Encoders for the front-end's side, used by tests that play QEMU. */
export function encodeVringAddr(addr: VringAddr): Uint8Array {
  const out = new Uint8Array(40);
  const v = view(out);
  v.setUint32(0, addr.index, true);
  v.setUint32(4, addr.flags, true);
  v.setBigUint64(8, BigInt(addr.descUser), true);
  v.setBigUint64(16, BigInt(addr.usedUser), true);
  v.setBigUint64(24, BigInt(addr.availUser), true);
  v.setBigUint64(32, BigInt(addr.logGuest), true);
  return out;
}

export function encodeMemTable(regions: MemRegion[]): Uint8Array {
  const out = new Uint8Array(8 + 32 * regions.length);
  const v = view(out);
  v.setUint32(0, regions.length, true);
  regions.forEach((r, i) => {
    const at = 8 + 32 * i;
    v.setBigUint64(at, BigInt(r.guestAddress), true);
    v.setBigUint64(at + 8, BigInt(r.size), true);
    v.setBigUint64(at + 16, BigInt(r.userAddress), true);
    v.setBigUint64(at + 24, BigInt(r.mmapOffset), true);
  });
  return out;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function need(payload: Uint8Array, length: number, what: string): void {
  if (payload.length < length) throw new ProtocolError(`${what} payload is ${payload.length} bytes, needs ${length}`);
}

/** A u64 as an exact number, or a ProtocolError (addresses and sizes stay below 2^53). */
function u64Number(v: DataView, at: number): number {
  const value = v.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError(`value 0x${value.toString(16)} too large`);
  return Number(value);
}
