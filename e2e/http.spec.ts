// The HTTP image backends in Chromium: the backend contract's read-only part
// against a Range image, a chunked image and a gzip-chunked image, served
// cross-origin by the project's fault server (test/support/http-server.ts,
// started here, loopback only) to a cross-origin isolated page; then what
// only a browser shows: If-Range and the exposed headers through a CORS
// preflight, WebCrypto refusing a corrupt chunk, DecompressionStream.

import { FaultServer } from '../test/support/http-server.ts';
import { backendContract, pattern } from '../test/contract/backend-contract.ts';
import { chunkPath } from '../src/pack/manifest.ts';
import { expect, test } from './fixtures.ts';
import { openHarness } from './harness.ts';

let server: FaultServer;
test.beforeAll(async () => {
  server = await FaultServer.start();
});
test.afterAll(() => server.close());

/** The read-only cases: those that apply to a factory that cannot write. */
const readOnlyCases = backendContract.filter((c) =>
  c.applies({ writable: false, create: () => Promise.reject(new Error('capabilities only')) }),
);

for (const form of ['range', 'chunked', 'chunked-gzip'] as const) {
  test.describe(`backend contract: HTTP ${form}`, () => {
    test('the browser runs the same read-only cases', async ({ page }) => {
      const harness = await openHarness(page, 'http-harness');
      const cases = await harness.call<Array<{ name: string; applies: boolean }>>('contractCases', { server: server.url, form });
      expect(cases.filter((c) => c.applies).map((c) => c.name)).toEqual(readOnlyCases.map((c) => c.name));
    });
    for (const c of readOnlyCases) {
      test(c.name, async ({ page }) => {
        const harness = await openHarness(page, 'http-harness');
        expect(await harness.attempt('contractRun', { server: server.url, form, name: c.name })).toBeNull();
      });
    }
  });
}

test('the harness page is cross-origin isolated and the image server is another origin', async ({ page }) => {
  const harness = await openHarness(page, 'http-harness');
  expect(await harness.call('isolated')).toBe(true);
  expect(new URL(server.url).origin).not.toBe(new URL(page.url()).origin);
});

test('a Range image that changes under the reader: If-Range crosses CORS, the error is image-changed', async ({ page }) => {
  const size = 2 * 1024 * 1024;
  server.putImage('changing', pattern(size, 91));
  const harness = await openHarness(page, 'http-harness');
  expect(await harness.call('open', { url: server.imageUrl('changing'), form: 'range' })).toEqual({ size, readOnly: true });
  expect(await harness.call('mismatch', { offset: 100_000, length: 300_000, seed: 91, total: size })).toBe(-1);
  server.replaceImage('changing', pattern(size, 92));
  const err = await harness.attempt('mismatch', { offset: 1_500_000, length: 4096, seed: 91, total: size });
  expect(err).toMatchObject({ name: 'StorageError', code: 'image-changed' });
  const last = server.log.filter((r) => r.path === '/images/changing').at(-1)!;
  expect(last.ifRange).toBe('"changing-v1"');
  expect(last.status).toBe(200);
});

test('a chunk whose bytes do not match its hash never reaches the reader; a missing chunk is not zeroes', async ({ page }) => {
  const size = 1024 * 1024;
  const manifest = await server.putChunked('tampered', pattern(size, 93), { chunkSize: 64 * 1024, compress: true });
  const harness = await openHarness(page, 'http-harness');
  await harness.call('open', { url: server.manifestUrl('tampered'), form: 'chunked' });
  const chunk = (i: number) => `/chunked/tampered/${chunkPath(manifest.chunks[i]!, manifest.compression)}`;
  server.inject(chunk(3), { kind: 'corrupt' });
  const corrupt = await harness.attempt('mismatch', { offset: 3 * 65536, length: 4096, seed: 93, total: size });
  expect(corrupt).toMatchObject({ name: 'StorageError', code: 'corrupt' });
  expect(corrupt!.message).toContain(`chunk 3`);
  server.deleteFile(chunk(5));
  const missing = await harness.attempt('mismatch', { offset: 5 * 65536, length: 4096, seed: 93, total: size });
  expect(missing).toMatchObject({ name: 'StorageError', code: 'not-found' });
  // The rest of the image, gzip chunks inflated by DecompressionStream, is intact.
  expect(await harness.call('mismatch', { offset: 0, length: 3 * 65536, seed: 93, total: size })).toBe(-1);
  expect(await harness.call('mismatch', { offset: 6 * 65536, length: size - 6 * 65536, seed: 93, total: size })).toBe(-1);
});
