// The WASI program's worker for e2e/wasi.spec.ts (a dedicated worker: the
// facade blocks in Atomics.wait, and OPFS sync handles live only here).
//
// - contract: the backend contract through the adapter's Fd
//   (wasi-fd-backend.ts) on OPFS called directly, and on IndexedDB, OPFS, an
//   overlay and both HTTP image forms behind the facade (a backend worker
//   this worker starts; the HTTP images published on the test's server);
// - httpWrites: every way a program writes to an HTTP image through the
//   adapter, and the errno each gets;
// - ruby: Ruby 3.4 with an OPFS disk (direct), an IndexedDB disk and a
//   read-only memory disk (both through the facade, channels from the page)
//   runs a script of positioned I/O; the disks are then read back here
//   without the adapter and compared with what the script was told to write;
// - stall: Ruby reads a disk whose backend worker the page ends mid-request.

import { IndexedDbBackend } from '../../src/backends/indexeddb.ts';
import { OpfsBackend } from '../../src/backends/opfs.ts';
import type { BlockBackend } from '../../src/backends/backend.ts';
import type { BackendSpec } from '../../src/host/browser/worker-protocol.ts';
import { startBackendWorker } from '../../src/wasi/backend-host.ts';
import { SyncBackendClient } from '../../src/wasi/sync-client.ts';
import { ChannelWord } from '../../src/wasi/sync-protocol.ts';
import { directDiskIo } from '../../src/wasi/direct-io.ts';
import { DiskFile } from '../../src/wasi/disk-file.ts';
import { WASI, wasi } from '@bjorn3/browser_wasi_shim';
import { backendContract, pattern, type BackendFactory } from '../../test/contract/backend-contract.ts';
import { namedDiskFactory } from '../../test/contract/named-disks.ts';
import { serve } from './rpc.ts';
import { FAST_HTTP, TEST_RANGE_BLOCK_BYTES, imageFactory, publishImage } from './http-publish.ts';
import { specOverlayFactory } from './overlay-factories.ts';
import { adapterFactory } from './wasi-fd-backend.ts';
import { runRuby } from './wasi-ruby.ts';
import { STALL_OFFSET } from './wasi-stall-backend.ts';

const MiB = 1 << 20;

/** One backend worker serves every facade disk of the contract run. */
let backendWorker: Worker | undefined;

async function facadeDisk(spec: BackendSpec): Promise<BlockBackend> {
  backendWorker ??= new Worker(new URL('../../src/wasi/backend-worker.ts', import.meta.url), { type: 'module' });
  const remote = await startBackendWorker(spec, { worker: backendWorker, transferBytes: 256 * 1024 });
  return remote.client({ timeoutMs: 20_000, name: `${spec.kind} disk` });
}

/** A facade disk on an HTTP image of `form` at `url` (the spec the backend worker opens). */
function httpSpec(form: 'range' | 'chunked', url: string): BackendSpec {
  return form === 'range' ? { kind: 'http-range', url, options: { ...FAST_HTTP, blockSize: TEST_RANGE_BLOCK_BYTES } } : { kind: 'http-chunked', url, options: FAST_HTTP };
}

/** Factories by backend name; the HTTP ones publish their images on `server`. */
const factories: Record<string, (server: string) => BackendFactory> = {
  opfs: () => namedDiskFactory((name, o) => OpfsBackend.open({ name, directory: 'wasi-contract', ...o }), { sparseHugeDisks: true, resizable: true }),
  'opfs-facade': () =>
    namedDiskFactory((name, o) => facadeDisk({ kind: 'opfs', name, directory: 'wasi-contract-facade', ...o }), { sparseHugeDisks: true, resizable: true }),
  indexeddb: () =>
    namedDiskFactory((name, o) => facadeDisk({ kind: 'indexeddb', name: `wasi-contract-${name}`, ...o }), { sparseHugeDisks: true, resizable: true }),
  // A copy-on-write overlay (IndexedDB base and top) opened by its spec in the backend worker.
  'overlay-facade': () => specOverlayFactory('indexeddb', 'wasi-overlay', facadeDisk),
  'http-range-facade': (server) => imageFactory(server, 'range', (url) => facadeDisk(httpSpec('range', url))),
  'http-chunked-facade': (server) => imageFactory(server, 'chunked', (url) => facadeDisk(httpSpec('chunked', url))),
};

/** The 4 KiB record the Ruby script writes as record i: [i, seed] as two big-endian u32, 512 times. */
function record(i: number, seed: number): Uint8Array {
  const out = new Uint8Array(4096);
  const view = new DataView(out.buffer);
  for (let at = 0; at < 4096; at += 8) {
    view.setUint32(at, i);
    view.setUint32(at + 4, seed);
  }
  return out;
}

const RECORDS = 64;
const recordOffset = (i: number): number => 2 * MiB + ((i * 37) % 64) * 3 * 4096;
const PRE_OFFSET = MiB + 123;
const PRE_BYTES = 65536;
const BIG_OFFSET = 6 * MiB + 512;

function sum32(bytes: Uint8Array): number {
  let s = 0;
  for (const b of bytes) s = (s + b) >>> 0;
  return s;
}

/** The script: for each writable disk, positioned writes and reads, fsync, a sequential pass and a 3 MiB pwrite; then the read-only disk. */
function rubyScript(writable: Array<{ name: string; seed: number }>): string {
  return `
def rec(i, seed) = [i, seed].pack('NN') * 512
${JSON.stringify(writable)
  .replace(/"name":/g, 'name: ')
  .replace(/"seed":/g, 'seed: ')}.each do |d|
  name, seed = d[:name], d[:seed]
  File.open("/disks/#{name}.img", 'r+b') do |f|
    pre = f.pread(${PRE_BYTES}, ${PRE_OFFSET})
    ${RECORDS}.times { |i| f.pwrite(rec(i, seed), ${2 * MiB} + ((i * 37) % 64) * 3 * 4096) }
    f.fsync
    back = ${RECORDS}.times.all? { |i| f.pread(4096, ${2 * MiB} + ((i * 37) % 64) * 3 * 4096) == rec(i, seed) }
    seq = ('%08d' % seed) * 37_500
    f.seek(${3 * MiB + 5})
    f.write(seq)
    f.flush
    f.seek(${3 * MiB + 5})
    seq_back = f.read(seq.bytesize) == seq
    f.fdatasync
    big = Random.new(seed).bytes(3 << 20)
    wrote = f.pwrite(big, ${BIG_OFFSET})
    big_back = f.pread(big.bytesize, ${BIG_OFFSET}) == big
    sums = 3.times.map { |k| big.byteslice(k << 20, 1 << 20).sum(32) }
    f.fsync
    puts "#{name} size=#{f.size} stat=#{File.size(f.path)} pre=#{pre.sum(32)} records=#{back} seq=#{seq_back} pos=#{f.pos} big=#{wrote} #{big_back} #{sums.join(',')} mtime=#{f.stat.mtime.to_i}"
  end
end
File.open('/disks/ro.img', 'r+b') do |f|
  head = f.pread(${PRE_BYTES}, 100)
  begin
    f.pwrite('x', 0)
    puts 'ro write accepted'
  rescue SystemCallError => e
    puts "ro pre=#{head.sum(32)} size=#{f.size} write=#{e.class}"
  end
end
# pread at the end of the disk reads 0 bytes, which Ruby reports as EOFError.
puts "eof=#{File.open('/disks/ro.img', 'rb') { |f| f.pread(10, f.size) rescue $!.class }}"
`;
}

serve({
  isolated: () => crossOriginIsolated,
  /** Run every contract case that applies through the adapter; returns failures by name. */
  contract: async ({ backend, server }: { backend: string; server?: string }) => {
    const factory = adapterFactory(factories[backend]!(server ?? ''));
    const ran: string[] = [];
    const failures: Record<string, string> = {};
    for (const c of backendContract) {
      if (!c.applies(factory)) continue;
      ran.push(c.name);
      try {
        await c.run(factory);
      } catch (err) {
        failures[c.name] = String(err);
      }
    }
    return { ran, failures };
  },
  /**
   * An HTTP image of `form` behind the facade, opened through the adapter:
   * what each way of writing to it answers (errnos), whether any of them
   * reached the backend worker (its Served count), and whether the image
   * still reads back as published.
   */
  httpWrites: async ({ server, form }: { server: string; form: 'range' | 'chunked' }) => {
    const image = pattern(256 * 1024, 51);
    const url = await publishImage(server, form, image);
    backendWorker ??= new Worker(new URL('../../src/wasi/backend-worker.ts', import.meta.url), { type: 'module' });
    const remote = await startBackendWorker(httpSpec(form, url), { worker: backendWorker, transferBytes: 256 * 1024 });
    const client = remote.client({ timeoutMs: 20_000, name: `http-${form} disk` });
    const served = () => Atomics.load(new Int32Array(remote.channel, 0, 8), ChannelWord.Served);
    const reported: string[] = [];
    const file = new DiskFile(client, { name: 'http image', onStorageError: (e) => reported.push(e.code) });
    const openWith = (oflags: number, rights: bigint) => file.path_open(oflags, rights, 0).ret;
    const opens = {
      writeRights: openWith(0, BigInt(wasi.RIGHTS_FD_WRITE)),
      truncate: openWith(wasi.OFLAGS_TRUNC, 0n),
      readRights: openWith(0, BigInt(wasi.RIGHTS_FD_READ)),
      noRights: openWith(0, 0n),
    };
    const fd = file.path_open(0, 0n, 0).fd_obj!;
    const servedBefore = served();
    // The calls a program's imports make: the shim's Fd API, and the iovec path of directDiskIo.
    const memory = new WebAssembly.Memory({ initial: 1 });
    const shim = new WASI([], [], [undefined as never, undefined as never, undefined as never, fd]);
    directDiskIo(shim);
    shim.inst = { exports: { memory } } as never;
    const view = new DataView(memory.buffer);
    view.setUint32(0, 1024, true);
    view.setUint32(4, 4096, true);
    const imports = shim.wasiImport as Record<string, (...args: unknown[]) => number>;
    const errnos = {
      fd_pwrite: fd.fd_pwrite(new Uint8Array(512).fill(7), 0n).ret,
      fd_write: fd.fd_write(new Uint8Array(512).fill(7)).ret,
      fd_filestat_set_size: fd.fd_filestat_set_size(0n),
      fd_allocate: fd.fd_allocate(0n, 512n),
      iovec_fd_pwrite: imports.fd_pwrite!(3, 0, 1, 4096n, 64),
      iovec_fd_write: imports.fd_write!(3, 0, 1, 64),
    };
    const writesReachedWorker = served() - servedBefore;
    // A device may flush a read-only disk; it must not fail.
    const syncErrno = fd.fd_sync();
    const back = new Uint8Array(image.length);
    let readErrno = 0;
    for (let at = 0; at < image.length; ) {
      const { ret, data } = fd.fd_pread(image.length - at, BigInt(at));
      if (ret !== wasi.ERRNO_SUCCESS || data.length === 0) {
        readErrno = ret || -1;
        break;
      }
      back.set(data, at);
      at += data.length;
    }
    fd.fd_close();
    client.close();
    return {
      errnos,
      opens,
      writesReachedWorker,
      reported,
      readOnly: client.readOnly,
      syncErrno,
      readErrno,
      intact: back.every((b, i) => b === image[i]),
      expected: { BADF: wasi.ERRNO_BADF, ROFS: wasi.ERRNO_ROFS, SUCCESS: wasi.ERRNO_SUCCESS },
    };
  },
  ruby: async ({ idb, idbName, ro, directIo }: { idb: SharedArrayBuffer; idbName: string; ro: SharedArrayBuffer; directIo: boolean }) => {
    const opfs = await OpfsBackend.open({ name: `ruby-${directIo ? 'direct' : 'fd'}.img`, directory: 'wasi', size: 16 * MiB });
    const idbClient = new SyncBackendClient(idb, { name: 'idb disk' });
    const roClient = new SyncBackendClient(ro, { name: 'ro disk' });
    opfs.write(PRE_OFFSET, pattern(PRE_BYTES, 31));
    idbClient.write(PRE_OFFSET, pattern(PRE_BYTES, 32));
    const writable = [
      { name: 'opfs', seed: 41 },
      { name: 'idb', seed: 42 },
    ];
    const startedS = Math.floor(Date.now() / 1000);
    const run = await runRuby(rubyScript(writable), { opfs, idb: idbClient, ro: roClient }, { directIo });
    const endedS = Math.ceil(Date.now() / 1000);
    // Read back without the adapter: the OPFS backend itself, and the
    // IndexedDB disk closed and opened again here, outside the facade.
    idbClient.close();
    const idbAgain = await IndexedDbBackend.open({ name: idbName });
    const check: Record<string, unknown> = {};
    for (const [name, disk, seed] of [
      ['opfs', opfs, 41],
      ['idb', idbAgain, 42],
    ] as const) {
      let badRecords = 0;
      for (let i = 0; i < RECORDS; i++) {
        const got = new Uint8Array(4096);
        await disk.read(recordOffset(i), got);
        if (got.some((b, j) => b !== record(i, seed)[j])) badRecords++;
      }
      const seq = new Uint8Array(300_000);
      await disk.read(3 * MiB + 5, seq);
      const expectedSeq = new TextEncoder().encode(String(seed).padStart(8, '0').repeat(37_500));
      const sums: number[] = [];
      for (let k = 0; k < 3; k++) {
        const piece = new Uint8Array(MiB);
        await disk.read(BIG_OFFSET + k * MiB, piece);
        sums.push(sum32(piece));
      }
      check[name] = { badRecords, seqMatches: seq.every((b, j) => b === expectedSeq[j]), bigSums: sums.join(','), pre: sum32(pattern(PRE_BYTES, name === 'opfs' ? 31 : 32)) };
    }
    await opfs.close();
    await idbAgain.close();
    return { run, check, startedS, endedS, roPre: sum32(pattern(1 * MiB, 33).subarray(100, 100 + PRE_BYTES)) };
  },
  stall: async ({ channel, timeoutMs }: { channel: SharedArrayBuffer; timeoutMs: number }) => {
    const client = new SyncBackendClient(channel, { timeoutMs, name: 'stall disk' });
    const began = performance.now();
    const run = await runRuby(
      `File.open('/disks/stall.img', 'r+b') do |f|
        puts "before #{f.pread(4, 0).bytes.inspect}"
        begin
          f.pread(4096, ${STALL_OFFSET})
          puts 'stalled read returned'
        rescue SystemCallError => e
          puts "stalled read #{e.class}"
        end
        begin
          f.pread(4, 0)
          puts 'next read returned'
        rescue SystemCallError => e
          puts "next read #{e.class}"
        end
      end`,
      { stall: client },
    );
    return { run, elapsedMs: performance.now() - began };
  },
});
