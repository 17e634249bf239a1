// The CLI's error paths: each mistake a user can make gets one clear line and
// a non-zero exit, without a stack trace and without touching the disk.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, test, vi } from 'vitest';
import { MemoryBackend } from '../src/backends/memory.ts';
import { VirtioBlkDevice } from '../src/block/device.ts';
import { loadAddon } from '../src/host/vhost-user/addon.ts';
import { main } from '../src/host/vhost-user/cli.ts';
import { VhostUserHost } from '../src/host/vhost-user/host.ts';

const dir = mkdtempSync(join(tmpdir(), 'vbw-cli-'));
const image = join(dir, 'disk.img');
writeFileSync(image, new Uint8Array(64 * 1024));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

/** Run the CLI in-process; returns its exit code and what it printed to stderr. */
async function cli(...args: string[]): Promise<{ code: number; stderr: string; stdout: string }> {
  let stderr = '';
  let stdout = '';
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  const code = await main(args);
  vi.restoreAllMocks();
  return { code, stderr, stdout };
}

describe('virtio-blk-web CLI', () => {
  test('no command prints usage and exits 2; --help exits 0', async () => {
    expect(await cli()).toMatchObject({ code: 2, stdout: expect.stringContaining('usage: virtio-blk-web vhost-user') });
    expect(await cli('vhost-user', '--help')).toMatchObject({ code: 0 });
    expect(await cli('frobnicate')).toMatchObject({ code: 2, stderr: expect.stringContaining('unknown command "frobnicate"') });
  });

  test('missing or malformed flags are usage errors (exit 2)', async () => {
    expect(await cli('vhost-user', '--image', image)).toMatchObject({ code: 2, stderr: expect.stringContaining('--socket PATH is required') });
    expect(await cli('vhost-user', '--socket', join(dir, 's'))).toMatchObject({ code: 2, stderr: expect.stringContaining('--image FILE is required') });
    expect(await cli('vhost-user', '--socket', join(dir, 's'), '--image', image, '--cache', 'none')).toMatchObject({ code: 2 });
    expect(await cli('vhost-user', '--socket', join(dir, 's'), '--image', image, '--iops', '0')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--iops needs a positive integer'),
    });
    expect(await cli('vhost-user', '--socket', join(dir, 's'), '--image', image, '--serial', 'x'.repeat(21))).toMatchObject({ code: 2 });
    expect(await cli('vhost-user', '--bogus')).toMatchObject({ code: 2 });
    expect(await cli('vhost-user', '--socket', join(dir, 's'), '--image', image, '--image-url', 'http://127.0.0.1/m.json')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--image and --image-url are exclusive'),
    });
    expect(await cli('vhost-user', '--socket', join(dir, 's'), '--image-url', 'disk/manifest.json')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('is not an absolute URL'),
    });
  });

  test('another platform is told vhost-user needs Linux, exit 1', async () => {
    const platform = Object.getOwnPropertyDescriptor(process, 'platform')!;
    Object.defineProperty(process, 'platform', { value: 'darwin' });
    try {
      const r = await cli('vhost-user', '--socket', join(dir, 's'), '--image', image);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('vhost-user needs Linux');
    } finally {
      Object.defineProperty(process, 'platform', platform);
    }
  });

  test.runIf(process.platform === 'linux')('a missing image is named, exit 1', async () => {
    const missing = join(dir, 'nope.img');
    const r = await cli('vhost-user', '--socket', join(dir, 's'), '--image', missing);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`disk image ${missing} does not exist`);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  test.runIf(process.platform === 'linux')('a socket a live server holds is refused, exit 1', async () => {
    const socket = join(dir, 'busy.sock');
    const host = VhostUserHost.listen({ socketPath: socket, device: new VirtioBlkDevice(new MemoryBackend(4096)) });
    try {
      const r = await cli('vhost-user', '--socket', socket, '--image', image);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`socket ${socket} is in use by a running server`);
    } finally {
      await host.close();
    }
  });

  test.runIf(process.platform === 'linux')('a socket in a missing directory is explained, exit 1', async () => {
    const r = await cli('vhost-user', '--socket', join(dir, 'no-such-dir', 's.sock'), '--image', image);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('its directory does not exist');
  });

  test.runIf(process.platform === 'linux')('a regular file given as --socket is not a socket and is left alone, exit 1', async () => {
    const notSocket = join(dir, 'notes.txt');
    writeFileSync(notSocket, 'keep me');
    const r = await cli('vhost-user', '--socket', notSocket, '--image', image);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`virtio-blk-web: ${notSocket} exists and is not a socket; refusing to replace it (remove it or choose another --socket)\n`);
    expect(readFileSync(notSocket, 'utf8')).toBe('keep me');
  });

  test.runIf(process.platform === 'linux')('a directory given as --image is one sentence, exit 1', async () => {
    const imageDir = join(dir, 'image-dir');
    mkdirSync(imageDir, { recursive: true });
    for (const extra of [[], ['--read-only']]) {
      const r = await cli('vhost-user', '--socket', join(dir, 'd.sock'), '--image', imageDir, ...extra);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`virtio-blk-web: disk image ${imageDir} is a directory\n`);
    }
  });

  /** An absolute socket path of exactly `bytes` bytes inside `dir`. */
  const pathOfBytes = (bytes: number): string => {
    const prefix = join(dir, 'p');
    return prefix + 'x'.repeat(bytes - Buffer.byteLength(prefix));
  };

  test.runIf(process.platform === 'linux')('a 108-byte socket path is refused naming its length and the 107-byte limit', async () => {
    const long = pathOfBytes(108);
    const r = await cli('vhost-user', '--socket', long, '--image', image);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `virtio-blk-web: socket path ${long} is 108 bytes; a unix socket path can have at most 107 ` +
        '(sun_path is 108 bytes including the terminating NUL)\n',
    );
  });

  test.runIf(process.platform === 'linux')('unix(7) sun_path: a 107-byte socket path is accepted and served, 108 is not', () => {
    const addon = loadAddon();
    const longest = pathOfBytes(107);
    expect(Buffer.byteLength(longest)).toBe(107);
    const listener = addon.listen(longest);
    try {
      const client = addon.connect(longest);
      addon.close(client);
    } finally {
      addon.close(listener);
      rmSync(longest);
    }
    expect(() => addon.listen(pathOfBytes(108))).toThrow(/is 108 bytes; a unix socket path must be 1 to 107 bytes/);
    // Measured before copying: a much longer path is not silently cut to 107 bytes.
    expect(() => addon.listen(pathOfBytes(300))).toThrow(expect.objectContaining({ code: 'ENAMETOOLONG' }));
    expect(() => addon.listen(`${join(dir, 'a')}\0b`)).toThrow(/NUL/);
  });
});
