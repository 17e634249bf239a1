// One front-end connection: framed vhost-user messages in (header, payload,
// fds as SCM_RIGHTS), replies out. What a message means is not known here;
// the host hands over a handler.
//
// Nothing a peer sends blocks the event loop: reads and replies never wait
// (MSG_DONTWAIT both ways), so the peer cannot stop the loop by sending half a
// message or by reading nothing. A message may arrive in pieces; the parts read
// so far wait in a receive buffer for the next readable event. Complete
// messages are handled strictly in order, one at a time (a handler may be
// asynchronous, and later messages wait); past MAX_QUEUED_MESSAGES waiting,
// the socket is not read until the queue drains. Ending the connection is
// queued behind the messages before it, and messages behind it take no effect.
//
// The host serves one front-end at a time, so a peer could hold the only slot
// by connecting and sending nothing, or half a message and nothing more. A
// deadline covers both: the first message must be complete, and every message
// once begun must be finished, within `messageTimeoutMs` (QEMU sends each
// message in one write, right after it connects). Idle time between whole
// messages is not limited: a running guest's front-end is silent for hours.
//
// Imports: addon.ts (types) and protocol.ts only.

import type { VhostUserAddon, Watcher } from './addon.ts';
import { decodeHeader, encodeReply, HEADER_SIZE, HeaderFlag, MAX_PAYLOAD, ProtocolError, requestName } from './protocol.ts';

/**
 * Messages received but not yet handled, at most. Past it the socket is not
 * read until the queue drains (a slow GET_VRING_BASE must not let a flood of
 * messages pile up in memory); QEMU itself waits for each reply.
 */
const MAX_QUEUED_MESSAGES = 64;

/** One complete message. The handler owns `fds`: it keeps some (replacing them with −1) and closes the rest. */
export interface Message {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: number[];
}

/** Default for `messageTimeoutMs`: generous for a front-end under load, short enough to free the slot. */
export const MESSAGE_TIMEOUT_MS = 10_000;

export interface ConnectionHandlers {
  /** Handle one message; the next one waits until this resolves. */
  message(message: Message): Promise<void>;
  /** The connection ended: runs after every message queued before it. Must call `close`. */
  ended(why: string): Promise<void>;
  warn(line: string): void;
}

export class Connection {
  readonly #addon: VhostUserAddon;
  readonly #fd: number;
  readonly #handlers: ConnectionHandlers;
  /** Null while reading is paused (a full queue, or the connection ending). */
  #watcher: Watcher | null;
  /** Being torn down: read nothing more, and messages still queued take no effect. */
  #ending = false;
  /** The socket is closed (`close`). */
  #closed = false;
  /** Steps enqueued and not yet run (see MAX_QUEUED_MESSAGES). */
  #queued = 0;
  /** Steps run one after another, in arrival order. */
  #pending: Promise<void> = Promise.resolve();
  /** A message being received. */
  #rx = newReceiveState();
  #sawMessage = false;
  readonly #messageTimeoutMs: number;
  /** Armed while the first message, or a begun one, is incomplete. */
  #deadline: ReturnType<typeof setTimeout> | null = null;

  constructor(addon: VhostUserAddon, fd: number, handlers: ConnectionHandlers, messageTimeoutMs = MESSAGE_TIMEOUT_MS) {
    this.#addon = addon;
    this.#fd = fd;
    this.#handlers = handlers;
    this.#messageTimeoutMs = messageTimeoutMs;
    this.#watcher = addon.watch(fd, () => this.#read());
    this.#arm();
  }

  /** The peer sent at least one complete message (a liveness probe sends none). */
  get sawMessage(): boolean {
    return this.#sawMessage;
  }

  /** Ending or closed: nothing more is read, replied or handled. */
  get ending(): boolean {
    return this.#ending || this.#closed;
  }

  /** Resolves once every step queued so far has run. */
  settled(): Promise<void> {
    return this.#pending;
  }

  /** Stop reading and queue `handlers.ended(why)` behind the messages already received. */
  end(why: string): void {
    if (this.ending) return;
    this.#ending = true;
    this.stopReading();
    this.#enqueue(() => this.#handlers.ended(why));
  }

  /**
   * Send a reply. False when the connection is ending (nothing is sent). A peer
   * that does not read it (EAGAIN) or is gone is disconnected.
   */
  reply(request: number, payload: Uint8Array): boolean {
    if (this.ending) return false;
    try {
      this.#addon.sendmsg(this.#fd, encodeReply(request, payload), undefined, true);
    } catch (err) {
      if (peerGone(err)) {
        this.end('front-end closed the connection before its reply');
        return true;
      }
      this.#handlers.warn(`reply to ${requestName[request] ?? request}: ${(err as Error).message}`);
      this.end('the front-end does not take its replies');
    }
    return true;
  }

  stopReading(): void {
    if (this.#watcher) this.#addon.unwatch(this.#watcher);
    this.#watcher = null;
    this.#disarm();
  }

  /** Start the message deadline unless it runs already. */
  #arm(): void {
    if (this.#deadline !== null || this.ending) return;
    const timer = setTimeout(() => {
      this.#deadline = null;
      if (this.ending) return;
      const what = this.#rx.headerFill > 0 ? 'began a message and did not finish it' : 'sent no message';
      this.#handlers.warn(`front-end ${what} within ${this.#messageTimeoutMs} ms`);
      this.#dropPartial();
      this.end(`front-end ${what} in time`);
    }, this.#messageTimeoutMs);
    // The socket's watcher keeps the process alive; the deadline need not.
    timer.unref?.();
    this.#deadline = timer;
  }

  #disarm(): void {
    if (this.#deadline !== null) clearTimeout(this.#deadline);
    this.#deadline = null;
  }

  /** Close the socket and the fds of a message received only in part. */
  close(): void {
    this.stopReading();
    this.#addon.close(this.#fd);
    this.#closed = true;
    this.#dropPartial();
  }

  /**
   * Read whatever the socket holds without blocking, and queue every message
   * completed by it. Reading pauses while MAX_QUEUED_MESSAGES wait to be handled.
   */
  #read(): void {
    if (this.ending) return;
    try {
      for (;;) {
        if (this.#queued >= MAX_QUEUED_MESSAGES) {
          this.stopReading();
          return;
        }
        const rx = this.#rx;
        const target = rx.payload ? rx.payload.subarray(rx.payloadFill) : rx.header.subarray(rx.headerFill);
        if (target.length > 0) {
          const got = this.#addon.recvmsg(this.#fd, target, true);
          if (got.bytes < 0) return; // drained: wait for the next readable event
          rx.fds.push(...got.fds);
          if (got.fdsTruncated) throw new ProtocolError('too many fds in one message');
          if (got.bytes === 0) {
            const midMessage = rx.headerFill > 0;
            this.end(`front-end closed the connection${midMessage ? ' mid-message' : ''}`);
            return;
          }
          if (rx.payload) rx.payloadFill += got.bytes;
          else rx.headerFill += got.bytes;
          this.#arm();
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
        const message: Message = { request, flags, payload: rx.payload, fds: rx.fds };
        this.#rx = newReceiveState();
        this.#sawMessage = true;
        this.#disarm();
        this.#enqueue(() => this.#deliver(message));
      }
    } catch (err) {
      this.#dropPartial();
      // A front-end that closes with replies of ours unread resets the
      // connection (recvmsg: ECONNRESET): it left, it did not misbehave.
      if (peerGone(err)) {
        this.end('front-end reset the connection');
        return;
      }
      this.#handlers.warn(`protocol error: ${(err as Error).message}`);
      this.end('protocol error');
    }
  }

  async #deliver(message: Message): Promise<void> {
    // Messages that arrived behind one that ended the connection take no effect.
    if (this.ending) {
      for (const fd of message.fds) this.#addon.close(fd);
      return;
    }
    await this.#handlers.message(message);
  }

  #dropPartial(): void {
    for (const fd of this.#rx.fds) this.#addon.close(fd);
    this.#rx = newReceiveState();
  }

  /** Watch the socket again once the queue has drained (reading was paused by a full queue). */
  #resumeReading(): void {
    if (this.ending || this.#watcher || this.#queued > 0) return;
    this.#watcher = this.#addon.watch(this.#fd, () => this.#read());
  }

  /** Run `step` after everything queued before it; a failure is logged and does not stop later steps. */
  #enqueue(step: () => Promise<void>): void {
    this.#queued++;
    this.#pending = this.#pending
      .then(step)
      .catch((err: unknown) => this.#handlers.warn(`internal error: ${String(err)}`))
      .finally(() => {
        this.#queued--;
        this.#resumeReading();
      });
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

/** A socket error that means the front-end has gone (reset, or closed before a reply): a disconnect, not a fault. */
function peerGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ECONNRESET' || code === 'EPIPE';
}
