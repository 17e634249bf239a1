// The device worker: runs VirtioBlkDevice behind the shared register file for
// an emulator on another thread (see worker-host.ts for the page side and
// protocol.ts for what crosses).
//
// The loop: poll the register file, publish statistics, then wait for the
// emulator to ring the doorbell: first polling it for an adaptive window
// (halt-poll.ts; a doorbell that comes soon costs no wake-up), then asleep in
// Atomics.wait. Blocking keeps the wake-up at one Atomics round trip (~33 µs,
// DESIGN.md) instead of adding an event-loop hop, but while blocked the
// worker runs no tasks, timers or promise callbacks. So:
// - the device gets timers (`LoopTimers`) that this loop runs itself, and the
//   sleep is bounded by the next deadline (throttled queues retry on time);
// - while a request waits on a promise (async backends), the loop sleeps with
//   Atomics.waitAsync instead, letting the promise settle;
// - control messages are announced through the control word plus a doorbell
//   bump; the loop then yields to take them (protocol.ts);
// - a microtask turn after every poll lets a reset's completion run;
// - a disk in a rate-limit group checks the group for limits changed on
//   another thread on every turn, and at least every 50 ms.

import type { BlockBackend, StorageError } from '../../backends/backend.ts';
import { VirtioBlkDevice, type Timers } from '../../block/device.ts';
import { DiskLimits, type RateLimiterConfig } from '../../limiter/index.ts';
import { GuestMemory } from '../../virtio/memory.ts';
import { MmioDevice, MmioWord, type MmioState } from '../../virtio/mmio/mmio.ts';
import { HaltPoller } from './halt-poll.ts';
import { openBackend } from './open-backend.ts';
import { waitAsync } from './wait-async.ts';
import { emptyStats, gatherStats, writeStats, type DiskStats } from './stats.ts';
import { ControlWord, toWireError, type HostMessage, type HostRequest } from './worker-protocol.ts';

type StartRequest = Extract<HostRequest, { type: 'start' }>;

const scope = globalThis as unknown as DedicatedWorkerGlobalScope;

function send(message: HostMessage): void {
  scope.postMessage(message);
}

/** Timers the loop runs itself, since a worker blocked in Atomics.wait runs no setTimeout callbacks. */
class LoopTimers implements Timers {
  /** Pending callbacks by handle; a Map keeps insertion order for equal deadlines. */
  readonly #pending = new Map<number, { at: number; fn: () => void }>();
  #next = 1;

  setTimeout(fn: () => void, ms: number): unknown {
    const handle = this.#next++;
    this.#pending.set(handle, { at: performance.now() + ms, fn });
    return handle;
  }

  clearTimeout(handle: unknown): void {
    this.#pending.delete(handle as number);
  }

  /** Run every callback whose deadline passed. */
  runDue(): void {
    const now = performance.now();
    for (const [handle, t] of this.#pending) {
      if (t.at > now) continue;
      this.#pending.delete(handle);
      t.fn();
    }
  }

  /** Milliseconds until the next deadline; Infinity when none. */
  msUntilNext(): number {
    let at = Infinity;
    for (const t of this.#pending.values()) at = Math.min(at, t.at);
    return Math.max(0, at - performance.now());
  }
}

/** How often a disk in a rate-limit group looks for limit changes made elsewhere. */
const GROUP_POLL_MS = 50;

/** One served disk. The worker serves exactly one; `close` ends it. */
class Session {
  readonly #state: MmioState;
  readonly #control: Int32Array;
  readonly #stats: Float64Array;
  readonly #backend: BlockBackend;
  readonly #device: VirtioBlkDevice;
  readonly #transport: MmioDevice;
  readonly #timers = new LoopTimers();
  /** The disk's own rate limit (updated in place) and the group it shares, if any. */
  readonly #limits: DiskLimits;
  /** Control messages received and not yet handled, oldest first. */
  readonly #inbox: HostRequest[] = [];
  /** How many announced messages were handled; compared with ControlWord.Posted. */
  #handled = 0;
  #messageArrived: (() => void) | null = null;
  #closed = false;
  /** Reused for every statistics publish. */
  readonly #statsScratch: DiskStats = emptyStats();
  /** Polls the doorbell a while before sleeping (adaptive, up to spinMicros). */
  readonly #poller: HaltPoller;

  constructor(start: StartRequest, backend: BlockBackend) {
    this.#state = start.state;
    this.#control = start.control;
    this.#stats = start.stats;
    this.#poller = new HaltPoller({ maxMicros: start.spinMicros });
    this.#backend = backend;
    const { rateLimit, rateLimitGroup, ...device } = start.device;
    this.#limits = new DiskLimits(rateLimit, rateLimitGroup);
    this.#device = new VirtioBlkDevice(backend, {
      ...device,
      limiter: this.#limits.current,
      timers: this.#timers,
      onStorageError: (error: StorageError) => send({ type: 'storage-error', error: toWireError(error) }),
    });
    this.#transport = new MmioDevice(start.state, this.#device, new GuestMemory(start.memory));
    this.#transport.onNeedsReset = (reason) => send({ type: 'needs-reset', reason });
    // The transport's wake-ups (throttle retries) ring the doorbell already;
    // the loop sees the changed word, so nothing else is needed here.
    this.#publishStats();
  }

  /** A control message arrived (the start message is not one). */
  receive(request: HostRequest): void {
    this.#inbox.push(request);
    this.#messageArrived?.();
  }

  async run(): Promise<void> {
    const state = this.#state;
    while (!this.#closed) {
      const bell = Atomics.load(state, MmioWord.Doorbell);
      // A group's limits may have changed on another thread: its listeners
      // (the device's throttle retry) run from here.
      this.#limits.group?.poll();
      this.#timers.runDue();
      this.#transport.poll();
      this.#publishStats();
      // A reset's completion is a promise callback: give it its turn.
      await Promise.resolve();
      if (Atomics.load(this.#control, ControlWord.Posted) !== this.#handled) {
        await this.#handleMessages();
        continue;
      }
      // With a group, look at it at least every GROUP_POLL_MS: nothing rings
      // this worker's doorbell when another thread changes the group's limits.
      const timeout = this.#limits.group ? Math.min(GROUP_POLL_MS, this.#timers.msUntilNext()) : this.#timers.msUntilNext();
      if (this.#device.inFlight > 0) {
        // Requests wait on promises: sleep without blocking the event loop.
        await waitAsync(state, MmioWord.Doorbell, bell, Math.min(timeout, 10));
      } else {
        this.#poller.wait(state, MmioWord.Doorbell, bell, timeout);
      }
    }
  }

  async #handleMessages(): Promise<void> {
    while (this.#handled !== Atomics.load(this.#control, ControlWord.Posted)) {
      // The message was posted before the word was bumped: it is queued and
      // arrives once we yield.
      if (this.#inbox.length === 0) await new Promise<void>((resolve) => (this.#messageArrived = resolve));
      this.#messageArrived = null;
      const request = this.#inbox.shift();
      if (!request) continue;
      this.#handled++;
      try {
        send({ type: 'reply', id: request.id, ok: true, value: await this.#handle(request) });
      } catch (err) {
        send({ type: 'reply', id: request.id, ok: false, error: toWireError(err) });
      }
    }
  }

  async #handle(request: HostRequest): Promise<unknown> {
    switch (request.type) {
      case 'start':
        throw new Error('this worker already serves a disk');
      case 'resize':
        // The device raises the config interrupt and bumps ConfigGeneration.
        await this.#device.resize(request.sizeBytes);
        this.#publishStats();
        return this.#backend.size;
      case 'flush':
        await this.#backend.flush();
        return undefined;
      case 'set-rate-limit':
        this.#setRateLimit(request.config);
        return undefined;
      case 'close':
        this.#closed = true;
        // Drop in-flight work first: nothing touches guest memory after this.
        await this.#device.reset();
        await this.#backend.close();
        return undefined;
    }
  }

  #setRateLimit(config: RateLimiterConfig | null): void {
    this.#limits.set(config);
    // Also retries throttled queues at once when the limit went away.
    this.#device.setLimiter(this.#limits.current);
  }

  #publishStats(): void {
    writeStats(this.#stats, gatherStats(this.#statsScratch, this.#device, this.#transport));
  }
}

let session: Session | null = null;

scope.onmessage = async (event: MessageEvent<HostRequest>) => {
  const request = event.data;
  if (session) {
    session.receive(request);
    return;
  }
  if (request.type !== 'start') {
    send({ type: 'reply', id: request.id, ok: false, error: { name: 'Error', message: 'the disk is not started' } });
    return;
  }
  let backend: BlockBackend | undefined;
  try {
    backend = await openBackend(request.backend);
    session = new Session(request, backend);
  } catch (err) {
    // Let go of what was opened (an OPFS disk's lock) before reporting.
    await Promise.resolve(backend?.close()).catch(() => undefined);
    send({ type: 'reply', id: request.id, ok: false, error: toWireError(err) });
    return;
  }
  send({ type: 'reply', id: request.id, ok: true });
  await session.run();
  scope.close();
};
