// Harness worker for e2e/http.spec.ts: the backend contract's read-only part
// against both HTTP forms, and single reads for the fault tests, in a
// dedicated worker of a cross-origin isolated page. The image server
// (test/support/http-server.ts) runs in the Playwright process on another
// port: every request here is cross-origin, as with a CDN, so CORS, CORP and
// the exposed headers are exercised for real.

import type { BlockBackend } from '../../src/backends/backend.ts';
import { HttpChunkedBackend } from '../../src/backends/http-chunked.ts';
import { HttpRangeBackend } from '../../src/backends/http-range.ts';
import { backendContract, pattern, type BackendFactory } from '../../test/contract/backend-contract.ts';
import { hex } from '../../src/pack/manifest.ts';
import { serve } from './rpc.ts';
import { FAST_HTTP as FAST, TEST_RANGE_BLOCK_BYTES, imageFactory, type Form } from './http-publish.ts';

export type { Form };

/** Images the test server publishes (the chunked forms packed there by the real pack core), opened here. */
function factory(server: string, form: Form): BackendFactory {
  return imageFactory(server, form, (url) =>
    form === 'range' ? HttpRangeBackend.open(url, { ...FAST, blockSize: TEST_RANGE_BLOCK_BYTES }) : HttpChunkedBackend.open(url, FAST),
  );
}

let open: BlockBackend | null = null;

serve({
  isolated: () => crossOriginIsolated,
  contractCases: ({ server, form }: { server: string; form: Form }) =>
    backendContract.map((c) => ({ name: c.name, applies: c.applies(factory(server, form)) })),
  contractRun: async ({ server, form, name }: { server: string; form: Form; name: string }) => {
    const c = backendContract.find((x) => x.name === name);
    if (!c) throw new Error(`no contract case "${name}"`);
    await c.run(factory(server, form));
  },
  /** Open an image the test published. */
  open: async ({ url, form }: { url: string; form: Form }) => {
    open?.close();
    open = form === 'range' ? await HttpRangeBackend.open(url, FAST) : await HttpChunkedBackend.open(url, FAST);
    return { size: open.size, readOnly: open.readOnly };
  },
  /** Index of the first byte at offset that differs from pattern(total, seed)[offset..], or -1. */
  mismatch: async ({ offset, length, seed, total }: { offset: number; length: number; seed: number; total: number }) => {
    const dst = new Uint8Array(new SharedArrayBuffer(length));
    await open!.read(offset, dst);
    const expected = pattern(total, seed).subarray(offset, offset + length);
    return dst.findIndex((b, i) => b !== expected[i]);
  },
  /** SHA-256 (hex) of `length` bytes read at `offset` through the open backend. */
  sha256: async ({ offset, length }: { offset: number; length: number }) => {
    const dst = new Uint8Array(length);
    await open!.read(offset, dst);
    return hex(await crypto.subtle.digest('SHA-256', dst));
  },
  close: () => {
    open?.close();
    open = null;
  },
  /** Open a chunked image with an OPFS chunk cache in `directory`; whether the cache is in use. */
  openCached: async ({ url, maxBytes, directory }: { url: string; maxBytes: number; directory: string }) => {
    open?.close();
    const backend = await HttpChunkedBackend.open(url, { ...FAST, chunkCache: { maxBytes, directory } });
    open = backend;
    return { size: backend.size, cached: backend.chunkCache !== null };
  },
  cacheStats: () => (open as HttpChunkedBackend).chunkCache!.stats,
  /** The cache folder's files and their sizes, as OPFS has them. */
  cacheFiles: async ({ directory }: { directory: string }) => {
    const dir = await opfsDir(directory);
    const files: Array<{ name: string; size: number }> = [];
    for await (const [name, handle] of dir as unknown as AsyncIterable<[string, FileSystemFileHandle]>) {
      files.push({ name, size: (await handle.getFile()).size });
    }
    return files.sort((a, b) => a.name.localeCompare(b.name));
  },
  /** Overwrite a cached chunk file: flip one byte (`flip`) or cut it short (`truncate`). */
  damageCacheFile: async ({ directory, name, how }: { directory: string; name: string; how: 'flip' | 'truncate' }) => {
    const handle = await (await (await opfsDir(directory)).getFileHandle(name)).createSyncAccessHandle();
    try {
      if (how === 'truncate') handle.truncate(Math.floor(handle.getSize() / 2));
      else {
        const b = new Uint8Array(1);
        handle.read(b, { at: 100 });
        b[0]! ^= 0x01;
        handle.write(b, { at: 100 });
      }
    } finally {
      handle.close();
    }
  },
});

async function opfsDir(path: string): Promise<FileSystemDirectoryHandle> {
  let dir = await navigator.storage.getDirectory();
  for (const part of path.split('/').filter(Boolean)) dir = await dir.getDirectoryHandle(part);
  return dir;
}
