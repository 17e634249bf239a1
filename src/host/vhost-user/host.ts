// A vhost-user back-end in Node: QEMU (the front-end) hands this process the
// guest's RAM (memfd fds, mapped here with the addon) and the virtqueues (ring
// addresses, a kick eventfd and a call eventfd per queue), and the project's
// own device core serves them. The same SplitQueue and VirtioDevice code that
// runs in the browser is what the guest's driver talks to.
//
// This file is the dispatch of requests to their handlers and the device's
// lifecycle; framing and replies are connection.ts's, the guest's RAM
// memory-table.ts's, per-ring state and its eventfds rings.ts's.
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
// that will not come.
//
// Ring lifecycle (vhost-user.rst "Starting and stopping rings"): a ring starts
// when it has an address and a kick fd, is enabled by SET_VRING_ENABLE (or at
// once when protocol features were not negotiated), and stops at
// GET_VRING_BASE. The device is activated when the first ring starts and reset
// when the last one stops.
//
// Imports: the files beside it and src/virtio (device, queue).

import { unlinkSync } from 'node:fs';
import type { VirtioDevice, ActivateContext } from '../../virtio/device.ts';
import { hasFeature } from '../../virtio/device.ts';
import { MAX_QUEUE_SIZE, isQueueSize } from '../../virtio/queue.ts';
import { loadAddon, type VhostUserAddon, type Watcher } from './addon.ts';
import { Connection, type Message } from './connection.ts';
import { MAX_MAPPING_BYTES, MemoryTable, toGuestAddress } from './memory-table.ts';
import {
  BackendRequest,
  decodeConfig,
  decodeU64,
  decodeVringAddr,
  decodeVringState,
  encodeConfig,
  encodeMessage,
  encodeU64,
  encodeVringState,
  F_PROTOCOL_FEATURES,
  fdsCarried,
  HeaderFlag,
  ProtocolError,
  ProtocolFeature,
  repliesItself,
  Request,
  requestName,
  takeFd,
} from './protocol.ts';
import { Rings } from './rings.ts';

/** Protocol features this back-end offers. */
export const OFFERED_PROTOCOL_FEATURES =
  (1n << ProtocolFeature.Mq) |
  (1n << ProtocolFeature.ReplyAck) |
  (1n << ProtocolFeature.BackendReq) |
  (1n << ProtocolFeature.Config) |
  (1n << ProtocolFeature.ResetDevice);

/** How long GET_VRING_BASE waits for in-flight requests before resetting anyway. */
const DRAIN_TIMEOUT_MS = 10_000;

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
  /**
   * A front-end that sends no first message, or begins one and does not finish
   * it, within this many milliseconds is disconnected, so it cannot hold the
   * single connection slot (default MESSAGE_TIMEOUT_MS, 10 s).
   */
  messageTimeoutMs?: number;
}

export class VhostUserHost {
  readonly socketPath: string;
  readonly #device: VirtioDevice;
  readonly #addon: VhostUserAddon;
  readonly #log: (line: string) => void;
  readonly #warn: (line: string) => void;
  readonly #listenFd: number;
  readonly #maxMappingBytes: number;
  readonly #messageTimeoutMs: number | undefined;
  #listenWatcher: Watcher | null = null;
  #closed = false;
  #connectionWaiters: Array<() => void> = [];
  #sessionEndWaiters: Array<() => void> = [];
  #idleWaiters: Array<() => void> = [];
  #settledWaiters: Array<() => void> = [];

  // Per-connection state, cleared by #disconnect.
  #connection: Connection | null = null;
  /** The handler of the current message sent its reply. */
  #replied = false;
  #backendFd: number | null = null;
  #features = 0n;
  #protocolFeatures = 0n;
  /** The front-end acked F_PROTOCOL_FEATURES: rings then start disabled (vhost-user.rst). */
  #protocolAcked = false;
  /** The guest's RAM as last sent; ring addresses are translated through it. */
  #table: MemoryTable | null = null;
  readonly #rings: Rings;
  #active = false;
  /** SET_CONFIG writes of this session, replayed after each activation. */
  #configWrites: Array<{ offset: number; data: Uint8Array }> = [];
  /** The device was activated during the current connection. */
  #everActive = false;

  private constructor(options: VhostUserHostOptions, addon: VhostUserAddon, listenFd: number) {
    this.socketPath = options.socketPath;
    this.#device = options.device;
    this.#addon = addon;
    this.#log = options.log ?? (() => {});
    this.#warn = options.warn ?? this.#log;
    this.#listenFd = listenFd;
    this.#maxMappingBytes = options.maxMappingBytes ?? MAX_MAPPING_BYTES;
    this.#messageTimeoutMs = options.messageTimeoutMs;
    this.#rings = new Rings(this.#device.queueCount, addon, this.#warn);
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
    if (this.#connection !== null) return Promise.resolve();
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
    if (this.#connection === null) return Promise.resolve();
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
    await this.#connection?.settled();
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
    if (this.#connection !== null) {
      this.#warn('refusing a second front-end while one is connected');
      this.#addon.close(fd);
      return;
    }
    this.#connection = new Connection(this.#addon, fd, {
      message: (message) => this.#handle(message),
      ended: (why) => this.#disconnect(why),
      warn: this.#warn,
    }, this.#messageTimeoutMs);
    this.#log('front-end connected');
    for (const wake of this.#connectionWaiters.splice(0)) wake();
  }

  async #handle({ request, flags, payload, fds }: Message): Promise<void> {
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
      this.#connection?.end(`${name} failed and the front-end asked for no reply`);
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
    this.#connection?.end(`${name} could not be answered`);
  }

  #reply(request: number, payload: Uint8Array): void {
    if (this.#connection?.reply(request, payload)) this.#replied = true;
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
        const ring = this.#rings.at(index);
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
        const ring = this.#rings.at(addr.index);
        ring.desc = toGuestAddress(this.#table, addr.descUser);
        ring.avail = toGuestAddress(this.#table, addr.availUser);
        ring.used = toGuestAddress(this.#table, addr.usedUser);
        return true;
      }
      case Request.SetVringBase: {
        const { index, num } = decodeVringState(payload);
        const ring = this.#rings.at(index);
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
        const { ring, fd } = this.#rings.fdMessage(payload, fds);
        const key = request === Request.SetVringCall ? 'callFd' : 'errFd';
        if (ring[key] !== null) this.#addon.close(ring[key]);
        ring[key] = fd;
        return true;
      }
      case Request.SetVringEnable: {
        const { index, num } = decodeVringState(payload);
        const ring = this.#rings.at(index);
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

  async #setMemTable(payload: Uint8Array, fds: number[]): Promise<boolean> {
    // The mappings hold the memory; the fds are no longer needed (closed by #handle).
    const table = MemoryTable.map(this.#addon, payload, fds, this.#maxMappingBytes);
    const wasActive = this.#active;
    // A new table while rings run: requests in flight finish against the old
    // mapping, then the queues are rebuilt over the new one at the same indices.
    if (wasActive) await this.#deactivate();
    this.#table?.unmap();
    this.#table = table;
    this.#log(`memory: ${table.describe()}`);
    if (wasActive) this.#activateIfReady();
    return true;
  }

  #setKick(payload: Uint8Array, fds: number[]): boolean {
    const { ring, index, fd } = this.#rings.fdMessage(payload, fds);
    this.#rings.setKick(ring, fd, () => this.#kicked(index));
    // Without protocol features a ring is enabled as soon as it starts.
    if (!this.#protocolAcked) ring.enabled = true;
    if (ring.enabled) this.#startRing(index);
    return true;
  }

  /** A started, enabled ring gets a queue; the device is activated with the first one. */
  #startRing(index: number): void {
    const ring = this.#rings.all[index]!;
    if (!ring.started || !ring.enabled || ring.queue) return;
    if (!this.#active) {
      this.#activateIfReady();
      return;
    }
    if (!this.#buildQueue(index)) return;
    this.#device.processQueue(index);
  }

  #buildQueue(index: number): boolean {
    return this.#rings.build(index, this.#table?.memory ?? null, this.#features);
  }

  #activateIfReady(): void {
    const memory = this.#table?.memory;
    if (this.#active || !memory) return;
    const ready = this.#rings.all.map((r, i) => (r.started && r.enabled ? i : -1)).filter((i) => i >= 0);
    const built = ready.filter((i) => this.#buildQueue(i));
    if (built.length === 0) return;
    const context: ActivateContext = {
      memory,
      queues: this.#rings.queues,
      driverFeatures: this.#features,
      interrupt: (q) => this.#rings.interrupt(q),
      needsReset: (reason) => {
        this.#warn(`device needs reset: ${reason}`);
        for (const ring of this.#rings.all) this.#rings.signalError(ring);
      },
      // A throttled queue's timer fired: process it from the loop, not the timer.
      wake: (q) =>
        setImmediate(() => {
          if (this.#active && this.#rings.all[q]?.queue) this.#device.processQueue(q);
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
    const ring = this.#rings.all[index]!;
    if (ring.kickFd === null) return;
    if (!this.#rings.drainKick(index, ring, ring.kickFd)) {
      this.#connection?.end(`queue ${index}'s kick fd is broken`);
      return;
    }
    if (this.#active && ring.queue && ring.enabled) this.#device.processQueue(index);
  }

  /** GET_VRING_BASE: stop the ring, let its requests finish, return the next avail index. */
  async #stopRing(index: number): Promise<number> {
    const ring = this.#rings.at(index);
    this.#rings.unwatchKick(ring);
    ring.started = false;
    const queue = ring.queue;
    if (queue) {
      const stillRunning = this.#rings.all.some((r) => r.queue && r !== ring);
      if (!stillRunning) {
        await this.#deactivate();
      } else {
        await this.#drain();
        ring.base = queue.lastAvailIdx;
        ring.queue = null;
        this.#rings.queues[index] = null;
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
    this.#rings.all.forEach((ring, i) => {
      if (ring.queue) ring.base = ring.queue.lastAvailIdx;
      ring.queue = null;
      this.#rings.queues[i] = null;
    });
  }

  async #resetRings(): Promise<void> {
    await this.#deactivate();
    this.#rings.reset();
  }

  async #disconnect(why: string): Promise<void> {
    const connection = this.#connection;
    if (connection === null) return;
    this.#log(`disconnected: ${why}`);
    if (connection.sawMessage && !this.#everActive) {
      this.#warn(
        'the front-end left without starting the device (no driver in the guest, ' +
          'or QEMU wanted more queues than the device has: use num-queues=1)',
      );
    }
    connection.stopReading();
    await this.#resetRings();
    connection.close();
    this.#connection = null;
    if (this.#backendFd !== null) this.#addon.close(this.#backendFd);
    this.#backendFd = null;
    this.#features = 0n;
    this.#protocolFeatures = 0n;
    this.#protocolAcked = false;
    this.#configWrites = [];
    this.#table?.unmap();
    this.#table = null;
    if (connection.sawMessage) for (const wake of this.#sessionEndWaiters.splice(0)) wake();
    for (const wake of this.#idleWaiters.splice(0)) wake();
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
