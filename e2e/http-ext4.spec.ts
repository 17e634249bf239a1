// A real ext4 file system, hosted, read through the device in Chromium.
//
// The host makes an ext4 image (mke2fs -d) of known files, packs it with the
// CLI (`virtio-blk-web pack`) and serves both forms — the packed folder and
// the raw image for Range — from the fault server on another origin. The
// page attaches it with createDisk (worker host: the HTTP backend runs in the
// device worker) and the guest-side driver in a vCPU worker reads the whole
// disk through the virtqueue. The test writes what the driver read to a file
// and checks it on the host with the ext4 tools themselves: the bytes equal
// the image's, `e2fsck -fn` finds nothing, and `debugfs` reads the known
// files back. A write is refused (IOERR) and never reaches the server.
//
// A kernel mounting it in Chromium needs an emulator (the v86 tests); this
// is the device-and-backend half of that path, checked by e2fsprogs.

import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlkStatus } from '../src/block/constants.ts';
import { MANIFEST_FILE } from '../src/pack/manifest.ts';
import { FaultServer } from '../test/support/http-server.ts';
import { E2FS_TOOLS, ensureHostTools, fsckProblems, makeExt4Image, repoRoot } from './linux/provision.ts';
import { expect, test } from './fixtures.ts';
import { openHarness, type Harness } from './harness.ts';

const IMAGE_MIB = 24;
const PIECE = 1 << 20;
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

const files = new Map<string, Buffer>([
  ['/hello.txt', Buffer.from('hello from a hosted ext4 image\n')],
  ['/data/random.bin', randomBytes(5 << 20)],
  ['/data/deep/odd-size.bin', randomBytes(123_457)],
]);

let server: FaultServer;
let work: string;
let image: Buffer;

test.beforeAll(async () => {
  ensureHostTools(E2FS_TOOLS);
  work = mkdtempSync(join(tmpdir(), 'vbw-ext4-'));
  const source = join(work, 'source');
  for (const [path, bytes] of files) {
    mkdirSync(join(source, path, '..'), { recursive: true });
    writeFileSync(join(source, path), bytes);
  }
  const imagePath = join(work, 'disk.img');
  makeExt4Image(imagePath, IMAGE_MIB, source);
  image = readFileSync(imagePath);
  const site = join(work, 'site');
  const pack = spawnSync(process.execPath, [join(repoRoot, 'bin', 'virtio-blk-web.mjs'), 'pack', imagePath, site, '--quiet'], {
    encoding: 'utf8',
  });
  expect(pack.status, pack.stderr).toBe(0);
  server = await FaultServer.start();
  server.putImage('ext4', image);
  server.setFile(`/chunked/ext4/${MANIFEST_FILE}`, readFileSync(join(site, MANIFEST_FILE)));
  for (const name of readdirSync(join(site, 'chunks'))) {
    server.setFile(`/chunked/ext4/chunks/${name}`, readFileSync(join(site, 'chunks', name)));
  }
});
test.afterAll(async () => {
  await server?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** The whole disk, read by the guest driver in 1 MiB requests. */
async function readDisk(harness: Harness, sectors: number): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let at = 0; at < sectors * 512; at += PIECE) {
    const bytes = Math.min(PIECE, sectors * 512 - at);
    pieces.push(Buffer.from(await harness.call<string>('readBase64', { sector: at / 512, bytes }), 'base64'));
  }
  return Buffer.concat(pieces);
}

/** A file from an ext4 image on the host, read with debugfs (no mount). */
function debugfsCat(imagePath: string, path: string): Buffer {
  const r = spawnSync('debugfs', ['-R', `cat ${path}`, imagePath], { maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`debugfs cat ${path}: ${r.stderr.toString()}`);
  return r.stdout;
}

for (const form of ['http-chunked', 'http-range'] as const) {
  test(`ext4 over ${form}: the driver reads the image whole; e2fsck and debugfs accept what it read`, async ({ page }) => {
    const url = form === 'http-chunked' ? server.manifestUrl('ext4') : server.imageUrl('ext4');
    const harness = await openHarness(page, 'guest');
    const info = await harness.call<{ host: string; readOnly: boolean; capacitySectors: number }>('attach', {
      backend: { kind: form, url },
    });
    expect(info).toMatchObject({ host: 'worker', readOnly: true, capacitySectors: (IMAGE_MIB << 20) / 512 });

    const from = server.log.length;
    const read = await readDisk(harness, info.capacitySectors);
    const fetched = server.log.slice(from).filter((r) => r.path.startsWith(form === 'http-chunked' ? '/chunked/ext4/chunks/' : '/images/ext4'));
    expect(fetched.length).toBeGreaterThan(0);
    expect(read.length).toBe(image.length);
    expect(sha256(read)).toBe(sha256(image));
    const copy = join(work, `read-${form}.img`);
    writeFileSync(copy, read);
    expect(fsckProblems(copy)).toBeNull();
    for (const [path, bytes] of files) expect(sha256(debugfsCat(copy, path)), path).toBe(sha256(bytes));

    // Read-only: the device refuses a write with IOERR, and no request leaves for it.
    const before = server.log.length;
    expect(await harness.call('ioStatus', { sector: 8, bytes: 4096, write: true })).toBe(BlkStatus.IoErr);
    expect(server.log.length).toBe(before);
    await harness.call('close');
  });
}
