// The synchronous facade (src/wasi/sync-*.ts) in Node: the client on the
// test's thread, blocking in Atomics.wait, the server in a worker thread
// (e2e/harness/wasi-node-server.ts) awaiting a memory disk. The backend
// contract through the adapter over the facade; requests larger than the
// transfer area; an error's code and message crossing; a timeout, the fast
// failure while the server is still silent, and recovery once it answers.

import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, test } from 'vitest';
import { StorageError } from '../src/backends/backend.ts';
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
