// A vhost-user back-end in Node: QEMU (the front-end) hands this process the
// guest's RAM (memfd fds, mapped here with the addon) and the virtqueues (ring
// addresses, a kick eventfd and a call eventfd per queue), and the project's
// own device core serves them. The same SplitQueue and VirtioDevice code that
// runs in the browser is what the guest's driver talks to.
//
// One front-end connection at a time; when it goes away the device is reset
// and the next connection is accepted (QEMU reconnects after a restart).
// Messages are handled strictly in order; a handler may be asynchronous
// (GET_VRING_BASE waits for in-flight requests), and later messages wait.
//
// The front-end is not trusted to be well-formed (any bytes may arrive on the
// socket): every message that fails is answered with an error where the
// protocol has a way to say so (REPLY_ACK, GET_CONFIG's empty payload) and
// otherwise ends the connection, so that a front-end never waits for a reply
// that will not come. Nothing a peer sends blocks the event loop: reads and
// replies never wait, and a peer that stops reading its replies is dropped.
//
// Ring lifecycle (vhost-user.rst "Starting and stopping rings"): a ring starts
// when it has an address and a kick fd, is enabled by SET_VRING_ENABLE (or at
// once when protocol features were not negotiated), and stops at
// GET_VRING_BASE. The device is activated when the first ring starts and reset
// when the last one stops.

import { readSync, unlinkSync, writeSync } from 'node:fs';
import type { VirtioDevice, ActivateContext } from '../../virtio/device.ts';
import { hasFeature } from '../../virtio/device.ts';
import { GuestMemory } from '../../virtio/memory.ts';
import { MAX_QUEUE_SIZE, isQueueSize, type SplitQueue } from '../../virtio/queue.ts';
import { queueProblem, splitQueueFor } from '../../virtio/transport/queues.ts';
import { loadAddon, type VhostUserAddon, type Watcher } from './addon.ts';
import {
  BackendRequest,
  decodeConfig,
  decodeHeader,
  decodeMemTable,
  decodeU64,
  decodeVringAddr,
  decodeVringState,
  encodeConfig,
  encodeMessage,
  encodeReply,
  encodeU64,
  encodeVringState,
  F_PROTOCOL_FEATURES,
  fdsCarried,
  HEADER_SIZE,
  HeaderFlag,
  MAX_PAYLOAD,
  ProtocolError,
  ProtocolFeature,
  repliesItself,
  Request,
  requestName,
  VRING_INDEX_MASK,
  VRING_NOFD_MASK,
  VRING_RESERVED_MASK,
  type MemRegion,
} from './protocol.ts';

/** Protocol features this back-end offers. */
export const OFFERED_PROTOCOL_FEATURES =
  (1n << ProtocolFeature.Mq) |
  (1n << ProtocolFeature.ReplyAck) |
  (1n << ProtocolFeature.BackendReq) |
  (1n << ProtocolFeature.Config) |
  (1n << ProtocolFeature.ResetDevice);

/** How long GET_VRING_BASE waits for in-flight requests before resetting anyway. */
const DRAIN_TIMEOUT_MS = 10_000;

/**
 * Messages received but not yet handled, at most. Past it the socket is not
 * read until the queue drains (a slow GET_VRING_BASE must not let a flood of
 * messages pile up in memory); QEMU itself waits for each reply.
 */
const MAX_QUEUED_MESSAGES = 64;

export interface VhostUserHostOptions {
  /** Unix socket path to listen on. A stale socket file is replaced; a live one is an error. */
  socketPath: string;
  device: VirtioDevice;
  /** Protocol trace: every request, connects, disconnects (default: none). */
  log?: (line: string) => void;
  /** Problems: refused requests, protocol errors, broken rings (default: `log`). */
  warn?: (line: string) => void;
  /** The native helper (default: built and loaded on demand). */
  addon?: VhostUserAddon;
  /** Map regions in pieces of at most this many bytes (default 1 GiB; a multiple of the page size). */
  maxMappingBytes?: number;
}

interface Ring {
  size: number;
  /** Ring addresses translated to guest-physical; null until SET_VRING_ADDR. */
  desc: number | null;
  avail: number;
  used: number;
  /** SET_VRING_BASE: the avail index to resume from. */
  base: number;
  kickFd: number | null;
  callFd: number | null;
  errFd: number | null;
  kickWatcher: Watcher | null;
  enabled: boolean;
  /** Has a kick fd (or NOFD) and has not been stopped by GET_VRING_BASE. */
  started: boolean;
  queue: SplitQueue | null;
}

/** One mmap of (part of) a memory region: `bytes` guest bytes from `guestAddress`. */
interface Mapping {
  guestAddress: number;
  bytes: number;
  buffer: ArrayBuffer;
  delta: number;
}

/**
 * Largest single mapping. A typed array over more than 4 GiB is not possible
 * in Node 20, and guest RAM is one region as large as `-m`, so a region is
 * mapped in pieces; GuestMemory splits chains at the seams.
 */
export const MAX_MAPPING_BYTES = 1 << 30;

const EVENTFD_ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

export class VhostUserHost {
  readonly socketPath: string;
  readonly #device: VirtioDevice;
  readonly #addon: VhostUserAddon;
  readonly #log: (line: string) => void;
  readonly #warn: (line: string) => void;
  readonly #listenFd: number;
  #listenWatcher: Watcher | null = null;

  // Per-connection state, cleared by #disconnect.
  #connFd: number | null = null;
  #connWatcher: Watcher | null = null;
  /** The connection is being torn down: read nothing more from it. */
  #ending = false;
  /** Messages enqueued and not yet handled (see MAX_QUEUED_MESSAGES). */
  #queued = 0;
  /** The handler of the current message sent its reply. */
  #replied = false;
  #backendFd: number | null = null;
  #features = 0n;
  #protocolFeatures = 0n;
  /** The front-end acked F_PROTOCOL_FEATURES: rings then start disabled (vhost-user.rst). */
  #protocolAcked = false;
  /** The memory table as QEMU sent it (ring addresses are translated through it). */
  #regions: MemRegion[] = [];
  readonly #maxMappingBytes: number;
  #memory: GuestMemory | null = null;
  /** The mmaps behind `#memory`: unmapped when the table is replaced or the front-end leaves. */
  #mappings: Mapping[] = [];
  #rings: Ring[];
  /** The array handed to the device in `activate`; entries are filled as rings start. */
  #queues: (SplitQueue | null)[];
  #active = false;
  /** Messages are handled one after another, in arrival order. */
  #pending: Promise<void> = Promise.resolve();
  #closed = false;
  #connectionWaiters: Array<() => void> = [];
  #sessionEndWaiters: Array<() => void> = [];
  #idleWaiters: Array<() => void> = [];
  #settledWaiters: Array<() => void> = [];
  /** A message being received. */
  #rx = newReceiveState();
  /** SET_CONFIG writes of this session, replayed after each activation. */
  #configWrites: Array<{ offset: number; data: Uint8Array }> = [];
  /** The current connection sent at least one message. */
  #sawMessage = false;
  /** The device was activated during the current connection. */
  #everActive = false;
  readonly #scratch = new Uint8Array(8);

  private constructor(options: VhostUserHostOptions, addon: VhostUserAddon, listenFd: number) {
    this.socketPath = options.socketPath;
    this.#device = options.device;
    this.#addon = addon;
    this.#log = options.log ?? (() => {});
    this.#warn = options.warn ?? this.#log;
    this.#listenFd = listenFd;
    this.#maxMappingBytes = options.maxMappingBytes ?? MAX_MAPPING_BYTES;
    this.#rings = Array.from({ length: this.#device.queueCount }, () => newRing());
    this.#queues = this.#rings.map(() => null);
    this.#device.onConfigChange = () => this.#sendConfigChange();
  }

  /** Listen on `socketPath` and serve front-ends until `close`. */
  static listen(options: VhostUserHostOptions): VhostUserHost {
    const addon = options.addon ?? loadAddon();
    const fd = addon.listen(options.socketPath);
    const host = new VhostUserHost(options, addon, fd);
    host.#listenWatcher = addon.watch(fd, () => host.#accept());
    return host;
  }

  /** Resolves when a front-end is connected. */
  connected(): Promise<void> {
    if (this.#connFd !== null) return Promise.resolve();
    return new Promise((resolve) => this.#connectionWaiters.push(resolve));
  }

  /**
   * Resolves when a front-end session ends (it disconnected and the device is
   * reset). A peer that closes without sending a message (a liveness probe)
   * is not a session.
   */
  sessionEnded(): Promise<void> {
    return new Promise((resolve) => this.#sessionEndWaiters.push(resolve));
  }

  /** Resolves once no front-end is connected (at once when none is). */
  idle(): Promise<void> {
    if (this.#connFd === null) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Stop listening, drop the front-end, reset the device. Does not close the device's backend. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#listenWatcher) this.#addon.unwatch(this.#listenWatcher);
    this.#listenWatcher = null;
    this.#addon.close(this.#listenFd);
    try {
      unlinkSync(this.socketPath);
    } catch {
      // Already gone.
    }
    await this.#pending;
    await this.#disconnect('host closed');
  }

  #accept(): void {
    let fd: number;
    try {
      fd = this.#addon.accept(this.#listenFd);
    } catch (err) {
      this.#warn(`accept failed: ${(err as Error).message}`);
      return;
    }
    if (this.#connFd !== null) {
      this.#warn('refusing a second front-end while one is connected');
      this.#addon.close(fd);
      return;
    }
    this.#connFd = fd;
    // Neither reads nor replies ever wait (MSG_DONTWAIT both ways): the peer
    // cannot stop the loop by sending half a message or by reading nothing.
    this.#ending = false;
    this.#connWatcher = this.#addon.watch(fd, () => this.#readMessages());
    this.#log('front-end connected');
    for (const wake of this.#connectionWaiters.splice(0)) wake();
  }

  /**
   * Read whatever the socket holds without blocking, and queue every message
   * completed by it. A message may arrive in pieces; the parts read so far
   * wait in `#rx` for the next readable event. Reading pauses while
   * MAX_QUEUED_MESSAGES wait to be handled.
   */
  #readMessages(): void {
    const fd = this.#connFd;
    if (fd === null || this.#ending) return;
    try {
      for (;;) {
        if (this.#queued >= MAX_QUEUED_MESSAGES) {
          this.#pauseReading();
          return;
        }
        const rx = this.#rx;
        const target = rx.payload ? rx.payload.subarray(rx.payloadFill) : rx.header.subarray(rx.headerFill);
        if (target.length > 0) {
          const got = this.#addon.recvmsg(fd, target, true);
          if (got.bytes < 0) return; // drained: wait for the next readable event
          rx.fds.push(...got.fds);
          if (got.fdsTruncated) throw new ProtocolError('too many fds in one message');
          if (got.bytes === 0) {
            const midMessage = rx.headerFill > 0;
            this.#endConnection(`front-end closed the connection${midMessage ? ' mid-message' : ''}`);
            return;
          }
          if (rx.payload) rx.payloadFill += got.bytes;
          else rx.headerFill += got.bytes;
        }
        if (!rx.payload) {
          if (rx.headerFill < HEADER_SIZE) continue;
          const { request, flags, size } = decodeHeader(rx.header);
          if ((flags & HeaderFlag.VersionMask) !== HeaderFlag.Version || size > MAX_PAYLOAD) {
            throw new ProtocolError(`bad header: request ${request}, flags 0x${flags.toString(16)}, size ${size}`);
          }
          rx.payload = new Uint8Array(size);
          rx.payloadFill = 0;
        }
        if (rx.payloadFill < rx.payload.length) continue;
        const { request, flags } = decodeHeader(rx.header);
        const payload = rx.payload;
        const fds = rx.fds;
        this.#rx = newReceiveState();
        this.#sawMessage = true;
        this.#enqueue(() => this.#handle(request, flags, payload, fds));
      }
    } catch (err) {
      for (const extra of this.#rx.fds) this.#addon.close(extra);
      this.#rx = newReceiveState();
      // A front-end that closes with replies of ours unread resets the
      // connection (recvmsg: ECONNRESET): it left, it did not misbehave.
      if (peerGone(err)) {
        this.#endConnection('front-end reset the connection');
        return;
      }
      this.#warn(`protocol error: ${(err as Error).message}`);
      this.#endConnection('protocol error');
    }
  }

  #endConnection(why: string): void {
    if (this.#ending || this.#connFd === null) return;
    this.#ending = true;
    this.#pauseReading();
    this.#enqueue(() => this.#disconnect(why));
  }

  #pauseReading(): void {
    if (this.#connWatcher) this.#addon.unwatch(this.#connWatcher);
    this.#connWatcher = null;
  }

  /** Watch the socket again once the queue has drained (reading was paused by a full queue). */
  #resumeReading(): void {
    const fd = this.#connFd;
    if (fd === null || this.#ending || this.#connWatcher || this.#queued > 0) return;
    this.#connWatcher = this.#addon.watch(fd, () => this.#readMessages());
  }

  /** Run `step` after everything queued before it; a failure is logged and does not stop later steps. */
  #enqueue(step: () => Promise<void>): void {
    this.#queued++;
    this.#pending = this.#pending
      .then(step)
      .catch((err: unknown) => this.#warn(`internal error: ${String(err)}`))
      .finally(() => {
        this.#queued--;
        this.#resumeReading();
      });
  }

  async #handle(request: number, flags: number, payload: Uint8Array, fds: number[]): Promise<void> {
    // Messages that arrived behind one that ended the connection take no effect.
    if (this.#connFd === null || this.#ending) {
      for (const fd of fds) this.#addon.close(fd);
      return;
    }
    const name = requestName[request] ?? String(request);
    this.#log(`<- ${name}${fds.length ? ` (${fds.length} fd)` : ''}`);
    this.#replied = false;
    let ok = true;
    try {
      const expected = fdsCarried(request, payload);
      if (expected !== null && fds.length !== expected) {
        throw new ProtocolError(`carries ${fds.length} fd(s), needs ${expected}`);
      }
      ok = await this.#dispatch(request, payload, fds);
    } catch (err) {
      ok = false;
      this.#warn(`${name}: ${(err as Error).message}`);
    } finally {
      // Any fd a handler did not take over is closed here.
      for (const fd of fds) if (fd >= 0) this.#addon.close(fd);
    }
    if (repliesItself.has(request)) {
      if (!this.#replied) this.#failUnanswered(request, name);
      return;
    }
    const ackNegotiated = hasFeature(this.#protocolFeatures, ProtocolFeature.ReplyAck);
    if (ackNegotiated && flags & HeaderFlag.NeedReply) {
      this.#reply(request, encodeU64(ok ? 0n : 1n));
    } else if (!ok) {
      // Nothing can carry the failure back, and the front-end would go on as
      // if the request had worked (vhost-user.rst: without REPLY_ACK the
      // back-end has no way to report an error): hang up instead.
      this.#endConnection(`${name} failed and the front-end asked for no reply`);
    }
  }

  /**
   * A request whose reply is its answer failed. GET_CONFIG has an error form
   * (vhost-user.rst, VHOST_USER_GET_CONFIG: a reply with an empty payload);
   * for the others (GET_VRING_BASE, ...) there is none, and the front-end is
   * blocked reading the reply: disconnecting is the only answer it will see.
   */
  #failUnanswered(request: number, name: string): void {
    if (request === Request.GetConfig) {
      this.#reply(request, new Uint8Array(0));
      return;
    }
    this.#endConnection(`${name} could not be answered`);
  }

  /**
   * Handle one request. Returns false when it failed (reported through
   * REPLY_ACK). A handler that keeps an fd replaces it in `fds` with −1.
   */
  async #dispatch(request: number, payload: Uint8Array, fds: number[]): Promise<boolean> {
    const device = this.#device;
    switch (request) {
      case Request.GetFeatures:
        this.#reply(request, encodeU64(device.deviceFeatures | (1n << F_PROTOCOL_FEATURES)));
        return true;
      case Request.SetFeatures: {
        const features = decodeU64(payload);
        this.#features = features & ~(1n << F_PROTOCOL_FEATURES);
        this.#protocolAcked = hasFeature(features, F_PROTOCOL_FEATURES);
        this.#log(`features 0x${this.#features.toString(16)}`);
        return (this.#features & ~device.deviceFeatures) === 0n;
      }
      case Request.GetProtocolFeatures:
        this.#reply(request, encodeU64(OFFERED_PROTOCOL_FEATURES));
        return true;
      case Request.SetProtocolFeatures:
        this.#protocolFeatures = decodeU64(payload) & OFFERED_PROTOCOL_FEATURES;
        return true;
      case Request.SetOwner:
        return true;
      case Request.ResetOwner:
      case Request.ResetDevice:
        await this.#resetRings();
        this.#features = 0n;
        return true;
      case Request.GetQueueNum:
        this.#reply(request, encodeU64(BigInt(device.queueCount)));
        return true;
      case Request.SetMemTable:
        return this.#setMemTable(payload, fds);
      case Request.SetVringNum: {
        const { index, num } = decodeVringState(payload);
        const ring = this.#ring(index);
        // QEMU picks the size (its queue-size property); vhost-user has no
        // way to offer a maximum, so any valid split-ring size is accepted (§2.7).
        if (!isQueueSize(num)) {
          throw new ProtocolError(`queue size ${num} is not a power of two up to ${MAX_QUEUE_SIZE}`);
        }
        ring.size = num;
        return true;
      }
      case Request.SetVringAddr: {
        const addr = decodeVringAddr(payload);
        const ring = this.#ring(addr.index);
        ring.desc = this.#translate(addr.descUser);
        ring.avail = this.#translate(addr.availUser);
        ring.used = this.#translate(addr.usedUser);
        return true;
      }
      case Request.SetVringBase: {
        const { index, num } = decodeVringState(payload);
        const ring = this.#ring(index);
        // Split rings: the base is the next avail index, a u16 (§2.7.6);
        // packed rings (the only users of the upper bits) are not offered.
        if (num > 0xffff) throw new ProtocolError(`ring base ${num} is not a 16-bit avail index`);
        ring.base = num;
        return true;
      }
      case Request.GetVringBase: {
        const { index } = decodeVringState(payload);
        const base = await this.#stopRing(index);
        this.#reply(request, encodeVringState({ index, num: base }));
        return true;
      }
      case Request.SetVringKick:
        return this.#setKick(payload, fds);
      case Request.SetVringCall:
      case Request.SetVringErr: {
        const { ring, fd } = this.#ringFd(payload, fds);
        const key = request === Request.SetVringCall ? 'callFd' : 'errFd';
        if (ring[key] !== null) this.#addon.close(ring[key]);
        ring[key] = fd;
        return true;
      }
      case Request.SetVringEnable: {
        const { index, num } = decodeVringState(payload);
        const ring = this.#ring(index);
        ring.enabled = num !== 0;
        if (ring.enabled) this.#startRing(index);
        return true;
      }
      case Request.SetBackendReqFd:
        if (this.#backendFd !== null) this.#addon.close(this.#backendFd);
        this.#backendFd = takeFd(fds);
        return true;
      case Request.GetConfig: {
        const window = decodeConfig(payload);
        const data = new Uint8Array(window.size);
        const config = device.config;
        if (window.offset < config.length) data.set(config.subarray(window.offset, window.offset + window.size));
        this.#reply(request, encodeConfig({ ...window, data }));
        return true;
      }
      case Request.SetConfig: {
        const window = decodeConfig(payload);
        const config = device.config;
        const length = Math.min(window.size, Math.max(0, config.length - window.offset));
        if (length === 0) return false;
        const data = window.data.slice(0, length);
        // One entry per offset (the latest): bounded by the config size.
        this.#configWrites = this.#configWrites.filter((w) => w.offset !== window.offset);
        this.#configWrites.push({ offset: window.offset, data });
        this.#applyConfigWrite(window.offset, data);
        return true;
      }
      default:
        // Unknown or not offered (logging, inflight, postcopy, ...): refuse.
        this.#warn(`unsupported request ${requestName[request] ?? request}`);
        return false;
    }
  }

  #applyConfigWrite(offset: number, data: Uint8Array): void {
    this.#device.config.set(data, offset);
    this.#device.configWritten(offset, data.length);
  }

  #ring(index: number): Ring {
    const ring = this.#rings[index];
    if (!ring) throw new ProtocolError(`no queue ${index} (the device has ${this.#rings.length})`);
    return ring;
  }

  /**
   * The ring and fd of a SET_VRING_KICK/CALL/ERR payload (vhost-user.rst: bits
   * 0–7 the index, bit 8 "no fd", the rest zero). The fd is an eventfd the
   * front-end also holds: it is made non-blocking so that neither a drained
   * counter (kick) nor a full one (call, err) can block the loop.
   */
  #ringFd(payload: Uint8Array, fds: number[]): { ring: Ring; index: number; fd: number | null } {
    const value = decodeU64(payload);
    if (value & VRING_RESERVED_MASK) throw new ProtocolError(`reserved bits set in 0x${value.toString(16)}`);
    const index = Number(value & VRING_INDEX_MASK);
    const ring = this.#ring(index);
    const fd = value & VRING_NOFD_MASK ? null : takeFd(fds);
    if (fd !== null) {
      try {
        this.#addon.setBlocking(fd, false);
      } catch (err) {
        this.#addon.close(fd);
        throw err;
      }
    }
    return { ring, index, fd };
  }

  /** Send a reply. A peer that does not read it (EAGAIN) or is gone is disconnected. */
  #reply(request: number, payload: Uint8Array): void {
    if (this.#connFd === null || this.#ending) return;
    this.#replied = true;
    try {
      this.#addon.sendmsg(this.#connFd, encodeReply(request, payload), undefined, true);
    } catch (err) {
      if (peerGone(err)) {
        this.#endConnection('front-end closed the connection before its reply');
        return;
      }
      this.#warn(`reply to ${requestName[request] ?? request}: ${(err as Error).message}`);
      this.#endConnection('the front-end does not take its replies');
    }
  }

  /** A QEMU-process address → guest-physical, through the memory table. */
  #translate(userAddress: number): number {
    for (const region of this.#regions) {
      if (userAddress >= region.userAddress && userAddress - region.userAddress < region.size) {
        return userAddress - region.userAddress + region.guestAddress;
      }
    }
    throw new ProtocolError(`ring address 0x${userAddress.toString(16)} is in no memory region`);
  }

  async #setMemTable(payload: Uint8Array, fds: number[]): Promise<boolean> {
    const regions = decodeMemTable(payload);
    if (fds.length !== regions.length) {
      throw new ProtocolError(`memory table has ${regions.length} regions but ${fds.length} fds`);
    }
    const mappings: Mapping[] = [];
    let memory: GuestMemory;
    try {
      regions.forEach((region, i) => {
        // Touching a shared mapping past the end of its file is SIGBUS, which
        // kills the process: every byte of the region must be in the file.
        const fileBytes = this.#addon.fdSize(fds[i]!);
        if (region.mmapOffset + region.size > fileBytes) {
          throw new ProtocolError(
            `memory region ${i} needs bytes up to 0x${(region.mmapOffset + region.size).toString(16)} of an fd of 0x${fileBytes.toString(16)}`,
          );
        }
        for (let done = 0; done < region.size; done += this.#maxMappingBytes) {
          const bytes = Math.min(this.#maxMappingBytes, region.size - done);
          const { buffer, delta } = this.#addon.mmap(fds[i]!, region.mmapOffset + done, bytes);
          mappings.push({ guestAddress: region.guestAddress + done, bytes, buffer, delta });
        }
      });
      // The mappings hold the memory; the fds are no longer needed (closed by #handle).
      memory = new GuestMemory(
        mappings.map((m) => ({ guestAddress: m.guestAddress, source: m.buffer, sourceOffset: m.delta, size: m.bytes })),
      );
    } catch (err) {
      this.#unmap(mappings);
      throw err;
    }
    const wasActive = this.#active;
    // A new table while rings run: requests in flight finish against the old
    // mapping, then the queues are rebuilt over the new one at the same indices.
    if (wasActive) await this.#deactivate();
    this.#unmap(this.#mappings);
    this.#mappings = mappings;
    this.#regions = regions;
    this.#memory = memory;
    this.#log(
      `memory: ${regions.map((r) => `0x${r.guestAddress.toString(16)}+0x${r.size.toString(16)}`).join(', ')}`,
    );
    if (wasActive) this.#activateIfReady();
    return true;
  }

  /** Unmap what `mappings` hold: nothing uses them any more (the device is reset or never saw them). */
  #unmap(mappings: Mapping[]): void {
    for (const m of mappings) this.#addon.unmap(m.buffer);
  }

  #setKick(payload: Uint8Array, fds: number[]): boolean {
    const { ring, index, fd } = this.#ringFd(payload, fds);
    this.#unwatchKick(ring);
    if (fd !== null) {
      try {
        ring.kickWatcher = this.#addon.watch(fd, () => this.#kicked(index));
      } catch (err) {
        // Not pollable (epoll refuses regular files): refused, and not kept.
        this.#addon.close(fd);
        throw err;
      }
      ring.kickFd = fd;
    }
    ring.started = true;
    // Without protocol features a ring is enabled as soon as it starts.
    if (!this.#protocolAcked) ring.enabled = true;
    if (ring.enabled) this.#startRing(index);
    return true;
  }

  #unwatchKick(ring: Ring): void {
    if (ring.kickWatcher) this.#addon.unwatch(ring.kickWatcher);
    ring.kickWatcher = null;
    if (ring.kickFd !== null) this.#addon.close(ring.kickFd);
    ring.kickFd = null;
  }

  /** A started, enabled ring gets a queue; the device is activated with the first one. */
  #startRing(index: number): void {
    const ring = this.#rings[index]!;
    if (!ring.started || !ring.enabled || ring.queue) return;
    if (!this.#active) {
      this.#activateIfReady();
      return;
    }
    if (!this.#buildQueue(index)) return;
    this.#device.processQueue(index);
  }

  /** Build ring `index`'s SplitQueue over the current memory; false when it cannot run. */
  #buildQueue(index: number): boolean {
    const ring = this.#rings[index]!;
    const memory = this.#memory;
    if (!memory || ring.desc === null) {
      this.#warn(`queue ${index} started before its memory table or address`);
      return false;
    }
    const geometry = { size: ring.size, descTable: ring.desc, availRing: ring.avail, usedRing: ring.used };
    // SET_VRING_NUM already held the size to a power of two up to MAX_QUEUE_SIZE.
    const problem = queueProblem(memory, geometry, MAX_QUEUE_SIZE);
    if (problem) {
      this.#warn(`queue ${index}: ${problem}`);
      this.#signalError(ring);
      return false;
    }
    // vhost-user passes only the avail index; the used index is what the
    // driver last saw in the used ring.
    const usedIdx = memory.readU16(ring.used + 2);
    ring.queue = splitQueueFor(memory, geometry, this.#features, { availIdx: ring.base, usedIdx });
    this.#queues[index] = ring.queue;
    return true;
  }

  #activateIfReady(): void {
    if (this.#active || !this.#memory) return;
    const ready = this.#rings.map((r, i) => (r.started && r.enabled ? i : -1)).filter((i) => i >= 0);
    const built = ready.filter((i) => this.#buildQueue(i));
    if (built.length === 0) return;
    const context: ActivateContext = {
      memory: this.#memory,
      queues: this.#queues,
      driverFeatures: this.#features,
      interrupt: (q) => this.#interrupt(q),
      needsReset: (reason) => {
        this.#warn(`device needs reset: ${reason}`);
        for (const ring of this.#rings) this.#signalError(ring);
      },
      // A throttled queue's timer fired: process it from the loop, not the timer.
      wake: (q) =>
        setImmediate(() => {
          if (this.#active && this.#rings[q]?.queue) this.#device.processQueue(q);
        }),
      settled: () => {
        for (const wake of this.#settledWaiters.splice(0)) wake();
      },
    };
    this.#device.activate(context);
    this.#active = true;
    this.#everActive = true;
    // QEMU answers the guest's config reads from its own copy, which keeps
    // what the driver last wrote (the writeback field) across a device reset,
    // while activate() restores the device's defaults. Replay the session's
    // config writes so the device does what the guest was told: a guest
    // that sees write-through after re-probing sends no FLUSH.
    for (const { offset, data } of this.#configWrites) this.#applyConfigWrite(offset, data);
    this.#log(`device active on queue(s) ${built.join(', ')}`);
    // Chains may already be waiting (a restart resumes at SET_VRING_BASE).
    for (const i of built) this.#device.processQueue(i);
  }

  #kicked(index: number): void {
    const ring = this.#rings[index]!;
    if (ring.kickFd === null) return;
    // Drain the eventfd counter (non-blocking: EAGAIN means already drained).
    // An eventfd always reads 8 bytes; anything else (end of file, an error)
    // is an fd that stays readable for ever and would spin the loop: the
    // front-end handed over something that is not a kick eventfd.
    let problem: string | null = null;
    try {
      const got = readSync(ring.kickFd, this.#scratch, 0, 8, null);
      if (got !== 8) problem = `read ${got} bytes`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') problem = (err as Error).message;
    }
    if (problem !== null) {
      this.#warn(`kick ${index}: ${problem}; not an eventfd`);
      this.#unwatchKick(ring);
      this.#endConnection(`queue ${index}'s kick fd is broken`);
      return;
    }
    if (this.#active && ring.queue && ring.enabled) this.#device.processQueue(index);
  }

  #interrupt(index: number): void {
    const fd = this.#rings[index]?.callFd;
    if (fd === null || fd === undefined) return;
    try {
      writeSync(fd, EVENTFD_ONE);
    } catch (err) {
      this.#warn(`call ${index}: ${(err as Error).message}`);
    }
  }

  #signalError(ring: Ring): void {
    if (ring.errFd === null) return;
    try {
      writeSync(ring.errFd, EVENTFD_ONE);
    } catch {
      // The front-end is going away.
    }
  }

  /** GET_VRING_BASE: stop the ring, let its requests finish, return the next avail index. */
  async #stopRing(index: number): Promise<number> {
    const ring = this.#ring(index);
    this.#unwatchKick(ring);
    ring.started = false;
    const queue = ring.queue;
    if (queue) {
      const stillRunning = this.#rings.some((r) => r.queue && r !== ring);
      if (!stillRunning) {
        await this.#deactivate();
      } else {
        await this.#drain();
        ring.base = queue.lastAvailIdx;
        ring.queue = null;
        this.#queues[index] = null;
      }
    }
    return ring.base;
  }

  /** Wait until the device has no request in flight (bounded). */
  async #drain(): Promise<void> {
    const deadline = Date.now() + DRAIN_TIMEOUT_MS;
    while (this.#device.inFlight > 0 && Date.now() < deadline) {
      // `settled` wakes this early; the timer bounds the wait either way.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#settledWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    if (this.#device.inFlight > 0) this.#warn(`${this.#device.inFlight} request(s) still in flight; resetting`);
  }

  /** Finish in-flight work, reset the device, and remember each ring's indices. */
  async #deactivate(): Promise<void> {
    if (!this.#active) return;
    await this.#drain();
    await this.#device.reset();
    this.#active = false;
    this.#rings.forEach((ring, i) => {
      if (ring.queue) ring.base = ring.queue.lastAvailIdx;
      ring.queue = null;
      this.#queues[i] = null;
    });
  }

  async #resetRings(): Promise<void> {
    await this.#deactivate();
    for (const ring of this.#rings) {
      this.#unwatchKick(ring);
      if (ring.callFd !== null) this.#addon.close(ring.callFd);
      if (ring.errFd !== null) this.#addon.close(ring.errFd);
    }
    this.#rings = this.#rings.map(() => newRing());
  }

  async #disconnect(why: string): Promise<void> {
    if (this.#connFd === null) return;
    this.#log(`disconnected: ${why}`);
    if (this.#sawMessage && !this.#everActive) {
      this.#warn(
        'the front-end left without starting the device (no driver in the guest, ' +
          'or QEMU wanted more queues than the device has: use num-queues=1)',
      );
    }
    if (this.#connWatcher) this.#addon.unwatch(this.#connWatcher);
    this.#connWatcher = null;
    await this.#resetRings();
    this.#addon.close(this.#connFd);
    this.#connFd = null;
    if (this.#backendFd !== null) this.#addon.close(this.#backendFd);
    this.#backendFd = null;
    this.#features = 0n;
    this.#protocolFeatures = 0n;
    this.#protocolAcked = false;
    this.#configWrites = [];
    for (const fd of this.#rx.fds) this.#addon.close(fd);
    this.#rx = newReceiveState();
    this.#regions = [];
    this.#memory = null;
    this.#unmap(this.#mappings);
    this.#mappings = [];
    this.#ending = false;
    if (this.#sawMessage) for (const wake of this.#sessionEndWaiters.splice(0)) wake();
    for (const wake of this.#idleWaiters.splice(0)) wake();
    this.#sawMessage = false;
    this.#everActive = false;
  }

  /** Tell the front-end the config space changed (resize), over the backend channel. */
  #sendConfigChange(): void {
    const fd = this.#backendFd;
    if (fd === null || !hasFeature(this.#protocolFeatures, ProtocolFeature.BackendReq)) return;
    try {
      this.#addon.sendmsg(fd, encodeMessage(BackendRequest.ConfigChange, HeaderFlag.Version), undefined, true);
    } catch (err) {
      this.#warn(`config change notification failed: ${(err as Error).message}`);
    }
  }
}

interface ReceiveState {
  header: Uint8Array;
  headerFill: number;
  /** Allocated once the header is complete. */
  payload: Uint8Array | null;
  payloadFill: number;
  fds: number[];
}

function newReceiveState(): ReceiveState {
  return { header: new Uint8Array(HEADER_SIZE), headerFill: 0, payload: null, payloadFill: 0, fds: [] };
}

function newRing(): Ring {
  return {
    size: 0,
    desc: null,
    avail: 0,
    used: 0,
    base: 0,
    kickFd: null,
    callFd: null,
    errFd: null,
    kickWatcher: null,
    enabled: false,
    started: false,
    queue: null,
  };
}

/** Take the message's first fd (the handler now owns it). */
function takeFd(fds: number[]): number | null {
  const index = fds.findIndex((fd) => fd >= 0);
  if (index < 0) return null;
  const fd = fds[index]!;
  fds[index] = -1;
  return fd;
}

/** A socket error that means the front-end has gone (reset, or closed before a reply): a disconnect, not a fault. */
function peerGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ECONNRESET' || code === 'EPIPE';
}
