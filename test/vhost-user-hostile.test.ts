// A hostile front-end (vhost-user.rst is the contract; every test names the
// message and the rule it enforces). The test is a raw unix-socket peer
// (test/support/vhost-user-peer.ts): it writes headers and payloads byte by
// byte, passes fds with SCM_RIGHTS, and reads whatever comes back. Each rule
// is: the bad message gets an error reply where the protocol has one
// (REPLY_ACK, GET_CONFIG's empty payload) or the connection is dropped; fds
// the host was sent are closed, mappings go with the connection, and a fresh
// well-formed front-end is served afterwards.

import { closeSync, ftruncateSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { MemoryBackend } from '../src/backends/memory.ts';
import { VirtioBlkDevice } from '../src/block/device.ts';
import { loadAddon, type VhostUserAddon } from '../src/host/vhost-user/addon.ts';
import { VhostUserHost } from '../src/host/vhost-user/host.ts';
import {
  decodeU64,
  encodeConfig,
  encodeHeader,
  encodeMemTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringState,
  HEADER_SIZE,
  HeaderFlag,
  MAX_PAYLOAD,
  ProtocolFeature,
  Request,
  type MemRegion,
} from '../src/host/vhost-user/protocol.ts';
import { VhostUserPeer, type Message } from './support/vhost-user-peer.ts';

const RAM_GPA = 0x4000_0000;
const RAM_BYTES = 64 * 1024;
const USER_BASE = 0x7f00_0000_0000;
const REFUSED = 1n;

describe.runIf(process.platform === 'linux')('vhost-user host under a hostile front-end', () => {
  let addon: VhostUserAddon;
  let dir: string;
  let ramPath: string;
  let ramFd: number;
  let host: VhostUserHost;
  let device: VirtioBlkDevice;
  const peers: VhostUserPeer[] = [];
  const warnings: string[] = [];
  const logs: string[] = [];
  const socket = (): string => join(dir, 'hostile.sock');

  beforeAll(() => {
    addon = loadAddon();
    dir = mkdtempSync(join(tmpdir(), 'vbw-hostile-'));
    ramPath = join(dir, 'ram');
    ramFd = openSync(ramPath, 'w+');
    ftruncateSync(ramFd, RAM_BYTES);
  }, 180_000); // the first run builds the addon

  afterEach(async () => {
    for (const peer of peers.splice(0)) peer.close();
    await host.close();
    warnings.length = 0;
    logs.length = 0;
  });

  afterAll(() => {
    closeSync(ramFd);
    rmSync(dir, { recursive: true, force: true });
  });

  function connect(options: { read?: boolean } = {}): VhostUserPeer {
    const peer = new VhostUserPeer(addon, socket(), options);
    peers.push(peer);
    return peer;
  }

  function listen(options: { addon?: VhostUserAddon; messageTimeoutMs?: number } = {}): void {
    device = new VirtioBlkDevice(new MemoryBackend(1 << 20));
    const use = options.addon ?? addon;
    host = VhostUserHost.listen({
      socketPath: socket(),
      device,
      addon: use,
      log: (line) => logs.push(line),
      warn: (line) => warnings.push(line),
      messageTimeoutMs: options.messageTimeoutMs,
    });
  }

  /** A host and a peer that negotiated REPLY_ACK, so that refusals can be seen. */
  function start(): VhostUserPeer {
    listen();
    const peer = connect();
    peer.send(Request.SetProtocolFeatures, encodeU64(1n << ProtocolFeature.ReplyAck));
    return peer;
  }

  /** After the attack: once the host dropped the peer, a new front-end gets GET_FEATURES answered (and leaves). */
  async function servesAFreshFrontEnd(): Promise<void> {
    await host.idle();
    const fresh = connect();
    const reply = await fresh.call(Request.GetFeatures);
    expect(reply).not.toBe('hung up');
    expect(decodeU64((reply as Message).payload)).toBe(device.deviceFeatures | (1n << 30n));
    fresh.close();
    peers.splice(peers.indexOf(fresh), 1);
    await host.idle();
  }

  /** How many of this process's fds refer to `path` (the host's copies of fds a test sent it). */
  function held(path: string): number {
    let n = 0;
    for (const fd of readdirSync('/proc/self/fd')) {
      try {
        if (readlinkSync(`/proc/self/fd/${fd}`) === path) n++;
      } catch {
        // Closed while listing (readdir's own fd).
      }
    }
    return n;
  }

  /** A fresh regular file's fd: what the host keeps of it can be counted with `held`. */
  let markers = 0;
  function marker(): { fd: number; path: string } {
    const path = join(dir, `marker-${markers++}`);
    return { fd: openSync(path, 'w+'), path };
  }

  /** Send marker fds with a message, close this side's copies, and return their paths. */
  function sendMarkers(count: number): { fds: number[]; paths: string[]; release: () => void } {
    const made = Array.from({ length: count }, marker);
    return {
      fds: made.map((m) => m.fd),
      paths: made.map((m) => m.path),
      release: () => made.forEach((m) => closeSync(m.fd)),
    };
  }

  const region = (r: Partial<MemRegion> = {}): MemRegion => ({
    guestAddress: RAM_GPA,
    size: RAM_BYTES,
    userAddress: USER_BASE,
    mmapOffset: 0,
    ...r,
  });

  test('framing: a header announcing more than the largest payload is a disconnect (vhost-user.rst "Message Specification")', async () => {
    const peer = start();
    peer.sendBytes(encodeHeader(Request.SetMemTable, HeaderFlag.Version, MAX_PAYLOAD + 1));
    expect(await peer.next()).toBe('hung up');
    await servesAFreshFrontEnd();
    // With bytes behind the header that the host never reads, its close is a
    // reset (recvmsg here fails with ECONNRESET): a hang-up all the same.
    const again = connect();
    const trailing = new Uint8Array(HEADER_SIZE + 4096);
    trailing.set(encodeHeader(Request.SetMemTable, HeaderFlag.Version, MAX_PAYLOAD + 1));
    again.sendBytes(trailing);
    expect(await again.next()).toBe('hung up');
    await servesAFreshFrontEnd();
  });

  test('framing: a peer cannot hold the only connection slot with half a message (its fd is closed) or with no message at all', async () => {
    listen({ messageTimeoutMs: 300 });
    const halfway = connect();
    const sent = sendMarkers(1);
    const message = encodeMessage(Request.SetMemTable, HeaderFlag.Version, encodeMemTable([region()]));
    halfway.sendBytes(message.subarray(0, HEADER_SIZE + 10), sent.fds);
    sent.release();
    expect(await halfway.next()).toBe('hung up');
    expect(held(sent.paths[0]!)).toBe(0);
    expect(warnings.some((w) => w.includes('began a message and did not finish it'))).toBe(true);
    await servesAFreshFrontEnd();

    const silent = connect();
    expect(await silent.next()).toBe('hung up');
    expect(warnings.some((w) => w.includes('sent no message'))).toBe(true);
    await servesAFreshFrontEnd();
  });

  test('framing: a front-end idle between whole messages keeps its connection past the message deadline', async () => {
    listen({ messageTimeoutMs: 200 });
    const peer = connect();
    expect(await peer.call(Request.GetFeatures)).not.toBe('hung up');
    await new Promise((resolve) => setTimeout(resolve, 600));
    const again = await peer.call(Request.GetQueueNum);
    expect(again).not.toBe('hung up');
    expect(warnings).toEqual([]);
  });

  test('framing: a peer that disconnects mid-message leaves no fd behind (SET_MEM_TABLE header, half a payload, an fd)', async () => {
    const peer = start();
    const table = encodeMemTable([region()]);
    const sent = sendMarkers(1);
    const message = encodeMessage(Request.SetMemTable, HeaderFlag.Version, table);
    peer.sendBytes(message.subarray(0, HEADER_SIZE + 10), sent.fds);
    sent.release();
    // The host has the fd once it read the header (fds in flight are the kernel's, not listed).
    await host.connected();
    for (let turn = 0; turn < 100 && held(sent.paths[0]!) === 0; turn++) await new Promise(setImmediate);
    expect(held(sent.paths[0]!)).toBe(1);
    peer.close();
    peers.length = 0;
    await host.idle();
    expect(held(sent.paths[0]!)).toBe(0);
    await servesAFreshFrontEnd();
  });

  test('framing: a front-end that resets the connection (leaves with a reply unread) is a disconnect, not a protocol error; its half-sent fd is closed', async () => {
    listen();
    const peer = connect({ read: false });
    // A reply waits unread in the peer's socket...
    const replied = new Promise<void>((resolve) => {
      const watcher = addon.watch(peer.fd, () => {
        addon.unwatch(watcher);
        resolve();
      });
    });
    peer.send(Request.GetQueueNum);
    await replied;
    // ...and the host holds the fd of a message that never finishes.
    const sent = sendMarkers(1);
    const message = encodeMessage(Request.SetMemTable, HeaderFlag.Version, encodeMemTable([region()]));
    peer.sendBytes(message.subarray(0, HEADER_SIZE + 10), sent.fds);
    sent.release();
    for (let turn = 0; turn < 100 && held(sent.paths[0]!) === 0; turn++) await new Promise(setImmediate);
    expect(held(sent.paths[0]!)).toBe(1);
    // Closing with unread bytes resets the host's end: its recvmsg fails with ECONNRESET.
    peer.close();
    peers.length = 0;
    await host.idle();
    expect(logs).toContain('disconnected: front-end reset the connection');
    expect(warnings.filter((w) => w.startsWith('protocol error'))).toEqual([]);
    expect(held(sent.paths[0]!)).toBe(0);
    await servesAFreshFrontEnd();
  });

  test('framing: truncated payloads are refused — with REPLY_ACK a non-zero status, without it a disconnect', async () => {
    const peer = start();
    for (const request of [Request.SetVringNum, Request.SetVringBase, Request.SetVringEnable, Request.SetFeatures]) {
      expect(await peer.acked(request, new Uint8Array(4))).toBe(REFUSED);
    }
    expect(await peer.acked(Request.SetVringAddr, new Uint8Array(39))).toBe(REFUSED);
    expect(await peer.acked(Request.SetMemTable, encodeMemTable([region()]).subarray(0, 39), [ramFd])).toBe(REFUSED);
    // Still talking: a good request is answered.
    expect(await peer.acked(Request.SetOwner)).toBe(0n);
    peer.send(Request.SetVringNum, new Uint8Array(4)); // no NEED_REPLY: nothing could carry the failure
    expect(await peer.next()).toBe('hung up');
    await servesAFreshFrontEnd();
  });

  test('GET_VRING_BASE that fails (truncated, or a ring that does not exist) ends the connection instead of never replying', async () => {
    for (const payload of [new Uint8Array(4), encodeVringState({ index: 7, num: 0 })]) {
      const peer = start();
      expect(await peer.call(Request.GetVringBase, payload)).toBe('hung up');
      await servesAFreshFrontEnd();
      await host.close();
    }
    start(); // for afterEach
  });

  test('GET_CONFIG that fails is answered with an empty payload (vhost-user.rst VHOST_USER_GET_CONFIG), and the session goes on', async () => {
    const peer = start();
    const tooBig = encodeConfig({ offset: 0, size: 300, flags: 0, data: new Uint8Array(300) });
    const reply = await peer.call(Request.GetConfig, tooBig);
    expect(reply).toMatchObject({ request: Request.GetConfig, payload: new Uint8Array(0) });
    expect(await peer.call(Request.GetConfig, new Uint8Array(5))).toMatchObject({ payload: new Uint8Array(0) });
    expect(await peer.acked(Request.SetOwner)).toBe(0n);
  });

  test('unknown requests: with NEED_REPLY a non-zero REPLY_ACK; without, or one that expects an answer it cannot get, a disconnect', async () => {
    let peer = start();
    expect(await peer.acked(200)).toBe(REFUSED);
    expect(await peer.acked(Request.SetLogBase, encodeU64(0n))).toBe(REFUSED);
    peer.send(200);
    expect(await peer.next()).toBe('hung up');
    await servesAFreshFrontEnd();
    for (const request of [Request.GetInflightFd, Request.GetMaxMemSlots, Request.GetStatus]) {
      peer = connect();
      expect(await peer.call(request, new Uint8Array(8))).toBe('hung up');
      await host.idle();
    }
    await servesAFreshFrontEnd();
  });

  test('vring index ≥ the number of queues is refused by every vring message (vhost-user.rst "Multiple queue support")', async () => {
    const peer = start();
    const state = encodeVringState({ index: 1, num: 8 });
    expect(await peer.acked(Request.SetVringNum, state)).toBe(REFUSED);
    expect(await peer.acked(Request.SetVringBase, state)).toBe(REFUSED);
    expect(await peer.acked(Request.SetVringEnable, state)).toBe(REFUSED);
    const addr = { index: 1, flags: 0, descUser: USER_BASE, usedUser: USER_BASE, availUser: USER_BASE, logGuest: 0 };
    expect(await peer.acked(Request.SetVringAddr, encodeVringAddr(addr))).toBe(REFUSED);
    for (const request of [Request.SetVringKick, Request.SetVringCall, Request.SetVringErr]) {
      const sent = sendMarkers(1);
      expect(await peer.acked(request, encodeU64(0xffn), sent.fds)).toBe(REFUSED);
      sent.release();
      expect(held(sent.paths[0]!)).toBe(0); // the refused fd is closed, not kept
    }
    // Bits above the index and the NOFD flag are reserved.
    expect(await peer.acked(Request.SetVringCall, encodeU64((1n << 9n) | 0x100n))).toBe(REFUSED);
    expect(await peer.acked(Request.SetVringCall, encodeU64(0x100n))).toBe(0n);
  });

  test('SET_VRING_NUM: 0, not a power of two, or more than 32768 is refused (virtio 1.2 §2.7)', async () => {
    const peer = start();
    for (const num of [0, 3, 100, 65536, 0xffff_ffff]) {
      expect(await peer.acked(Request.SetVringNum, encodeVringState({ index: 0, num }))).toBe(REFUSED);
    }
    expect(await peer.acked(Request.SetVringNum, encodeVringState({ index: 0, num: 32768 }))).toBe(0n);
  });

  test('SET_VRING_BASE beyond a 16-bit avail index is refused (split ring, virtio 1.2 §2.7.6)', async () => {
    const peer = start();
    expect(await peer.acked(Request.SetVringBase, encodeVringState({ index: 0, num: 0x1_0000 }))).toBe(REFUSED);
    expect(await peer.acked(Request.SetVringBase, encodeVringState({ index: 0, num: 0xffff }))).toBe(0n);
    expect(await peer.call(Request.GetVringBase, encodeVringState({ index: 0, num: 0 }))).toMatchObject({
      payload: encodeVringState({ index: 0, num: 0xffff }),
    });
  });

  test('fds: SET_VRING_KICK/CALL/ERR carry exactly one fd unless the NOFD bit says none, SET_BACKEND_REQ_FD exactly one', async () => {
    const peer = start();
    for (const request of [Request.SetVringKick, Request.SetVringCall, Request.SetVringErr]) {
      expect(await peer.acked(request, encodeU64(0n))).toBe(REFUSED); // no fd
      const two = sendMarkers(2);
      expect(await peer.acked(request, encodeU64(0n), two.fds)).toBe(REFUSED);
      const withNoFd = sendMarkers(1);
      expect(await peer.acked(request, encodeU64(0x100n), withNoFd.fds)).toBe(REFUSED);
      two.release();
      withNoFd.release();
      for (const path of [...two.paths, ...withNoFd.paths]) expect(held(path)).toBe(0);
    }
    expect(await peer.acked(Request.SetBackendReqFd)).toBe(REFUSED);
    // A request that takes no fd but is sent one does not keep it either.
    const stray = sendMarkers(1);
    expect(await peer.acked(Request.SetOwner, undefined, stray.fds)).toBe(REFUSED);
    stray.release();
    expect(held(stray.paths[0]!)).toBe(0);
  });

  test('fds: SET_MEM_TABLE needs one fd per region, no fewer and no more', async () => {
    const peer = start();
    expect(await peer.acked(Request.SetMemTable, encodeMemTable([region()]))).toBe(REFUSED);
    const extra = sendMarkers(1);
    expect(await peer.acked(Request.SetMemTable, encodeMemTable([region()]), [ramFd, ...extra.fds])).toBe(REFUSED);
    extra.release();
    expect(held(extra.paths[0]!)).toBe(0);
    expect(held(ramPath)).toBe(1); // only the test's own
    expect(await peer.acked(Request.SetMemTable, encodeMemTable([region()]), [ramFd])).toBe(0n);
  });

  test('SET_MEM_TABLE: empty, overflowing, guest-overlapping, too many, or larger-than-the-fd regions are refused and nothing stays mapped', async () => {
    const peer = start();
    const half = RAM_BYTES / 2;
    const bad: Array<[string, MemRegion[]]> = [
      ['empty region', [region({ size: 0 })]],
      ['guest range wraps', [region({ guestAddress: Number.MAX_SAFE_INTEGER - 100 })]],
      ['user range wraps', [region({ userAddress: Number.MAX_SAFE_INTEGER - 100 })]],
      ['past the end of the fd (SIGBUS)', [region({ size: 2 * RAM_BYTES })]],
      ['offset past the end of the fd', [region({ mmapOffset: RAM_BYTES })]],
      ['guest-physical overlap', [region({ size: half }), region({ size: half, userAddress: USER_BASE + RAM_BYTES, mmapOffset: half })]],
    ];
    // The first region is mapped before the second fails: it must be unmapped again.
    const far = { guestAddress: RAM_GPA + 0x10_0000, userAddress: USER_BASE + 0x10_0000 };
    bad.push(['second region past the end of the fd', [region({ size: half }), region({ ...far, mmapOffset: half })]]);
    for (const [, regions] of bad) {
      expect(await peer.acked(Request.SetMemTable, encodeMemTable(regions), regions.map(() => ramFd))).toBe(REFUSED);
    }
    const nine = Array.from({ length: 9 }, (_, i) =>
      region({ size: 4096, guestAddress: RAM_GPA + i * 4096, userAddress: USER_BASE + i * 4096, mmapOffset: i * 4096 }),
    );
    expect(await peer.acked(Request.SetMemTable, encodeMemTable(nine), nine.map(() => ramFd))).toBe(REFUSED);
    // A u64 beyond 2^53 cannot be an exact address here.
    const huge = encodeMemTable([region()]);
    new DataView(huge.buffer).setBigUint64(8, 0xffff_ffff_ffff_f000n, true);
    expect(await peer.acked(Request.SetMemTable, huge, [ramFd])).toBe(REFUSED);
    await unmapped(ramPath);
    // An alias (the same front-end memory at a second guest address) is a legal table.
    const alias = [region({ size: half }), region({ size: half, guestAddress: RAM_GPA + 0x10_0000 })];
    expect(await peer.acked(Request.SetMemTable, encodeMemTable(alias), [ramFd, ramFd])).toBe(0n);
    expect(warnings.filter((w) => w.startsWith('SetMemTable')).length).toBe(bad.length + 2);
  });

  test('ring addresses that translate into no region are refused; a ring that runs off its region never starts (error eventfd)', async () => {
    const peer = start();
    expect(await peer.acked(Request.SetMemTable, encodeMemTable([region()]), [ramFd])).toBe(0n);
    const inside = USER_BASE + 0x1000;
    for (const outside of [USER_BASE - 1, USER_BASE + RAM_BYTES, 0]) {
      for (const field of ['descUser', 'availUser', 'usedUser'] as const) {
        const addr = { index: 0, flags: 0, descUser: inside, availUser: inside + 0x1000, usedUser: inside + 0x2000, logGuest: 0 };
        addr[field] = outside;
        expect(await peer.acked(Request.SetVringAddr, encodeVringAddr(addr))).toBe(REFUSED);
      }
    }
    // The descriptor table starts inside RAM but 256 entries do not fit.
    expect(await peer.acked(Request.SetVringNum, encodeVringState({ index: 0, num: 256 }))).toBe(0n);
    const end = USER_BASE + RAM_BYTES;
    const addr = { index: 0, flags: 0, descUser: end - 16, availUser: inside, usedUser: inside + 0x1000, logGuest: 0 };
    expect(await peer.acked(Request.SetVringAddr, encodeVringAddr(addr))).toBe(0n);
    const err = addon.eventfd();
    const kick = addon.eventfd();
    try {
      expect(await peer.acked(Request.SetVringErr, encodeU64(0n), [err])).toBe(0n);
      expect(await peer.acked(Request.SetVringKick, encodeU64(0n), [kick])).toBe(0n);
      const count = new BigUint64Array(1);
      readSync(err, new Uint8Array(count.buffer));
      expect(count[0]).toBe(1n);
      expect(warnings.some((w) => w.startsWith('queue 0'))).toBe(true);
    } finally {
      addon.close(err);
      addon.close(kick);
    }
  });

  test('SET_VRING_KICK: an fd that cannot be polled is refused; one that reads end-of-file (not an eventfd) ends the connection', async () => {
    const peer = start();
    const file = sendMarkers(1);
    expect(await peer.acked(Request.SetVringKick, encodeU64(0n), file.fds)).toBe(REFUSED); // epoll refuses regular files
    file.release();
    expect(held(file.paths[0]!)).toBe(0);
    // A unix socket whose other end is gone is readable for ever and reads 0 bytes.
    const path = join(dir, 'dead-end.sock');
    const server = createServer((conn) => conn.destroy());
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const accepted = once(server, 'connection');
    const dead = addon.connect(path);
    await accepted;
    server.close();
    try {
      expect(await peer.acked(Request.SetVringKick, encodeU64(0n), [dead])).toBe(0n);
      expect(await peer.next()).toBe('hung up');
      expect(warnings.some((w) => w.includes('not an eventfd'))).toBe(true);
    } finally {
      addon.close(dead);
    }
    await servesAFreshFrontEnd();
  });

  test('mappings and fds go with the front-end: after it leaves nothing of its memory table stays mapped or open', async () => {
    const peer = start();
    expect(await peer.acked(Request.SetMemTable, encodeMemTable([region()]), [ramFd])).toBe(0n);
    const call = sendMarkers(1);
    expect(await peer.acked(Request.SetVringCall, encodeU64(0n), call.fds)).toBe(0n);
    call.release();
    expect(mappingsOf(ramPath)).toBe(1);
    expect(held(call.paths[0]!)).toBe(1);
    peer.close();
    peers.length = 0;
    await host.idle();
    expect(held(call.paths[0]!)).toBe(0);
    await unmapped(ramPath);
    await servesAFreshFrontEnd();
  });

  test('a burst of 200 requests: reading pauses behind 64 unhandled messages and resumes, every one answered in order', async () => {
    let watches = 0;
    listen({ addon: { ...addon, watch: (fd, onReady) => (watches++, addon.watch(fd, onReady)) } });
    const peer = connect();
    const one = encodeMessage(Request.GetQueueNum, HeaderFlag.Version);
    const burst = new Uint8Array(one.length * 200);
    for (let i = 0; i < 200; i++) burst.set(one, i * one.length);
    peer.sendBytes(burst);
    for (let i = 0; i < 200; i++) {
      const reply = await peer.next();
      expect(reply).toMatchObject({ request: Request.GetQueueNum, payload: encodeU64(1n) });
    }
    // The listener, the connection, and at least one resume per 64 messages.
    expect(watches).toBeGreaterThanOrEqual(2 + Math.floor(200 / 64));
  });

  test('a peer that never reads its replies is dropped; the event loop is never blocked on it', async () => {
    listen();
    const flooder = connect({ read: false });
    await host.connected();
    const burst = encodeMessage(Request.GetQueueNum, HeaderFlag.Version);
    const many = new Uint8Array(burst.length * 100);
    for (let i = 0; i < 100; i++) many.set(burst, i * burst.length);
    let dropped = false;
    void host.idle().then(() => (dropped = true));
    for (let round = 0; round < 10_000 && !dropped; round++) {
      try {
        addon.sendmsg(flooder.fd, many, undefined, true);
      } catch {
        // EAGAIN (the host reads slower than this) or EPIPE (it hung up).
      }
      await new Promise(setImmediate);
    }
    expect(dropped).toBe(true);
    expect(warnings.some((w) => w.includes('does not take its replies') || w.startsWith('reply to'))).toBe(true);
    await servesAFreshFrontEnd();
  });
});

/** Resolves once nothing maps `path`: munmap runs in the ArrayBuffer's finalizer, which Node defers to the loop. */
async function unmapped(path: string): Promise<void> {
  for (let turn = 0; turn < 100 && mappingsOf(path) > 0; turn++) await new Promise(setImmediate);
  expect(mappingsOf(path)).toBe(0);
}

/** How many of this process's mappings are of `path` (/proc/self/maps). */
function mappingsOf(path: string): number {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((line) => line.endsWith(` ${path}`)).length;
}
