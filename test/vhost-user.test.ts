// The vhost-user host without QEMU: this test plays the front-end over a real
// unix socket (the addon's connect/sendmsg), hands over "guest RAM" as a file
// fd, builds a split ring in it by hand, kicks an eventfd and waits for the
// call eventfd, as QEMU and a guest would. The codec is checked on its own.

import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { NodeFileBackend } from '../src/backends/node-file.ts';
import { BlkConfig, BlkRequestType, BlkStatus } from '../src/block/constants.ts';
import { VirtioBlkDevice } from '../src/block/device.ts';
import { loadAddon, type VhostUserAddon } from '../src/host/vhost-user/addon.ts';
import { OFFERED_PROTOCOL_FEATURES, VhostUserHost } from '../src/host/vhost-user/host.ts';
import {
  decodeConfig,
  decodeHeader,
  decodeMemTable,
  decodeU64,
  decodeVringAddr,
  decodeVringState,
  encodeConfig,
  encodeMemTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringState,
  F_PROTOCOL_FEATURES,
  HEADER_SIZE,
  HeaderFlag,
  ProtocolError,
  ProtocolFeature,
  Request,
} from '../src/host/vhost-user/protocol.ts';
import { VirtioFeature } from '../src/virtio/device.ts';
import { DescFlag } from '../src/virtio/queue.ts';
import { HUNG_UP, VhostUserPeer, type Message } from './support/vhost-user-peer.ts';

describe('vhost-user codec', () => {
  test('header, vring address and memory table round-trip', () => {
    const msg = encodeMessage(Request.SetVringNum, HeaderFlag.Version | HeaderFlag.NeedReply, encodeVringState({ index: 1, num: 256 }));
    expect(decodeHeader(msg)).toEqual({ request: 8, flags: 0x9, size: 8 });
    expect(decodeVringState(msg.subarray(HEADER_SIZE))).toEqual({ index: 1, num: 256 });
    const addr = { index: 0, flags: 0, descUser: 0x7f00_1000, usedUser: 0x7f00_3000, availUser: 0x7f00_2000, logGuest: 0 };
    expect(decodeVringAddr(encodeVringAddr(addr))).toEqual(addr);
    const regions = [
      { guestAddress: 0x4000_0000, size: 0x2000_0000, userAddress: 0x7f12_0000_0000, mmapOffset: 0 },
      { guestAddress: 0x1_0000_0000, size: 0x1000, userAddress: 0x7f13_0000_0000, mmapOffset: 0x2000 },
    ];
    expect(decodeMemTable(encodeMemTable(regions))).toEqual(regions);
  });

  test('short or oversized payloads are protocol errors, never out-of-bounds reads', () => {
    expect(() => decodeU64(new Uint8Array(7))).toThrow(ProtocolError);
    expect(() => decodeVringAddr(new Uint8Array(39))).toThrow(ProtocolError);
    const table = encodeMemTable([{ guestAddress: 0, size: 4096, userAddress: 0, mmapOffset: 0 }]);
    expect(() => decodeMemTable(table.subarray(0, table.length - 1))).toThrow(ProtocolError);
    new DataView(table.buffer).setUint32(0, 9, true);
    expect(() => decodeMemTable(table)).toThrow(/9 regions/);
    const config = encodeConfig({ offset: 0, size: 8, flags: 0, data: new Uint8Array(8) });
    expect(decodeConfig(config).size).toBe(8);
    expect(() => decodeConfig(config.subarray(0, 19))).toThrow(ProtocolError);
    new DataView(config.buffer).setUint32(4, 300, true);
    expect(() => decodeConfig(config)).toThrow(ProtocolError);
  });
});

// Guest RAM layout for the ring tests (guest-physical; QEMU's address = + USER_DELTA).
const RAM_GPA = 0x4000_0000;
const RAM_BYTES = 1 << 20;
const USER_BASE = 0x7f12_3400_0000;
const DESC = RAM_GPA + 0x1000;
const AVAIL = RAM_GPA + 0x2000;
const USED = RAM_GPA + 0x3000;
const DATA = RAM_GPA + 0x10000;
const QUEUE_SIZE = 8;

describe.runIf(process.platform === 'linux')('vhost-user host', () => {
  let addon: VhostUserAddon;
  let dir: string;
  let image: string;
  let backend: NodeFileBackend;
  let device: VirtioBlkDevice;
  let host: VhostUserHost;
  let ramFd: number;
  let ram: DataView;
  let ramBytes: Uint8Array;
  const socket = (): string => join(dir, 'vhost.sock');
  const cleanup: Array<() => void> = [];

  beforeAll(() => {
    addon = loadAddon();
    dir = mkdtempSync(join(tmpdir(), 'vbw-vhost-user-'));
    image = join(dir, 'disk.img');
    const imageFd = openSync(image, 'w');
    ftruncateSync(imageFd, 1 << 20);
    closeSync(imageFd);
    ramFd = openSync(join(dir, 'ram'), 'w+');
    ftruncateSync(ramFd, RAM_BYTES);
    const mapping = addon.mmap(ramFd, 0, RAM_BYTES);
    ramBytes = new Uint8Array(mapping.buffer, mapping.delta, RAM_BYTES);
    ram = new DataView(mapping.buffer, mapping.delta, RAM_BYTES);
  }, 180_000); // the first run builds the addon with node-gyp

  afterEach(async () => {
    for (const c of cleanup.splice(0)) c();
    await host?.close();
    backend?.close();
  });

  afterAll(() => {
    closeSync(ramFd);
    rmSync(dir, { recursive: true, force: true });
  });

  function start(options: { readOnly?: boolean; maxMappingBytes?: number } = {}): VhostUserPeer {
    backend = NodeFileBackend.open(image, { readOnly: options.readOnly });
    device = new VirtioBlkDevice(backend, { readOnly: options.readOnly });
    host = VhostUserHost.listen({ socketPath: socket(), device, addon, maxMappingBytes: options.maxMappingBytes });
    const front = new VhostUserPeer(addon, socket());
    cleanup.push(() => front.close());
    return front;
  }

  const at = (gpa: number): number => gpa - RAM_GPA;

  function putDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    const d = at(DESC) + 16 * i;
    ram.setBigUint64(d, BigInt(addr), true);
    ram.setUint32(d + 8, len, true);
    ram.setUint16(d + 12, flags, true);
    ram.setUint16(d + 14, next, true);
  }

  /** One request: header at DATA+0x100·slot, data, status; heads at 3·slot. */
  function putRequest(slot: number, type: number, sector: number, data: { addr: number; len: number }): number {
    const header = DATA + 0x100 * slot;
    ram.setUint32(at(header), type, true);
    ram.setUint32(at(header) + 4, 0, true);
    ram.setBigUint64(at(header) + 8, BigInt(sector), true);
    const status = header + 0x20;
    ramBytes[at(status)] = 0xff;
    const head = 3 * slot;
    const dataFlags = type === BlkRequestType.In ? DescFlag.Write : 0;
    putDesc(head, header, 16, DescFlag.Next, head + 1);
    putDesc(head + 1, data.addr, data.len, dataFlags | DescFlag.Next, head + 2);
    putDesc(head + 2, status, 1, DescFlag.Write, 0);
    const availIdx = ram.getUint16(at(AVAIL) + 2, true);
    ram.setUint16(at(AVAIL) + 4 + 2 * (availIdx % QUEUE_SIZE), head, true);
    ram.setUint16(at(AVAIL) + 2, availIdx + 1, true);
    return status;
  }

  /** Negotiate and start queue 0 the way QEMU 7.2 does; returns the kick and call eventfds. */
  async function startQueue(front: VhostUserPeer): Promise<{ kick: number; call: number }> {
    ramBytes.fill(0, 0, 0x20000);
    const features = await front.answer(Request.GetFeatures);
    const offered = decodeU64(features);
    front.send(Request.SetProtocolFeatures, encodeU64(OFFERED_PROTOCOL_FEATURES));
    front.send(Request.SetOwner);
    const acked = offered & ((1n << VirtioFeature.Version1) | (1n << F_PROTOCOL_FEATURES) | (1n << 9n) /* FLUSH */);
    expect(await front.acked(Request.SetFeatures, encodeU64(acked))).toBe(0n);
    const table = encodeMemTable([{ guestAddress: RAM_GPA, size: RAM_BYTES, userAddress: USER_BASE, mmapOffset: 0 }]);
    expect(await front.acked(Request.SetMemTable, table, [ramFd])).toBe(0n);
    expect(await front.acked(Request.SetVringNum, encodeVringState({ index: 0, num: QUEUE_SIZE }))).toBe(0n);
    const user = (gpa: number): number => gpa - RAM_GPA + USER_BASE;
    const addr = { index: 0, flags: 0, descUser: user(DESC), usedUser: user(USED), availUser: user(AVAIL), logGuest: 0 };
    expect(await front.acked(Request.SetVringAddr, encodeVringAddr(addr))).toBe(0n);
    expect(await front.acked(Request.SetVringBase, encodeVringState({ index: 0, num: 0 }))).toBe(0n);
    const kick = addon.eventfd();
    const call = addon.eventfd();
    cleanup.push(() => {
      addon.close(kick);
      addon.close(call);
    });
    expect(await front.acked(Request.SetVringCall, encodeU64(0n), [call])).toBe(0n);
    expect(await front.acked(Request.SetVringKick, encodeU64(0n), [kick])).toBe(0n);
    expect(await front.acked(Request.SetVringEnable, encodeVringState({ index: 0, num: 1 }))).toBe(0n);
    return { kick, call };
  }

  /** Kick the queue and wait until the host signals the call eventfd. */
  async function kickAndWait(kick: number, call: number): Promise<void> {
    const called = new Promise<void>((resolve) => {
      const w = addon.watch(call, () => {
        readSync(call, new Uint8Array(8));
        addon.unwatch(w);
        resolve();
      });
    });
    writeSync(kick, new Uint8Array(new BigUint64Array([1n]).buffer));
    await called;
  }

  test('handshake: features, protocol features, queue count and config come from the device', async () => {
    const front = start();
    const features = decodeU64(await front.answer(Request.GetFeatures));
    expect(features & (1n << F_PROTOCOL_FEATURES)).not.toBe(0n);
    expect(features & ~(1n << F_PROTOCOL_FEATURES)).toBe(device.deviceFeatures);
    const protocol = decodeU64(await front.answer(Request.GetProtocolFeatures));
    for (const bit of [ProtocolFeature.Config, ProtocolFeature.ReplyAck, ProtocolFeature.Mq, ProtocolFeature.BackendReq]) {
      expect((protocol >> bit) & 1n).toBe(1n);
    }
    expect(decodeU64(await front.answer(Request.GetQueueNum))).toBe(1n);
    const window = { offset: 0, size: BlkConfig.Size, flags: 0, data: new Uint8Array(BlkConfig.Size) };
    const config = decodeConfig(await front.answer(Request.GetConfig, encodeConfig(window)));
    expect(config.size).toBe(BlkConfig.Size);
    const capacity = new DataView(config.data.buffer, config.data.byteOffset).getBigUint64(BlkConfig.Capacity, true);
    expect(capacity).toBe(BigInt((1 << 20) / 512));
    expect(Buffer.from(config.data)).toEqual(Buffer.from(device.config));
  });

  test('REPLY_ACK: success is 0, a refused request is non-zero, and the connection goes on', async () => {
    const front = start();
    front.send(Request.SetProtocolFeatures, encodeU64(1n << ProtocolFeature.ReplyAck));
    expect(await front.acked(Request.SetOwner)).toBe(0n);
    expect(await front.acked(Request.SetVringNum, encodeVringState({ index: 0, num: 3 }))).not.toBe(0n);
    expect(await front.acked(Request.SetVringNum, encodeVringState({ index: 5, num: 8 }))).not.toBe(0n);
    expect(await front.acked(Request.SetLogBase, encodeU64(0n))).not.toBe(0n);
    expect(await front.acked(99)).not.toBe(0n);
    // A ring address outside every memory region is refused, not guessed.
    const table = encodeMemTable([{ guestAddress: RAM_GPA, size: RAM_BYTES, userAddress: USER_BASE, mmapOffset: 0 }]);
    expect(await front.acked(Request.SetMemTable, table, [ramFd])).toBe(0n);
    const addr = { index: 0, flags: 0, descUser: USER_BASE + RAM_BYTES, usedUser: USER_BASE, availUser: USER_BASE, logGuest: 0 };
    expect(await front.acked(Request.SetVringAddr, encodeVringAddr(addr))).not.toBe(0n);
    expect(decodeU64(await front.answer(Request.GetQueueNum))).toBe(1n);
  });

  test('a write and a read through the ring reach the image; GET_VRING_BASE returns the next avail index', async () => {
    const front = start();
    const { kick, call } = await startQueue(front);
    const payload = new Uint8Array(4096).map((_, i) => (i * 7 + 3) & 0xff);
    ramBytes.set(payload, at(DATA + 0x1000));
    const writeStatus = putRequest(0, BlkRequestType.Out, 2, { addr: DATA + 0x1000, len: 4096 });
    await kickAndWait(kick, call);
    expect(ram.getUint16(at(USED) + 2, true)).toBe(1);
    expect(ram.getUint32(at(USED) + 4, true)).toBe(0); // id: head 0
    expect(ramBytes[at(writeStatus)]).toBe(BlkStatus.Ok);
    expect(Buffer.from(readFileSync(image).subarray(1024, 1024 + 4096))).toEqual(Buffer.from(payload));

    const readStatus = putRequest(1, BlkRequestType.In, 2, { addr: DATA + 0x3000, len: 4096 });
    await kickAndWait(kick, call);
    expect(ram.getUint16(at(USED) + 2, true)).toBe(2);
    expect(ram.getUint32(at(USED) + 4 + 8, true)).toBe(3); // id: head 3
    expect(ram.getUint32(at(USED) + 4 + 8 + 4, true)).toBe(4097); // data + status
    expect(ramBytes[at(readStatus)]).toBe(BlkStatus.Ok);
    expect(Buffer.from(ramBytes.subarray(at(DATA + 0x3000), at(DATA + 0x3000) + 4096))).toEqual(Buffer.from(payload));

    const base = await front.answer(Request.GetVringBase, encodeVringState({ index: 0, num: 0 }));
    expect(decodeVringState(base)).toEqual({ index: 0, num: 2 });
    expect(device.stats.writes).toBe(1);
    expect(device.stats.reads).toBe(1);
  });

  test('a stopped ring is not served; restarting at the saved base serves what arrived meanwhile', async () => {
    const front = start();
    const { kick, call } = await startQueue(front);
    const base = await front.answer(Request.GetVringBase, encodeVringState({ index: 0, num: 0 }));
    expect(decodeVringState(base).num).toBe(0);
    putRequest(0, BlkRequestType.In, 0, { addr: DATA + 0x1000, len: 512 });
    writeSync(kick, new Uint8Array(new BigUint64Array([1n]).buffer)); // stale kick fd: nobody listens
    await new Promise((r) => setTimeout(r, 20));
    expect(device.stats.reads).toBe(0);
    const kick2 = addon.eventfd();
    cleanup.push(() => addon.close(kick2));
    const called = new Promise<void>((resolve) => {
      const w = addon.watch(call, () => {
        addon.unwatch(w);
        resolve();
      });
    });
    expect(await front.acked(Request.SetVringBase, encodeVringState({ index: 0, num: 0 }))).toBe(0n);
    expect(await front.acked(Request.SetVringKick, encodeU64(0n), [kick2])).toBe(0n);
    expect(await front.acked(Request.SetVringEnable, encodeVringState({ index: 0, num: 1 }))).toBe(0n);
    await called; // served on start, without a kick
    expect(device.stats.reads).toBe(1);
    expect(ram.getUint16(at(USED) + 2, true)).toBe(1);
  });

  test('a region mapped in pieces: a buffer across the seam is read and written whole', async () => {
    const front = start({ maxMappingBytes: 64 * 1024 });
    const { kick, call } = await startQueue(front);
    const seam = RAM_GPA + 0x20000;
    const payload = new Uint8Array(8192).map((_, i) => (i * 13 + 5) & 0xff);
    ramBytes.set(payload, at(seam - 4096));
    const writeStatus = putRequest(0, BlkRequestType.Out, 8, { addr: seam - 4096, len: 8192 });
    await kickAndWait(kick, call);
    expect(ramBytes[at(writeStatus)]).toBe(BlkStatus.Ok);
    expect(Buffer.from(readFileSync(image).subarray(4096, 4096 + 8192))).toEqual(Buffer.from(payload));
    ramBytes.fill(0, at(seam - 4096), at(seam + 4096));
    const readStatus = putRequest(1, BlkRequestType.In, 8, { addr: seam - 4096, len: 8192 });
    await kickAndWait(kick, call);
    expect(ramBytes[at(readStatus)]).toBe(BlkStatus.Ok);
    expect(Buffer.from(ramBytes.subarray(at(seam - 4096), at(seam + 4096)))).toEqual(Buffer.from(payload));
  });

  test("the driver's writeback choice (SET_CONFIG) survives a ring restart, as QEMU keeps showing it", async () => {
    const front = start();
    await startQueue(front);
    // Accept CONFIG_WCE too: without it the writeback field is read-only.
    expect(device.writeback).toBe(true);
    const wce = (1n << VirtioFeature.Version1) | (1n << F_PROTOCOL_FEATURES) | (1n << 9n) | (1n << 11n);
    await front.answer(Request.GetVringBase, encodeVringState({ index: 0, num: 0 }));
    expect(await front.acked(Request.SetFeatures, encodeU64(wce))).toBe(0n);
    const kick = addon.eventfd();
    cleanup.push(() => addon.close(kick));
    expect(await front.acked(Request.SetVringKick, encodeU64(0n), [kick])).toBe(0n);
    expect(await front.acked(Request.SetVringEnable, encodeVringState({ index: 0, num: 1 }))).toBe(0n);
    const off = { offset: BlkConfig.Writeback, size: 1, flags: 0, data: new Uint8Array([0]) };
    expect(await front.acked(Request.SetConfig, encodeConfig(off))).toBe(0n);
    expect(device.writeback).toBe(false);
    // Stop and restart the ring (a driver re-probe): the device resets, the choice is replayed.
    await front.answer(Request.GetVringBase, encodeVringState({ index: 0, num: 0 }));
    const kick2 = addon.eventfd();
    cleanup.push(() => addon.close(kick2));
    expect(await front.acked(Request.SetVringKick, encodeU64(0n), [kick2])).toBe(0n);
    expect(await front.acked(Request.SetVringEnable, encodeVringState({ index: 0, num: 1 }))).toBe(0n);
    expect(device.writeback).toBe(false);
  });

  test('a read-only device answers writes with IOERR and leaves the image alone', async () => {
    const before = readFileSync(image);
    const front = start({ readOnly: true });
    const { kick, call } = await startQueue(front);
    ramBytes.fill(0xee, at(DATA + 0x1000), at(DATA + 0x2000));
    const status = putRequest(0, BlkRequestType.Out, 0, { addr: DATA + 0x1000, len: 4096 });
    await kickAndWait(kick, call);
    expect(ramBytes[at(status)]).toBe(BlkStatus.IoErr);
    expect(Buffer.compare(readFileSync(image), before)).toBe(0);
  });

  test('after the front-end hangs up the device is reset and a new front-end is served', async () => {
    const front = start();
    await startQueue(front);
    front.close();
    cleanup.length = 0;
    await host.idle();
    const again = new VhostUserPeer(addon, socket());
    cleanup.push(() => again.close());
    expect(decodeU64(await again.answer(Request.GetQueueNum))).toBe(1n);
  });

  test('messages arriving in pieces are reassembled, and the host does not block waiting for the rest', async () => {
    const front = start();
    const window = { offset: 0, size: 8, flags: 0, data: new Uint8Array(8) };
    const bytes = new Uint8Array([
      ...encodeMessage(Request.GetQueueNum, HeaderFlag.Version),
      ...encodeMessage(Request.GetConfig, HeaderFlag.Version, encodeConfig(window)),
    ]);
    const first = front.next();
    const second = front.next();
    // Cut inside the first header, then inside the second payload.
    for (const [from, to] of [[0, 5], [5, 30], [30, bytes.length]] as const) {
      addon.sendmsg(front.fd, bytes.subarray(from, to));
      // The host must not block on a partial message: this timer still fires.
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(await first).toMatchObject({ request: Request.GetQueueNum, payload: encodeU64(1n) });
    const reply = await second;
    expect(reply).toMatchObject({ request: Request.GetConfig });
    const config = decodeConfig((reply as Message).payload);
    expect(Buffer.from(config.data)).toEqual(Buffer.from(device.config.subarray(0, 8)));
  });

  test('a malformed header drops the connection', async () => {
    const front = start();
    const hungUp = front.call(Request.GetQueueNum, undefined, undefined, 0x2 /* version 2 */);
    expect(await hungUp).toBe(HUNG_UP);
    await host.idle();
  });

  test('listening: a live socket is refused with EADDRINUSE, a stale one is replaced', () => {
    start();
    expect(() => addon.listen(socket())).toThrow(expect.objectContaining({ code: 'EADDRINUSE' }));
    const stalePath = join(dir, 'stale.sock');
    const stale = addon.listen(stalePath);
    addon.close(stale); // the file stays; nobody accepts on it
    const fresh = addon.listen(stalePath);
    addon.close(fresh);
    rmSync(stalePath);
  });
});
