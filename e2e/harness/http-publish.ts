// Publishing a test image on the project's fault server
// (test/support/http-server.ts) from a browser worker: a PUT stores it, as a
// Range image or packed into chunks there by the real pack core, and answers
// with the URL to open. Used by http-worker.ts (the HTTP backends called
// directly) and wasi-worker.ts (the same images through the WASI adapter).

import type { BlockBackend } from '../../src/backends/backend.ts';
import type { BackendFactory } from '../../test/contract/backend-contract.ts';

export type Form = 'range' | 'chunked' | 'chunked-gzip';

/** Backend options for tests: few, fast retries. */
export const FAST_HTTP = { retries: 3, backoffMs: 1, requestTimeoutMs: 10_000 };
/** The Range form's block size in tests: small, so the contract's reads span blocks. */
export const TEST_RANGE_BLOCK_BYTES = 16 * 1024;

let images = 0;

/** PUT `bytes` to `server` in `form` (chunked: 64 KiB chunks); the image's (or manifest's) URL. */
export async function publishImage(server: string, form: Form, bytes: Uint8Array): Promise<string> {
  const name = `w${Date.now().toString(36)}-${++images}`;
  const path = form === 'range' ? `/images/${name}` : `/chunked/${name}?chunkSize=65536${form === 'chunked-gzip' ? '&compress=1' : ''}`;
  const put = await fetch(`${server}${path}`, { method: 'PUT', body: bytes.slice() });
  if (put.status !== 201) throw new Error(`PUT ${path}: ${put.status}`);
  return put.text();
}

/** A read-only contract factory: each disk is a new image of `form` on `server`, opened by `open`. */
export function imageFactory(server: string, form: Form, open: (url: string) => Promise<BlockBackend>): BackendFactory {
  return {
    writable: false,
    create: async ({ size, data }) => {
      const bytes = new Uint8Array(size);
      if (data) bytes.set(data.subarray(0, size));
      return open(await publishImage(server, form, bytes));
    },
  };
}
