// A real, unmodified Linux virtio_blk driver drives the project's device.
//
// QEMU aarch64 (TCG) boots Debian's arm64 kernel; the disk is served over
// vhost-user by this process (VhostUserHost + VirtioBlkDevice +
// NodeFileBackend: the same queue and request code the browser runs). Three
// boots share one ext4 image, in order:
//   1. modern virtio-mmio: mount rw, check the host's files, write a random
//      blob buffered and with O_DIRECT, sync, fstrim (DISCARD), a write into
//      a preallocated extent, read back with O_DIRECT.
// The image is sparse and opened with hole punching (openDiskImage: the
// addon's fallocate): each boot deletes a scratch file before its fstrim, and
// the host checks that the trim gave those blocks back (the image's allocated
// size shrinks) instead of writing zeroes over all free space (which grew a
// 64 MiB image from 4.4 MB to 59.9 MB allocated).
//   2. virtio-pci, after a reconnect: boot 1's files are intact; write more;
//      switch to write-through (SET_CONFIG), re-probe the driver (ring
//      stop/restart), write again: the device stays write-through.
//   3. read-only, served by the CLI in a child process: the guest sees ro,
//      every write fails, the image does not change.
//   4. a hosted image: a second ext4 image of the host's files is packed
//      with `virtio-blk-web pack`, served by a plain static file server, and
//      the CLI (`--image-url …/manifest.json`) serves it through the chunked
//      HTTP backend — every chunk fetched on demand and SHA-256-checked. The
//      guest mounts it read-only and checks each file against the host's
//      hashes; its raw read of the disk hashes like the image file.
// After each boot the host compares the guest's checksums with the file's
// own, extracts the guest's files with debugfs, and runs `e2fsck -fn`.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { NodeFileBackend } from '../../src/backends/node-file.ts';
import { VirtioBlkDevice } from '../../src/block/device.ts';
import { openDiskImage, VhostUserHost } from '../../src/node.ts';
import { chunkPath, MANIFEST_FILE, parseManifest } from '../../src/pack/manifest.ts';
import { firstBootScript, hostedImageScript, readOnlyScript, SCRATCH_MIB, secondBootScript } from './guest.ts';
import { fsckProblems, makeExt4Image, provision, repoRoot, type LinuxAssets } from './provision.ts';
import { boot, GuestFailure, reported, type BootResult } from './qemu.ts';
import { serveDirectory } from './static-server.ts';

const IMAGE_MIB = 64;
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const md5 = (bytes: Uint8Array): string => createHash('md5').update(bytes).digest('hex');

let assets: LinuxAssets;
let work: string;
let image: string;
let backend: NodeFileBackend;
let device: VirtioBlkDevice;
let host: VhostUserHost;
const socket = (): string => join(work, 'vhost.sock');
const hostFiles = new Map<string, Buffer>();
const notes = { first: `boot-1-${randomBytes(6).toString('hex')}`, second: `boot-2-${randomBytes(6).toString('hex')}` };

/** A file from the ext4 image, read on the host with debugfs (no mount, no root). */
function extract(path: string): Buffer {
  const out = join(work, 'extracted');
  rmSync(out, { force: true });
  const r = spawnSync('debugfs', ['-R', `dump ${path} ${out}`, image], { encoding: 'utf8' });
  if (r.status !== 0 || !existsSync(out)) throw new Error(`debugfs could not dump ${path}: ${r.stderr}`);
  return readFileSync(out);
}

/** Bytes the image really occupies on the host (st_blocks counts 512-byte units). */
const allocated = (): number => statSync(image).blocks * 512;

/** The guest's DISCARDs in one boot: how many bytes, and the image's allocation around them. */
interface TrimRecord {
  discardedBytes: number;
  /** Allocated bytes when the first DISCARD arrived: after everything the guest wrote before fstrim. */
  beforeTrim: number | null;
  /** Allocated bytes after the last DISCARD. */
  afterTrim: number | null;
}
let trims: TrimRecord;
const newTrimRecord = (): TrimRecord => ({ discardedBytes: 0, beforeTrim: null, afterTrim: null });

/** fstrim punched holes: the scratch file's blocks went back to the host, nothing grew. */
function expectTrimmedOnHost(result: BootResult, bootName: string): void {
  const trimmed = Number(/: (\d+) bytes trimmed$/.exec(reported(result, 'trim'))?.[1]);
  const { beforeTrim, afterTrim, discardedBytes } = trims;
  console.log(
    `${bootName}: allocated ${mb(beforeTrim)} before fstrim, ${mb(afterTrim)} after; ` +
      `the guest trimmed ${mb(trimmed)} (${mb(discardedBytes)} in DISCARDs), ${SCRATCH_MIB} MiB of it written and deleted`,
  );
  expect(beforeTrim).not.toBeNull();
  expect(discardedBytes).toBe(trimmed);
  // Most of the deleted scratch file's blocks are holes again (a few may have held metadata).
  expect(afterTrim!).toBeLessThanOrEqual(beforeTrim! - 0.9 * SCRATCH_MIB * 2 ** 20);
}

const mb = (bytes: number | null): string => (bytes === null ? 'n/a' : `${(bytes / 1e6).toFixed(1)} MB`);

/** What every read-write boot must leave behind. */
function expectConsistent(result: BootResult, blob: string, blobMiB: number, note: string): void {
  const file = extract(`/guest/${blob}.bin`);
  expect(file.length).toBe(blobMiB << 20);
  const fileSha = sha256(file);
  // The guest's buffered read, its O_DIRECT reads in 1 MiB and 4 KiB blocks,
  // its O_DIRECT copy, and the host's view of the image all agree.
  expect(reported(result, `${blob}-sha256`)).toBe(fileSha);
  expect(reported(result, `${blob}-direct-1m-sha256`)).toBe(fileSha);
  expect(reported(result, `${blob}-direct-4k-sha256`)).toBe(fileSha);
  expect(sha256(extract(`/guest/${blob}-direct.bin`))).toBe(fileSha);
  expect(reported(result, `${blob}-md5`)).toBe(md5(file));
  expect(extract(`/guest/${blob}.sha256`).toString()).toBe(`${fileSha}  ${blob}.bin\n`);
  expect(extract(`/guest/${blob}-note.txt`).toString()).toBe(`${note}\n`);
  // The guest's raw O_DIRECT read of the whole disk is the image file.
  expect(reported(result, 'disk-sha256')).toBe(sha256(readFileSync(image)));
  expect(reported(result, 'host-files-ok')).toBe(String(hostFiles.size));
  expect(reported(result, 'trim')).toMatch(/^\/mnt: [1-9]\d* bytes trimmed$/);
  const fsck = fsckProblems(image);
  if (fsck) throw new GuestFailure(fsck, result.console);
}

/** Run host-side checks; a failure carries the guest console with it. */
function withConsole(result: BootResult, checks: () => void): void {
  try {
    checks();
  } catch (err) {
    if (err instanceof GuestFailure) throw err;
    throw new GuestFailure((err as Error).message, result.console);
  }
}

/** Linux's virtio feature string: one character per bit, '1' when negotiated. */
function negotiated(result: BootResult, bit: number): boolean {
  return reported(result, 'features')[bit] === '1';
}

beforeAll(async () => {
  assets = provision();
  work = mkdtempSync(join(tmpdir(), 'vbw-linux-'));
  const source = join(work, 'source');
  mkdirSync(join(source, 'host'), { recursive: true });
  hostFiles.set('hello.txt', Buffer.from('hello from the host\n'));
  hostFiles.set('random.bin', randomBytes(3 << 20));
  hostFiles.set('odd-size.bin', randomBytes(12345));
  for (const [name, bytes] of hostFiles) writeFileSync(join(source, 'host', name), bytes);
  const sums = [...hostFiles].map(([name, bytes]) => `${sha256(bytes)}  ${name}\n`).join('');
  writeFileSync(join(source, 'host', 'SHA256SUMS'), sums);
  image = join(work, 'disk.img');
  makeExt4Image(image, IMAGE_MIB, source);
  // A sparse image (mke2fs writes only metadata), opened the way the CLI opens one.
  backend = openDiskImage(image);
  const discard = backend.discard.bind(backend);
  backend.discard = (offset, length) => {
    trims.beforeTrim ??= allocated();
    discard(offset, length);
    trims.discardedBytes += length;
    trims.afterTrim = allocated();
  };
  device = new VirtioBlkDevice(backend, { serial: 'vbw-linux-test' });
  host = VhostUserHost.listen({ socketPath: socket(), device });
}, 600_000);

afterAll(async () => {
  await host?.close();
  backend?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe.sequential('Linux virtio_blk over vhost-user', () => {
  test('boot 1, modern virtio-mmio: ext4 read-write, O_DIRECT, fstrim; the host sees the same bytes', async () => {
    const before = { ...device.stats };
    trims = newTrimRecord();
    const script = firstBootScript(notes.first);
    const result = await boot({ assets, disk: { kind: 'vhost-user-mmio', socket: socket() }, script });
    await host.idle();
    withConsole(result, () => {
      expect(reported(result, 'ro')).toBe('0');
      expect(Number(reported(result, 'sectors'))).toBe((IMAGE_MIB << 20) / 512);
      expect(reported(result, 'device')).toMatch(/virtio_mmio|\.virtio/);
      expect(negotiated(result, 32)).toBe(true); // VIRTIO_F_VERSION_1: modern, not legacy mmio
      expect(reported(result, 'hello')).toBe('hello from the host');
      // The guest's requests went through this process's device.
      expect(device.stats.reads).toBeGreaterThan(before.reads);
      expect(device.stats.writes).toBeGreaterThan(before.writes);
      expect(device.stats.flushes).toBeGreaterThan(before.flushes);
      expect(device.stats.discards).toBeGreaterThan(before.discards);
      expect(reported(result, 'serial')).toBe('vbw-linux-test');
      // The file reads as the marker block between zeroes, in the guest and on the host.
      const zeroout = Buffer.alloc(65536);
      zeroout.write('zeroout-marker', 2 * 4096);
      expect(reported(result, 'zeroout-sha256')).toBe(sha256(zeroout));
      expect(sha256(extract('/guest/zeroout.bin'))).toBe(sha256(zeroout));
      expect(device.stats.ioErrors).toBe(0);
      expectConsistent(result, 'blob1', 4, notes.first);
      expectTrimmedOnHost(result, 'boot 1');
    });
  });

  test('boot 2, virtio-pci after a reconnect: boot 1 is intact; more writes', async () => {
    await host.idle();
    const before = { ...device.stats };
    // The device's writeback mode at each disk write, and how many writes
    // had happened when the guest's config write switched it off.
    const writebackAtWrite: boolean[] = [];
    const writeThroughFrom: number[] = [];
    const configWritten = device.configWritten.bind(device);
    device.configWritten = (offset, length) => {
      configWritten(offset, length);
      if (!device.writeback) writeThroughFrom.push(writebackAtWrite.length);
    };
    const write = backend.write.bind(backend);
    backend.write = (offset, src) => {
      writebackAtWrite.push(device.writeback);
      write(offset, src);
    };
    trims = newTrimRecord();
    const script = secondBootScript(notes.first, notes.second);
    const result = await boot({ assets, disk: { kind: 'vhost-user-pci', socket: socket() }, script });
    await host.idle();
    withConsole(result, () => {
      expect(reported(result, 'device')).toMatch(/pci/);
      expect(negotiated(result, 32)).toBe(true);
      expect(device.stats.writes).toBeGreaterThan(before.writes);
      expect(device.stats.ioErrors).toBe(0);
      expectConsistent(result, 'blob2', 3, notes.second);
      expectTrimmedOnHost(result, 'boot 2');
      const gone = spawnSync('debugfs', ['-R', 'stat /guest/blob1.bin', image], { encoding: 'utf8' });
      expect(gone.stderr).toMatch(/File not found/);
      // "write through" reached the device as a config write (SET_CONFIG).
      expect(reported(result, 'cache-type')).toBe('write through');
      expect(writeThroughFrom.length).toBeGreaterThan(0);
      // After the driver was unbound and re-probed, the restarted ring reads the same disk...
      expect(reported(result, 'reprobed-disk-sha256')).toBe(reported(result, 'pre-reprobe-disk-sha256'));
      // ...the guest still believes write-through (QEMU's copy of the config), so every
      // later write must be write-through in the device too: the guest sends no FLUSH.
      expect(reported(result, 'reprobed-cache-type')).toBe('write through');
      const later = writebackAtWrite.slice(writeThroughFrom[0]);
      expect(later.length).toBeGreaterThan(0);
      expect(later.filter((writeback) => writeback)).toEqual([]);
      expect(extract('/guest/after-reprobe.bin').length).toBe(16 * 4096);
    });
  });

  test('boot 3, read-only via the CLI: the guest sees ro, writes fail, the image is unchanged', async () => {
    await host.close();
    const roSocket = join(work, 'ro.sock');
    const imageSha = sha256(readFileSync(image));
    const cli = startCli(['vhost-user', '--socket', roSocket, '--image', image, '--read-only', '--serial', 'ro-disk', '--once']);
    try {
      await waitForSocket(roSocket, cli);
      const result = await boot({ assets, disk: { kind: 'vhost-user-mmio', socket: roSocket }, script: readOnlyScript() });
      const cliExit = await exitOf(cli);
      withConsole(result, () => {
        expect(reported(result, 'ro')).toBe('1');
        expect(reported(result, 'serial')).toBe('ro-disk');
        expect(negotiated(result, 5)).toBe(true); // VIRTIO_BLK_F_RO
        expect(reported(result, 'mounted')).toMatch(/^\/dev\/vda \/mnt ext4 ro[, ]/);
        expect(reported(result, 'raw-write-error')).toMatch(/Operation not permitted|Read-only|Permission denied/i);
        expect(reported(result, 'disk-sha256')).toBe(imageSha);
        expect(sha256(readFileSync(image))).toBe(imageSha);
        expect(cliExit, cli.output()).toBe(0);
      });
    } finally {
      cli.kill();
    }
  });

  test('boot 4, a hosted image: packed, served by a static server, fetched chunk by chunk by the CLI', async () => {
    const hosted = join(work, 'hosted.img');
    makeExt4Image(hosted, 32, join(work, 'source'));
    const site = join(work, 'site');
    const pack = startCli(['pack', hosted, site, '--chunk-size', '256K', '--quiet']);
    expect(await exitOf(pack), pack.output()).toBe(0);
    const manifest = parseManifest(JSON.parse(readFileSync(join(site, MANIFEST_FILE), 'utf8')));
    const chunkFiles = new Set(manifest.chunks.flatMap((c) => (c === null ? [] : [`/${chunkPath(c, manifest.compression)}`])));
    // mke2fs writes only metadata and the files: most of the image is zero chunks, not stored.
    expect(chunkFiles.size).toBeLessThan(manifest.chunks.length / 2);
    const server = await serveDirectory(site);
    const socketPath = join(work, 'http.sock');
    const cli = startCli(['vhost-user', '--socket', socketPath, '--image-url', `${server.url}/${MANIFEST_FILE}`, '--serial', 'http-disk', '--once']);
    try {
      await waitForSocket(socketPath, cli);
      const result = await boot({ assets, disk: { kind: 'vhost-user-mmio', socket: socketPath }, script: hostedImageScript() });
      const cliExit = await exitOf(cli);
      withConsole(result, () => {
        expect(reported(result, 'ro')).toBe('1');
        expect(reported(result, 'serial')).toBe('http-disk');
        expect(Number(reported(result, 'sectors'))).toBe((32 << 20) / 512);
        expect(reported(result, 'mounted')).toMatch(/^\/dev\/vda \/mnt ext4 ro[, ]/);
        expect(reported(result, 'host-files-ok')).toBe(String(hostFiles.size));
        expect(reported(result, 'tree-files')).toBe(String(hostFiles.size + 1));
        expect(reported(result, 'disk-sha256')).toBe(sha256(readFileSync(hosted)));
        // What the guest read came over HTTP: the manifest, then exactly the stored chunk files (no zero chunk, no 404).
        expect(server.log.filter((r) => r.status !== 200)).toEqual([]);
        expect(server.log[0]!.path).toBe(`/${MANIFEST_FILE}`);
        expect(new Set(server.log.slice(1).map((r) => r.path))).toEqual(chunkFiles);
        expect(cliExit, cli.output()).toBe(0);
      });
      console.log(
        `boot 4: ${manifest.chunks.length} chunks of 256 KiB, ${chunkFiles.size} stored; ${server.log.length - 1} chunk requests`,
      );
    } finally {
      cli.kill();
      await server.close();
    }
  });
});

function startCli(args: string[]): ChildProcess & { output: () => string } {
  const child = spawn(process.execPath, [join(repoRoot, 'bin', 'virtio-blk-web.mjs'), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (output += b.toString()));
  return Object.assign(child, { output: () => output });
}

async function waitForSocket(path: string, cli: ChildProcess & { output: () => string }): Promise<void> {
  for (let i = 0; i < 600 && !existsSync(path); i++) {
    if (cli.exitCode !== null) throw new Error(`the CLI exited ${cli.exitCode}: ${cli.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!existsSync(path)) throw new Error(`the CLI never listened on ${path}: ${cli.output()}`);
}

function exitOf(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}
