// The CLI's error paths: each mistake a user can make gets one clear line and
// a non-zero exit, without a stack trace and without touching the disk.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, test, vi } from 'vitest';
import { MemoryBackend } from '../src/backends/memory.ts';
import { VirtioBlkDevice } from '../src/block/device.ts';
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
});
