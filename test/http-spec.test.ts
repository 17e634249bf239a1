// BackendSpec's 'http-range' and 'http-chunked' kinds open the HTTP backends
// (the same function both hosts use), and the public API exports them.

import { afterAll, beforeAll, expect, test } from 'vitest';
import * as api from '../src/index.ts';
import { openBackend } from '../src/host/browser/open-backend.ts';
import { pattern } from './contract/backend-contract.ts';
import { read, same } from './support/http-assert.ts';
import { FaultServer } from './support/http-server.ts';

let server: FaultServer;
beforeAll(async () => {
  server = await FaultServer.start();
});
afterAll(() => server.close());

test('an http-range spec opens a Range image with its options', async () => {
  const bytes = pattern(300_000, 61);
  server.putImage('spec', bytes);
  const b = await openBackend({ kind: 'http-range', url: server.imageUrl('spec'), options: { blockSize: 8192 } });
  expect(b).toBeInstanceOf(api.HttpRangeBackend);
  expect(b.readOnly).toBe(true);
  same(await read(b, 12_345, 100_000), bytes.subarray(12_345, 112_345));
  expect(server.log.find((r) => r.path === '/images/spec')!.range).toBe('bytes=0-8191');
  await b.close();
});

test('an http-chunked spec opens a packed image', async () => {
  const bytes = pattern(300_000, 62);
  await server.putChunked('spec', bytes, { chunkSize: 65536, compress: true });
  const b = await openBackend({ kind: 'http-chunked', url: server.manifestUrl('spec') });
  expect(b).toBeInstanceOf(api.HttpChunkedBackend);
  same(await read(b, 0, bytes.length), bytes);
  await b.close();
});

test('the public API exports the HTTP backends, their error and the pack core', () => {
  expect(api.HttpErrorReason.ImageChanged).toBe('image-changed');
  expect(api.StorageErrorCode.ImageChanged).toBe('image-changed');
  expect(new api.HttpError('corrupt', 'integrity', 'x', { url: 'u', chunk: 3 })).toBeInstanceOf(api.StorageError);
  expect(typeof api.packStream).toBe('function');
  expect(api.parseManifest).toBeTypeOf('function');
});
