// A vhost-user front-end for tests: a raw unix-socket peer on the addon
// (connect, sendmsg with SCM_RIGHTS, non-blocking recvmsg on Node's loop)
// that sends anything, byte by byte if asked, and collects whole replies.
//
// Nothing it does can throw out of the event loop: the socket is read in a
// watcher callback, where an exception would be fatal to the test process.
// The end of the connection, by a clean close (end of file) or a reset (the
// host closed with bytes of ours unread: ECONNRESET), is the 'hung up' the
// tests wait for; any other read error is kept and rethrown by `next()`.

import { expect } from 'vitest';
import type { VhostUserAddon, Watcher } from '../../src/host/vhost-user/addon.ts';
import { decodeHeader, decodeU64, encodeMessage, HEADER_SIZE, HeaderFlag } from '../../src/host/vhost-user/protocol.ts';

/** A whole reply from the host. */
export type Message = { request: number; flags: number; payload: Uint8Array };

/** What `next()` returns once the host has closed the connection. */
export const HUNG_UP = 'hung up';
export type HungUp = typeof HUNG_UP;

/** Errors that mean the other end is gone: a disconnect, not a failure. */
const GONE = new Set(['ECONNRESET', 'EPIPE']);
const isGone = (err: unknown): boolean => GONE.has((err as NodeJS.ErrnoException).code ?? '');

export class VhostUserPeer {
  readonly fd: number;
  readonly #addon: VhostUserAddon;
  #watcher: Watcher | null = null;
  #inbox = new Uint8Array(0);
  #replies: Message[] = [];
  #waiters: Array<() => void> = [];
  #hungUp = false;
  /** A read error that is not a disconnect, rethrown by `next()`. */
  #failure: Error | null = null;

  /** `read: false` never reads the socket: a peer that ignores its replies. */
  constructor(addon: VhostUserAddon, path: string, options: { read?: boolean } = {}) {
    this.#addon = addon;
    this.fd = addon.connect(path);
    if (options.read !== false) this.#watcher = addon.watch(this.fd, () => this.#readable());
  }

  #readable(): void {
    const chunk = new Uint8Array(4096);
    try {
      const got = this.#addon.recvmsg(this.fd, chunk, true);
      for (const fd of got.fds) this.#addon.close(fd); // the host sends none; keep nothing
      if (got.bytes < 0) return; // spurious wake-up: nothing to read yet
      if (got.bytes === 0) {
        this.#end();
      } else {
        const joined = new Uint8Array(this.#inbox.length + got.bytes);
        joined.set(this.#inbox);
        joined.set(chunk.subarray(0, got.bytes), this.#inbox.length);
        this.#inbox = joined;
        this.#split();
      }
    } catch (err) {
      // A reset discards whatever was still unread: the host is gone either way.
      if (!isGone(err)) this.#failure = err as Error;
      this.#end();
    }
    for (const wake of this.#waiters.splice(0)) wake();
  }

  #split(): void {
    while (this.#inbox.length >= HEADER_SIZE) {
      const { request, flags, size } = decodeHeader(this.#inbox);
      if (this.#inbox.length < HEADER_SIZE + size) return;
      this.#replies.push({ request, flags, payload: this.#inbox.slice(HEADER_SIZE, HEADER_SIZE + size) });
      this.#inbox = this.#inbox.slice(HEADER_SIZE + size);
    }
  }

  #end(): void {
    this.#stop();
    this.#hungUp = true;
  }

  #stop(): void {
    if (this.#watcher) this.#addon.unwatch(this.#watcher);
    this.#watcher = null;
  }

  /** The next whole reply, or 'hung up' once the host closed the connection. */
  async next(): Promise<Message | HungUp> {
    for (;;) {
      const reply = this.#replies.shift();
      if (reply) return reply;
      if (this.#failure) throw this.#failure;
      if (this.#hungUp) return HUNG_UP;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  /**
   * Send raw bytes (and fds with the first of them). Sending to a host that
   * has already hung up is not an error here: `next()` reports the hang-up.
   */
  sendBytes(bytes: Uint8Array, fds?: number[]): void {
    try {
      this.#addon.sendmsg(this.fd, bytes, fds);
    } catch (err) {
      if (!isGone(err)) throw err;
    }
  }

  send(request: number, payload?: Uint8Array, fds?: number[], flags: number = HeaderFlag.Version): void {
    this.sendBytes(encodeMessage(request, flags, payload), fds);
  }

  /** Send and return the reply, or 'hung up'. */
  call(request: number, payload?: Uint8Array, fds?: number[], flags: number = HeaderFlag.Version): Promise<Message | HungUp> {
    this.send(request, payload, fds, flags);
    return this.next();
  }

  /** Send a request that must be answered and return the reply's payload (a hang-up fails the test). */
  async answer(request: number, payload?: Uint8Array, fds?: number[]): Promise<Uint8Array> {
    const reply = await this.call(request, payload, fds);
    if (reply === HUNG_UP) throw new Error(`the host hung up instead of answering request ${request}`);
    expect(reply.request).toBe(request);
    expect(reply.flags & HeaderFlag.Reply).toBe(HeaderFlag.Reply);
    return reply.payload;
  }

  /** Send with NEED_REPLY: the REPLY_ACK status (0 = success), or 'hung up'. */
  async acked(request: number, payload?: Uint8Array, fds?: number[]): Promise<bigint | HungUp> {
    const reply = await this.call(request, payload, fds, HeaderFlag.Version | HeaderFlag.NeedReply);
    if (reply === HUNG_UP) return reply;
    expect(reply.request).toBe(request);
    expect(reply.flags & HeaderFlag.Reply).toBe(HeaderFlag.Reply);
    return decodeU64(reply.payload);
  }

  close(): void {
    this.#stop();
    this.#addon.close(this.fd);
  }
}
