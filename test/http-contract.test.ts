// The backend contract's read-only part against both HTTP forms, in Node,
// served by the fault server (behaving). The Chromium run is e2e/http.spec.ts.

import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { HttpChunkedBackend } from '../src/backends/http-chunked.ts';
import { HttpRangeBackend } from '../src/backends/http-range.ts';
import { backendContract, type BackendFactory } from './contract/backend-contract.ts';
import { FaultServer } from './support/http-server.ts';

let server: FaultServer;
beforeAll(async () => {
  server = await FaultServer.start();
});
afterAll(() => server.close());

let images = 0;
function imageOf(size: number, data?: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(size);
  if (data) bytes.set(data.subarray(0, size));
  return bytes;
}

const factories: Record<string, BackendFactory> = {
  'HTTP Range': {
    writable: false,
    create: async ({ size, data }) => {
      const name = `range-${++images}`;
      server.putImage(name, imageOf(size, data));
      // Small blocks and runs, so the cases cross many block and run boundaries.
      return HttpRangeBackend.open(server.imageUrl(name), { blockSize: 16 * 1024, maxRequestBytes: 256 * 1024 });
    },
  },
  'HTTP chunked': {
    writable: false,
    create: async ({ size, data }) => {
      const name = `chunked-${++images}`;
      await server.putChunked(name, imageOf(size, data), { chunkSize: 64 * 1024 });
      return HttpChunkedBackend.open(server.manifestUrl(name));
    },
  },
  'HTTP chunked, gzip': {
    writable: false,
    create: async ({ size, data }) => {
      const name = `gz-${++images}`;
      await server.putChunked(name, imageOf(size, data), { chunkSize: 64 * 1024, compress: true });
      return HttpChunkedBackend.open(server.manifestUrl(name));
    },
  },
};

for (const [form, factory] of Object.entries(factories)) {
  describe(`backend contract: ${form}`, () => {
    test('the read-only cases apply', () => {
      expect(backendContract.filter((c) => c.applies(factory)).map((c) => c.name)).toEqual([
        'a new disk reads as zeroes',
        'initial data is readable and the rest is zero',
        'a read-only image reads back at unaligned offsets, across blocks, concurrently and into views',
        'reads outside a read-only image fail with out-of-range',
        'a read-only disk refuses writes, zeroes and discards and keeps its data',
      ]);
    });
    // Only the cases that apply are registered: the count above is the check, not a skip.
    for (const c of backendContract) {
      if (c.applies(factory)) test(c.name, () => c.run(factory));
    }
  });
}
