// Loads the native helper (native/vhost_user.c), building it with node-gyp on
// first use. It is not built at `npm install`, so installing the package never
// needs a compiler; only the vhost-user host (Linux, Node) does.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** What recvmsg returns: bytes read (0 = peer closed, −1 = nothing yet) and fds passed with them. */
export interface Received {
  bytes: number;
  fds: number[];
  /** The kernel dropped fds that did not fit (more than 16). */
  fdsTruncated: boolean;
}

/** An active fd watcher; pass it to `unwatch`. */
export type Watcher = { readonly __brand: 'vhost-user-watcher' };

/** The native functions. Errors are thrown with `code` set to the errno name. */
export interface VhostUserAddon {
  /** Bind and listen on a unix socket path (replaces a stale socket, refuses a live one). */
  listen(path: string): number;
  accept(fd: number): number;
  connect(path: string): number;
  /** Blocks until data arrives, unless `dontWait`: then bytes is −1 when nothing is there. */
  recvmsg(fd: number, buf: Uint8Array, dontWait?: boolean): Received;
  /** Sends all of buf; with `dontWait` a full socket buffer throws EAGAIN instead of blocking. */
  sendmsg(fd: number, buf: Uint8Array, fds?: number[], dontWait?: boolean): number;
  /** Map [offset, offset + length) of fd shared; the range starts `delta` bytes into `buffer`. */
  mmap(fd: number, offset: number, length: number): { buffer: ArrayBuffer; delta: number };
  /**
   * Release a buffer from `mmap` now: it is detached (every view on it reads as
   * empty) and unmapped, instead of whenever the GC collects it.
   */
  unmap(buffer: ArrayBuffer): void;
  /** fstat's st_size: how many bytes of a memory-region fd can be mapped safely. */
  fdSize(fd: number): number;
  /** fallocate(2) with FALLOC_FL_* `mode` (see `FallocMode`). */
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  eventfd(): number;
  setBlocking(fd: number, blocking: boolean): void;
  close(fd: number): void;
  /** Call `onReady` on Node's loop whenever fd is readable (or hung up). */
  watch(fd: number, onReady: (events: number) => void): Watcher;
  unwatch(watcher: Watcher): void;
}

/** fallocate(2) mode bits (linux/falloc.h). */
export const FallocMode = {
  /** Do not change the file size, even when the range reaches past its end. */
  KeepSize: 0x01,
  /** Deallocate the range (it reads as zeroes); needs KeepSize. */
  PunchHole: 0x02,
  /** Make the range read as zeroes while keeping it allocated (unwritten extents). */
  ZeroRange: 0x10,
} as const;

/** The host cannot run here (not Linux, no compiler, build failed). */
export class AddonUnavailableError extends Error {
  override readonly name = 'AddonUnavailableError';
}

const here = dirname(fileURLToPath(import.meta.url));
/** native/ at the repository root (src/host/vhost-user → ../../../native). */
export const nativeDir = join(here, '..', '..', '..', 'native');
const binary = join(nativeDir, 'build', 'Release', 'vhost_user.node');
const source = join(nativeDir, 'vhost_user.c');

let loaded: VhostUserAddon | undefined;

/** Build the addon if it is missing or older than its source. */
export function buildAddon(options: { quiet?: boolean } = {}): string {
  if (process.platform !== 'linux') {
    throw new AddonUnavailableError(
      `the vhost-user host needs Linux (unix-socket fd passing and shared guest memory); this is ${process.platform}`,
    );
  }
  if (upToDate()) return binary;
  // Several processes (parallel test files) may want the addon at once:
  // node-gyp builds in place, so one builds while the others wait.
  const unlock = lockBuild();
  try {
    if (!upToDate()) runNodeGyp(options.quiet ?? false);
  } finally {
    unlock();
  }
  return binary;
}

function upToDate(): boolean {
  return existsSync(binary) && statSync(binary).mtimeMs >= statSync(source).mtimeMs;
}

/** A lock directory beside the system temp files (node-gyp wipes native/build). */
function lockBuild(): () => void {
  const key = createHash('sha256').update(nativeDir).digest('hex').slice(0, 16);
  const lock = join(tmpdir(), `virtio-blk-web-addon-${key}.lock`);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      mkdirSync(lock);
      return () => rmSync(lock, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // A builder that died leaves its lock behind; no build takes 5 minutes.
      const held = statSync(lock, { throwIfNoEntry: false });
      if (held && Date.now() - held.mtimeMs > 300_000) {
        rmSync(lock, { recursive: true, force: true });
      }
      Atomics.wait(pause, 0, 0, 100);
    }
  }
}

function runNodeGyp(quiet: boolean): void {
  const require = createRequire(import.meta.url);
  let gyp: string;
  try {
    gyp = require.resolve('node-gyp/bin/node-gyp.js');
  } catch (cause) {
    throw new AddonUnavailableError(
      'node-gyp is needed to build the vhost-user addon: it is an optional dependency of ' +
        'virtio-blk-web; install it with `npm install node-gyp` where the package is used',
      { cause },
    );
  }
  const args = [gyp, 'rebuild', '--directory', nativeDir];
  // Use the running Node's own headers when it ships them (Debian's nodejs
  // does, under /usr/include/node): node-gyp would otherwise download them.
  const prefix = dirname(dirname(process.execPath));
  if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
  try {
    execFileSync(process.execPath, args, { stdio: quiet ? 'pipe' : ['ignore', 2, 2] });
  } catch (cause) {
    const output = (cause as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new AddonUnavailableError(
      `building the vhost-user addon failed (needs python3, make and a C compiler):\n${output.slice(-2000)}`,
      { cause },
    );
  }
}

/** The addon, built on first use. */
export function loadAddon(): VhostUserAddon {
  if (loaded) return loaded;
  const path = buildAddon({ quiet: true });
  const require = createRequire(import.meta.url);
  loaded = require(path) as VhostUserAddon;
  return loaded;
}
