// WASI programs on project disks, in Chromium (src/wasi, docs/wasi.md):
// - Ruby 3.4 from npm (@ruby/3.4-wasm-wasi) runs a script of IO#pread,
//   IO#pwrite, fsync, fdatasync, seek/read/write and File.size on an OPFS disk
//   called directly and an IndexedDB disk behind the synchronous facade, and
//   is refused writes on a read-only disk; what it wrote is read back without
//   the adapter. Once through the shim's Fd API, once with directDiskIo.
// - The backend contract through the adapter's Fd on OPFS (direct), and
//   OPFS, IndexedDB, an overlay and both HTTP image forms (Range, chunked;
//   the read-only part, images served cross-origin by the project's fault
//   server) behind the facade; every way of writing to an HTTP image through
//   the adapter gets its errno and nothing reaches the backend worker.
// - The backend worker ended mid-request: the program gets EIO (after its
//   timeout when the worker just died, at once when the host ended it), and
//   the host hears why.

import { expect, test } from './fixtures.ts';
import { openHarness, type Harness } from './harness.ts';
import { backendContract, pattern } from '../test/contract/backend-contract.ts';
import { FaultServer } from '../test/support/http-server.ts';

let server: FaultServer;
test.beforeAll(async () => {
  server = await FaultServer.start();
});
test.afterAll(() => server.close());

const MiB = 1 << 20;

interface RubyResult {
  run: { stdout: string[]; stderr: string[]; storageErrors: Array<{ code: string; message: string }> };
  check: Record<'opfs' | 'idb', { badRecords: number; seqMatches: boolean; bigSums: string; pre: number }>;
  startedS: number;
  endedS: number;
  roPre: number;
}

async function rubyProof(harness: Harness, directIo: boolean): Promise<void> {
  const idbName = `wasi-ruby-${directIo}`;
  const page = harness.page;
  await page.evaluate((name) => window.wasiPage!.remote('idb', { kind: 'indexeddb', name, size: 16 * (1 << 20) }), idbName);
  await page.evaluate((data) => window.wasiPage!.remote('ro', { kind: 'memory', size: 256 * 1024, data: new Uint8Array(data), readOnly: true }), [...pattern(256 * 1024, 33)]);
  const result = (await page.evaluate(([name, direct]) => window.wasiPage!.ruby(name, direct), [idbName, directIo] as const)) as RubyResult;
  const { run, check } = result;
  expect(run.stderr).toEqual([]);
  expect(run.storageErrors).toEqual([]);
  for (const name of ['opfs', 'idb'] as const) {
    const line = run.stdout.find((l) => l.startsWith(`${name} `));
    expect(line, run.stdout.join('\n')).toBeDefined();
    const fields = Object.fromEntries(line!.split(' ').slice(1).map((f) => f.split('=') as [string, string]));
    expect(fields.size).toBe(String(16 * MiB));
    expect(fields.stat).toBe(String(16 * MiB));
    // What the host put there before the program ran, read by IO#pread.
    expect(Number(fields.pre)).toBe(check[name].pre);
    expect(fields.records).toBe('true');
    expect(fields.seq).toBe('true');
    expect(fields.pos).toBe(String(3 * MiB + 5 + 300_000));
    // Ruby wrote 3 MiB in one pwrite (the facade splits it) and read it back equal.
    expect(line).toContain(`big=${3 * MiB} true ${check[name].bigSums}`);
    // fstat's mtime comes from the adapter's filestat layout (the shim's own misplaces it).
    const mtime = Number(fields.mtime);
    expect(mtime).toBeGreaterThanOrEqual(result.startedS - 1);
    expect(mtime).toBeLessThanOrEqual(result.endedS + 1);
    // Read back without the adapter.
    expect(check[name].badRecords).toBe(0);
    expect(check[name].seqMatches).toBe(true);
  }
  expect(run.stdout).toContain(`ro pre=${result.roPre} size=${256 * 1024} write=Errno::EBADF`);
  expect(run.stdout).toContain('eof=EOFError');
}

test('Ruby (npm @ruby/3.4-wasm-wasi) does positioned I/O on OPFS and IndexedDB disks through the shim Fd API', async ({ page }) => {
  test.setTimeout(240_000);
  await rubyProof(await openHarness(page, 'wasi'), false);
});

test('the same Ruby script with directDiskIo (iovecs straight to the backend)', async ({ page }) => {
  test.setTimeout(240_000);
  await rubyProof(await openHarness(page, 'wasi'), true);
});

for (const backend of ['opfs', 'opfs-facade', 'indexeddb', 'overlay-facade']) {
  test(`backend contract through the adapter's Fd: ${backend}`, async ({ page }) => {
    test.setTimeout(300_000);
    const harness = await openHarness(page, 'wasi');
    const { ran, failures } = await harness.call<{ ran: string[]; failures: Record<string, string> }>('contract', { backend });
    expect(failures).toEqual({});
    expect(ran.length).toBeGreaterThanOrEqual(17);
  });
}

/** The read-only cases: those that apply to a factory that cannot write. */
const readOnlyCases = backendContract
  .filter((c) => c.applies({ writable: false, create: () => Promise.reject(new Error('capabilities only')) }))
  .map((c) => c.name);

for (const form of ['range', 'chunked'] as const) {
  test(`backend contract through the adapter's Fd: HTTP ${form} image behind the facade (read-only cases)`, async ({ page }) => {
    test.setTimeout(300_000);
    const harness = await openHarness(page, 'wasi');
    const { ran, failures } = await harness.call<{ ran: string[]; failures: Record<string, string> }>('contract', { backend: `http-${form}-facade`, server: server.url });
    expect(failures).toEqual({});
    expect(ran).toEqual(readOnlyCases);
  });

  test(`writes through the adapter to an HTTP ${form} image: ROFS at open for writing, BADF on every write, nothing sent`, async ({ page }) => {
    const harness = await openHarness(page, 'wasi');
    const r = await harness.call<{
      errnos: Record<string, number>;
      opens: Record<string, number>;
      writesReachedWorker: number;
      reported: string[];
      readOnly: boolean;
      syncErrno: number;
      readErrno: number;
      intact: boolean;
      expected: { BADF: number; ROFS: number; SUCCESS: number };
    }>('httpWrites', { server: server.url, form });
    const { BADF, ROFS, SUCCESS } = r.expected;
    expect(r.readOnly).toBe(true);
    expect(r.opens).toEqual({ writeRights: ROFS, truncate: ROFS, readRights: SUCCESS, noRights: SUCCESS });
    expect(r.errnos).toEqual({ fd_pwrite: BADF, fd_write: BADF, fd_filestat_set_size: BADF, fd_allocate: BADF, iovec_fd_pwrite: BADF, iovec_fd_write: BADF });
    // Refused by the adapter: no write crossed to the backend worker, and no storage error was raised.
    expect(r.writesReachedWorker).toBe(0);
    expect(r.reported).toEqual([]);
    expect(r.syncErrno).toBe(SUCCESS);
    expect(r.readErrno).toBe(0);
    expect(r.intact).toBe(true);
  });
}

interface StallResult {
  run: { stdout: string[]; stderr: string[]; storageErrors: Array<{ code: string; message: string }> };
}

test('a backend worker that dies mid-request: the program gets EIO after its timeout, then at once', async ({ page }) => {
  await openHarness(page, 'wasi');
  await page.evaluate(() => window.wasiPage!.remote('stall', { kind: 'module', url: '/e2e/harness/wasi-stall-backend.ts', options: { size: 4 * (1 << 20) } }));
  const { run } = (await page.evaluate(() => window.wasiPage!.stall('stall', 'kill', 1500))) as StallResult;
  expect(run.stdout).toEqual(['before [1, 2, 3, 4]', 'stalled read Errno::EIO', 'next read Errno::EIO']);
  expect(run.storageErrors).toHaveLength(2);
  expect(run.storageErrors[0]!.code).toBe('io');
  expect(run.storageErrors[0]!.message).toContain('took the request and did not answer within 1500 ms (read)');
  expect(run.storageErrors[1]!.message).toContain('still silent about an earlier request');
});

test('a backend worker ended by its host mid-request: the program gets EIO at once (closed)', async ({ page }) => {
  await openHarness(page, 'wasi');
  await page.evaluate(() => window.wasiPage!.remote('stall', { kind: 'module', url: '/e2e/harness/wasi-stall-backend.ts', options: { size: 4 * (1 << 20) } }));
  // A timeout far beyond the test's: only the host's Closed mark can end this wait in time.
  const { run } = (await page.evaluate(() => window.wasiPage!.stall('stall', 'terminate', 600_000))) as StallResult;
  expect(run.stdout).toEqual(['before [1, 2, 3, 4]', 'stalled read Errno::EIO', 'next read Errno::EIO']);
  expect(run.storageErrors.map((e) => e.code)).toEqual(['closed', 'closed']);
});
