// The virtqueues as vhost-user sets them up: per ring the size, addresses and
// base from SET_VRING_*, three eventfds the front-end also holds (kick: the
// guest notified; call: we interrupt the guest; err: we report a broken ring),
// and the SplitQueue built over them with the same `queueProblem` and
// `splitQueueFor` every transport uses.
//
// This file holds the state and does the fd work; when a ring starts or stops,
// and so when the device is activated or reset, is decided in host.ts. Every
// eventfd is made non-blocking, so that neither a drained counter (kick) nor a
// full one (call, err) can block the loop.
//
// Imports: addon.ts (types), protocol.ts, src/virtio (memory, queue, transport/queues).

import { readSync, writeSync } from 'node:fs';
import type { GuestMemory } from '../../virtio/memory.ts';
import { MAX_QUEUE_SIZE, type SplitQueue } from '../../virtio/queue.ts';
import { queueProblem, splitQueueFor } from '../../virtio/transport/queues.ts';
import type { VhostUserAddon, Watcher } from './addon.ts';
import { decodeU64, ProtocolError, takeFd, VRING_INDEX_MASK, VRING_NOFD_MASK, VRING_RESERVED_MASK } from './protocol.ts';

export interface Ring {
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

const EVENTFD_ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

export class Rings {
  readonly #addon: VhostUserAddon;
  readonly #warn: (line: string) => void;
  #rings: Ring[];
  /** The array handed to the device in `activate`; entry i is ring i's queue while it runs. */
  readonly queues: (SplitQueue | null)[];
  readonly #scratch = new Uint8Array(8);

  constructor(count: number, addon: VhostUserAddon, warn: (line: string) => void) {
    this.#addon = addon;
    this.#warn = warn;
    this.#rings = Array.from({ length: count }, () => newRing());
    this.queues = this.#rings.map(() => null);
  }

  /** Every ring, by index. */
  get all(): readonly Ring[] {
    return this.#rings;
  }

  /** Ring `index`; a ProtocolError when the device has no such queue. */
  at(index: number): Ring {
    const ring = this.#rings[index];
    if (!ring) throw new ProtocolError(`no queue ${index} (the device has ${this.#rings.length})`);
    return ring;
  }

  /**
   * The ring and fd of a SET_VRING_KICK/CALL/ERR payload (vhost-user.rst: bits
   * 0–7 the index, bit 8 "no fd", the rest zero). The fd, taken from `fds`,
   * is made non-blocking.
   */
  fdMessage(payload: Uint8Array, fds: number[]): { ring: Ring; index: number; fd: number | null } {
    const value = decodeU64(payload);
    if (value & VRING_RESERVED_MASK) throw new ProtocolError(`reserved bits set in 0x${value.toString(16)}`);
    const index = Number(value & VRING_INDEX_MASK);
    const ring = this.at(index);
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

  /** SET_VRING_KICK: watch `fd` (none for NOFD), calling `onKick` when it fires, and mark the ring started. */
  setKick(ring: Ring, fd: number | null, onKick: () => void): void {
    this.unwatchKick(ring);
    if (fd !== null) {
      try {
        ring.kickWatcher = this.#addon.watch(fd, onKick);
      } catch (err) {
        // Not pollable (epoll refuses regular files): refused, and not kept.
        this.#addon.close(fd);
        throw err;
      }
      ring.kickFd = fd;
    }
    ring.started = true;
  }

  unwatchKick(ring: Ring): void {
    if (ring.kickWatcher) this.#addon.unwatch(ring.kickWatcher);
    ring.kickWatcher = null;
    if (ring.kickFd !== null) this.#addon.close(ring.kickFd);
    ring.kickFd = null;
  }

  /**
   * Drain ring `index`'s kick counter (non-blocking: EAGAIN means already
   * drained). False, with the kick fd dropped, when it is not an eventfd: an
   * eventfd always reads 8 bytes, and anything else (end of file, an error)
   * is an fd that stays readable for ever and would spin the loop.
   */
  drainKick(index: number, ring: Ring, kickFd: number): boolean {
    let problem: string | null = null;
    try {
      const got = readSync(kickFd, this.#scratch, 0, 8, null);
      if (got !== 8) problem = `read ${got} bytes`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') problem = (err as Error).message;
    }
    if (problem === null) return true;
    this.#warn(`kick ${index}: ${problem}; not an eventfd`);
    this.unwatchKick(ring);
    return false;
  }

  /** Used buffers for the guest on queue `index`: signal its call fd. */
  interrupt(index: number): void {
    const fd = this.#rings[index]?.callFd;
    if (fd === null || fd === undefined) return;
    try {
      writeSync(fd, EVENTFD_ONE);
    } catch (err) {
      this.#warn(`call ${index}: ${(err as Error).message}`);
    }
  }

  /** Tell the front-end the ring is broken (its err fd), if it gave one. */
  signalError(ring: Ring): void {
    if (ring.errFd === null) return;
    try {
      writeSync(ring.errFd, EVENTFD_ONE);
    } catch {
      // The front-end is going away.
    }
  }

  /** Build ring `index`'s SplitQueue over `memory`; false when it cannot run. */
  build(index: number, memory: GuestMemory | null, driverFeatures: bigint): boolean {
    const ring = this.#rings[index]!;
    if (!memory || ring.desc === null) {
      this.#warn(`queue ${index} started before its memory table or address`);
      return false;
    }
    const geometry = { size: ring.size, descTable: ring.desc, availRing: ring.avail, usedRing: ring.used };
    // SET_VRING_NUM already held the size to a power of two up to MAX_QUEUE_SIZE.
    const problem = queueProblem(memory, geometry, MAX_QUEUE_SIZE);
    if (problem) {
      this.#warn(`queue ${index}: ${problem}`);
      this.signalError(ring);
      return false;
    }
    // vhost-user passes only the avail index; the used index is what the
    // driver last saw in the used ring.
    const usedIdx = memory.readU16(ring.used + 2);
    ring.queue = splitQueueFor(memory, geometry, driverFeatures, { availIdx: ring.base, usedIdx });
    this.queues[index] = ring.queue;
    return true;
  }

  /** Close every ring's fds and start over with fresh rings (the queues must already be gone). */
  reset(): void {
    for (const ring of this.#rings) {
      this.unwatchKick(ring);
      if (ring.callFd !== null) this.#addon.close(ring.callFd);
      if (ring.errFd !== null) this.#addon.close(ring.errFd);
    }
    this.#rings = this.#rings.map(() => newRing());
  }
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
