// The synchronous facade (src/wasi/sync-*.ts) in Node: the client on the
// test's thread, blocking in Atomics.wait, the server in a worker thread
// (e2e/harness/wasi-node-server.ts) awaiting a memory disk. The backend
// contract through the adapter over the facade; requests larger than the
// transfer area; an error's code and message crossing; a timeout, the fast
// failure while the server is still silent, and recovery once it answers;
// the server's readahead for sequential reads of an asynchronous backend;
// and what the client refuses from a server that breaks the protocol.

import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, test } from 'vitest';
import { StorageError } from '../src/backends/backend.ts';
import { wasi } from '@bjorn3/browser_wasi_shim';
import { DiskFile } from '../src/wasi/disk-file.ts';
import { SyncBackendClient } from '../src/wasi/sync-client.ts';
import { ChannelWord, createChannel } from '../src/wasi/sync-protocol.ts';
import type { NodeServerData } from '../e2e/harness/wasi-node-server.ts';
import { adapterFactory } from '../e2e/harness/wasi-fd-backend.ts';
import { backendContract, pattern, type BackendFactory } from './contract/backend-contract.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const workers: Worker[] = [];

afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.terminate()));
});

/** Start a server thread on a new channel; resolve once it published the disk. */
async function serve(options: Omit<NodeServerData, 'channel'>, transferBytes = 64 * KiB): Promise<SharedArrayBuffer> {
  const channel = createChannel(transferBytes);
  const worker = new Worker(new URL('../e2e/harness/wasi-node-boot.mjs', import.meta.url), {
    workerData: { ...options, channel, module: new URL('../e2e/harness/wasi-node-server.ts', import.meta.url).href } satisfies NodeServerData & { module: string },
  });
  workers.push(worker);
  let failed: unknown = null;
  worker.on('error', (err) => (failed = err));
  const words = new Int32Array(channel, 0, 8);
  while (Atomics.load(words, ChannelWord.Info) === 0) {
    if (failed) throw failed;
    await new Promise((r) => setTimeout(r, 5));
  }
  return channel;
}

/** Offsets of the reads the server's backend got, in order (NodeServerData.readLog). */
function readOffsets(log: SharedArrayBuffer): number[] {
  const words = new Int32Array(log);
  return [...words.slice(1, 1 + Atomics.load(words, 0))];
}

/** Wait (on the event loop) until the server's backend got `count` reads. */
async function untilReads(log: SharedArrayBuffer, count: number): Promise<number[]> {
  while (readOffsets(log).length < count) await new Promise((r) => setTimeout(r, 5));
  return readOffsets(log);
}

async function caught(fn: () => unknown): Promise<StorageError> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof StorageError) return err;
    throw err;
  }
  throw new Error('nothing was thrown');
}

/** Write `data` at 0 and read it back equal. */
function expectRoundTrip(client: SyncBackendClient, data: Uint8Array): void {
  client.write(0, data);
  const back = new Uint8Array(data.length);
  client.read(0, back);
  expect(back).toEqual(data);
}

describe('backend contract through the WASI adapter: memory behind the facade', () => {
  const factory = adapterFactory({
    create: async ({ size, data, readOnly }) => new SyncBackendClient(await serve({ size, data, readOnly }), { timeoutMs: 30_000 }),
    resizable: true,
  } satisfies BackendFactory);
  test('every contract case is either run or declared not applicable', () => {
    expect(backendContract.filter((c) => c.applies(factory)).length).toBeGreaterThanOrEqual(16);
  });
  for (const c of backendContract) {
    if (c.applies(factory)) test(c.name, () => c.run(factory), 60_000);
  }
});

describe('the facade', () => {
  test('a request larger than the transfer area goes as pieces and lands in place', async () => {
    const client = new SyncBackendClient(await serve({ size: 8 * MiB }, 64 * KiB));
    expect(client.transferBytes).toBe(64 * KiB);
    const data = pattern(3 * MiB + 777, 1);
    client.write(1 * MiB + 5, data);
    const back = new Uint8Array(data.length);
    client.read(1 * MiB + 5, back);
    // (toEqual walks 3 MiB element by element for half a minute; compare bytes.)
    expect(back.findIndex((b, i) => b !== data[i])).toBe(-1);
    const before = new Uint8Array(5);
    client.read(1 * MiB, before);
    expect(before).toEqual(new Uint8Array(5));
    expect(client.size).toBe(8 * MiB);
    client.resize!(16 * MiB);
    expect(client.size).toBe(16 * MiB);
  }, 60_000);

  test("a backend's StorageError crosses with its code and message", async () => {
    const client = new SyncBackendClient(await serve({ size: 1 * MiB, corruptAt: 4096 }));
    const error = await caught(() => client.read(4096, new Uint8Array(512)));
    expect(error.code).toBe('corrupt');
    expect(error.message).toContain('checksum mismatch at 4096');
    // The channel goes on serving.
    expectRoundTrip(client, pattern(100, 2));
  }, 60_000);

  test('a timeout is EIO; while the server is silent the next call fails at once; its late answer is dropped and the channel recovers', async () => {
    const channel = await serve({ size: 1 * MiB, slowAt: 8192, slowMs: 3000 });
    const client = new SyncBackendClient(channel, { timeoutMs: 200 });
    const timedOut = await caught(() => client.read(8192, new Uint8Array(16)));
    expect(timedOut.code).toBe('io');
    expect(timedOut.message).toContain('took the request and did not answer within 200 ms (read)');
    const silent = await caught(() => client.read(0, new Uint8Array(16)));
    expect(silent.message).toContain('still silent about an earlier request');
    // Wait for the server's late answer (its Served count moves), then go on.
    const words = new Int32Array(channel, 0, 8);
    const served = Atomics.load(words, ChannelWord.Served);
    while (Atomics.load(words, ChannelWord.Served) === served) await new Promise((r) => setTimeout(r, 20));
    expectRoundTrip(client, pattern(16, 3));
  }, 60_000);

  test('close ends the server, and later calls get closed', async () => {
    const channel = await serve({ size: 1 * MiB });
    const client = new SyncBackendClient(channel);
    client.close();
    client.close();
    expect((await caught(() => client.read(0, new Uint8Array(1)))).code).toBe('closed');
  }, 60_000);
});

describe('readahead: sequential reads of an asynchronous backend', () => {
  const piece = 64 * KiB;

  test('the next range is read before it is asked and answered from there; a write in it is not hidden by it', async () => {
    const log = new SharedArrayBuffer(4 * 64);
    const data = pattern(1 * MiB, 5);
    const client = new SyncBackendClient(await serve({ size: 1 * MiB, data, asyncReads: true, readLog: log }));
    for (let i = 0; i < 4; i++) {
      const got = new Uint8Array(piece);
      client.read(i * piece, got);
      expect(got.findIndex((b, j) => b !== data[i * piece + j])).toBe(-1);
    }
    // Asked for pieces 0-3; the backend read 0 and 1 when asked, 2 and 3 ahead (answered from there), and 4 ahead.
    expect(await untilReads(log, 5)).toEqual([0, 1, 2, 3, 4].map((i) => i * piece));
    const fresh = pattern(512, 6);
    client.write(4 * piece + 100, fresh);
    const got = new Uint8Array(piece);
    client.read(4 * piece, got);
    expect(got.subarray(100, 612)).toEqual(fresh);
    expect(got.subarray(0, 100)).toEqual(data.subarray(4 * piece, 4 * piece + 100));
    // The readahead was dropped at the write and the read made again.
    expect(readOffsets(log).slice(5)).toEqual([4 * piece]);
  }, 60_000);

  test("a readahead that fails is dropped: the read it stood for is made again and its error is the caller's", async () => {
    const log = new SharedArrayBuffer(4 * 64);
    const client = new SyncBackendClient(await serve({ size: 1 * MiB, asyncReads: true, readLog: log, corruptAt: 2 * piece }));
    client.read(0, new Uint8Array(piece));
    client.read(piece, new Uint8Array(piece));
    await untilReads(log, 3);
    const error = await caught(() => client.read(2 * piece, new Uint8Array(piece)));
    expect(error.code).toBe('corrupt');
    expect(readOffsets(log)).toEqual([0, piece, 2 * piece, 2 * piece]);
    client.read(3 * piece, new Uint8Array(piece));
  }, 60_000);

  test('no readahead past the end of the disk, and none for reads that do not follow on', async () => {
    const log = new SharedArrayBuffer(4 * 64);
    const client = new SyncBackendClient(await serve({ size: 4 * piece, asyncReads: true, readLog: log }));
    for (let i = 0; i < 4; i++) client.read(i * piece, new Uint8Array(piece));
    client.read(0, new Uint8Array(4096));
    client.read(2 * piece, new Uint8Array(4096));
    // A flush crosses after the last read, so any readahead it started has been awaited.
    client.flush();
    expect(readOffsets(log)).toEqual([0, 1, 2, 3].map((i) => i * piece).concat([0, 2 * piece]));
  }, 60_000);
});

describe('answers the client refuses: EIO, saying what came back', () => {
  for (const size of [1000, -512, 2 ** 53, Number.NaN]) {
    test(`a published disk size of ${size}`, async () => {
      const channel = await serve({ size: 1 * MiB, forge: { publishedSize: size } });
      const error = await caught(() => new SyncBackendClient(channel, { name: 'forged' }));
      expect(error.code).toBe('io');
      expect(error.message).toBe(`forged: the backend worker published a disk size of ${size} bytes (not a whole number of 512-byte sectors); the answer is refused`);
    }, 60_000);
  }

  const refused: Array<[string, NonNullable<NodeServerData['forge']>['answer'], (c: SyncBackendClient) => unknown, string]> = [
    ['a state the protocol does not have', 'bad-state', (c) => c.read(0, new Uint8Array(4096)), 'answered read with state 9'],
    ['fewer bytes moved than asked', 'short-result', (c) => c.write(0, new Uint8Array(4096)), 'reported 4095 bytes moved for a write of 4096'],
    ['an error code that is no StorageError code', 'bad-error-code', (c) => c.flush(), 'failed a request with error code 99'],
    ['a message longer than a message can be', 'long-message', (c) => c.read(0, new Uint8Array(512)), `('corrupt') with a message of ${1 << 30} bytes`],
  ];
  for (const [name, answer, call, says] of refused) {
    test(name, async () => {
      const client = new SyncBackendClient(await serve({ size: 1 * MiB, forge: { answer } }));
      const error = await caught(() => call(client));
      expect(error.code).toBe('io');
      expect(error.message).toContain(says);
    }, 60_000);
  }

  test('more bytes moved than asked: nothing reaches the caller, and through the adapter the program gets EIO', async () => {
    const client = new SyncBackendClient(await serve({ size: 1 * MiB, forge: { answer: 'long-result' } }));
    const dst = new Uint8Array(4096);
    const error = await caught(() => client.read(0, dst));
    expect(error.code).toBe('io');
    expect(error.message).toContain('reported 8192 bytes moved for a read of 4096');
    expect(dst.every((b) => b === 0)).toBe(true);
    const reported: StorageError[] = [];
    const fd = new DiskFile(client, { onStorageError: (e) => reported.push(e) }).open();
    expect(fd.fd_pread(4096, 0n).ret).toBe(wasi.ERRNO_IO);
    expect(reported.map((e) => e.message)).toEqual([expect.stringContaining('reported 8192 bytes moved for a read of 4096; the answer is refused')]);
  }, 60_000);

  test('a resize that leaves another size than asked: refused, and the client keeps the size it knew', async () => {
    const client = new SyncBackendClient(await serve({ size: 1 * MiB, forge: { answer: 'resize-other-size' } }));
    const error = await caught(() => client.resize!(2 * MiB));
    expect(error.code).toBe('io');
    expect(error.message).toContain(`reported a size of ${2 * MiB + 512} bytes after a resize to ${2 * MiB}`);
    expect(client.size).toBe(1 * MiB);
  }, 60_000);
});
