// `virtio-blk-web vhost-user`: serve a raw disk image to QEMU as a
// vhost-user-blk back-end, through the project's own device core.
//
// Errors a user can fix (bad flags, missing image, socket in use, not Linux,
// no compiler for the addon) are printed as one clear line and exit 1 (2 for
// usage errors); anything else is a bug and shows its stack.

import { parseArgs } from 'node:util';
import { StorageError, type BlockBackend } from '../../backends/backend.ts';
import { CacheMode, VirtioBlkDevice } from '../../block/device.ts';
import { RateLimiter, type RateLimiterConfig } from '../../limiter/index.ts';
import { AddonUnavailableError, loadAddon } from './addon.ts';
import { VhostUserHost } from './host.ts';
import { openDiskImage, openHostedImage } from './image.ts';

export const USAGE = `usage: virtio-blk-web vhost-user --socket PATH --image FILE [options]
       virtio-blk-web vhost-user --socket PATH --image-url URL [options]

Serve FILE (a raw disk image) as a vhost-user-blk device on the unix socket
PATH; or, read-only, a hosted image fetched over HTTP as the guest reads it
(URL: a chunked image's manifest.json from \`virtio-blk-web pack\`, or any
raw image on a server that honours Range). Then start QEMU with, e.g.:
  -object memory-backend-memfd,id=mem,size=512M,share=on -M virt,memory-backend=mem
  -chardev socket,id=c0,path=PATH -device vhost-user-blk-pci,chardev=c0,num-queues=1
(one queue: the device has one; QEMU otherwise asks for one per vCPU on PCI)

options:
  --image-url URL         serve a hosted image instead of a file (always read-only; see docs/http.md)
  --read-only             offer the disk read-only (VIRTIO_BLK_F_RO); the image is opened O_RDONLY
  --serial ID             the disk's serial (GET_ID), up to 20 ASCII bytes
  --cache MODE            writeback (FLUSH is fdatasync; default) or unsafe (FLUSH does nothing)
  --bandwidth BYTES       rate limit: bytes per second (token bucket, 1 s refill)
  --iops N                rate limit: requests per second
  --once                  exit when the first front-end disconnects
  --verbose               log the vhost-user conversation to stderr
`;

/** What `virtio-blk-web --help` prints: every command, then the first one's details. */
const COMMANDS = `commands:
  virtio-blk-web vhost-user --socket PATH --image FILE [options]   serve a disk image to QEMU
  virtio-blk-web vhost-user --socket PATH --image-url URL [...]    serve a hosted image (read-only)
  virtio-blk-web pack IMAGE OUTDIR [--chunk-size N] [--compress]   pack an image for HTTP hosting
  (virtio-blk-web pack --help for its options)

${USAGE}`;

/** sun_path is 108 bytes on Linux (unix(7)), one of them the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

/** A mistake the user can fix: printed without a stack. */
class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

function positiveInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0) throw new CliError(`${flag} needs a positive integer, got "${value}"`, 2);
  return n;
}

/** Rate-limit flags → a limiter config (null when no limit is set). */
function limiterConfig(bandwidth?: number, iops?: number): RateLimiterConfig | null {
  if (bandwidth === undefined && iops === undefined) return null;
  return {
    bandwidth: bandwidth === undefined ? null : { size: bandwidth, refillTimeMs: 1000 },
    ops: iops === undefined ? null : { size: iops, refillTimeMs: 1000 },
  };
}

async function serve(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        image: { type: 'string' },
        'image-url': { type: 'string' },
        'read-only': { type: 'boolean', default: false },
        serial: { type: 'string' },
        cache: { type: 'string', default: 'writeback' },
        bandwidth: { type: 'string' },
        iops: { type: 'string' },
        once: { type: 'boolean', default: false },
        verbose: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }).values;
  } catch (err) {
    throw new CliError(`${(err as Error).message}\n\n${USAGE}`, 2);
  }
  if (parsed.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!parsed.socket) throw new CliError(`--socket PATH is required\n\n${USAGE}`, 2);
  const imageUrl = parsed['image-url'];
  if (!parsed.image && !imageUrl) throw new CliError(`--image FILE is required (or --image-url URL)\n\n${USAGE}`, 2);
  if (parsed.image && imageUrl) throw new CliError(`--image and --image-url are exclusive: give one\n\n${USAGE}`, 2);
  if (imageUrl !== undefined && !URL.canParse(imageUrl)) throw new CliError(`--image-url: "${imageUrl}" is not an absolute URL`, 2);
  if (parsed.cache !== CacheMode.Writeback && parsed.cache !== CacheMode.Unsafe) {
    throw new CliError(`--cache must be writeback or unsafe, got "${parsed.cache}"`, 2);
  }
  if (parsed.serial !== undefined && !/^[\x20-\x7e]{0,20}$/.test(parsed.serial)) {
    throw new CliError('--serial must be at most 20 printable ASCII characters', 2);
  }
  const limits = limiterConfig(positiveInt(parsed.bandwidth, '--bandwidth'), positiveInt(parsed.iops, '--iops'));
  if (process.platform !== 'linux') {
    throw new CliError(`vhost-user needs Linux (unix-socket fd passing, shared guest memory); this is ${process.platform}`);
  }
  // Build the addon before opening anything, so a missing compiler is the first thing reported.
  const addon = loadAddon();

  const readOnly = parsed['read-only'] || imageUrl !== undefined;
  const name = imageUrl ?? parsed.image!;
  const backend: BlockBackend = imageUrl ? await openHostedImage(imageUrl) : openDiskImage(name, { readOnly, addon });
  if (backend.size % 512 !== 0) {
    process.stderr.write(`warning: ${name} is not a multiple of 512 bytes; the tail is not visible\n`);
  }
  let device: VirtioBlkDevice;
  try {
    device = new VirtioBlkDevice(backend, {
      readOnly,
      cacheMode: parsed.cache,
      serial: parsed.serial,
      limiter: limits ? new RateLimiter(limits) : null,
      onStorageError: (e) => process.stderr.write(`storage error (guest sees IOERR): ${e.message}\n`),
    });
  } catch (err) {
    backend.close();
    if (err instanceof RangeError) throw new CliError(err.message, 2);
    throw err;
  }
  const log = parsed.verbose ? (line: string) => process.stderr.write(`vhost-user: ${line}\n`) : undefined;
  let host: VhostUserHost;
  try {
    const warn = (line: string) => process.stderr.write(`virtio-blk-web: warning: ${line}\n`);
    host = VhostUserHost.listen({ socketPath: parsed.socket, device, log, warn, addon });
  } catch (err) {
    backend.close();
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new CliError(`socket ${parsed.socket} is in use by a running server`);
    if (code === 'ENOTSOCK') {
      throw new CliError(`${parsed.socket} exists and is not a socket; refusing to replace it (remove it or choose another --socket)`);
    }
    if (code === 'ENOENT') throw new CliError(`socket ${parsed.socket}: its directory does not exist`);
    if (code === 'EACCES') throw new CliError(`socket ${parsed.socket}: permission denied`);
    if (code === 'ENAMETOOLONG') {
      const bytes = Buffer.byteLength(parsed.socket);
      throw new CliError(
        `socket path ${parsed.socket} is ${bytes} bytes; a unix socket path can have at most ${MAX_SOCKET_PATH_BYTES} ` +
          `(sun_path is ${MAX_SOCKET_PATH_BYTES + 1} bytes including the terminating NUL)`,
      );
    }
    throw err;
  }
  const mib = (backend.size / (1 << 20)).toFixed(1);
  process.stderr.write(
    `virtio-blk-web: serving ${name} (${mib} MiB, ${readOnly ? 'read-only' : 'read-write'}) on ${parsed.socket}\n`,
  );

  let stopping = false;
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    if (parsed.verbose) process.stderr.write(`virtio-blk-web: stopping (${why})\n`);
    await host.close();
    await backend.flush();
    await backend.close();
  };
  const stopped = new Promise<void>((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => void stop(signal).then(resolve));
    }
    if (parsed.once) {
      void host
        .sessionEnded()
        .then(() => stop('front-end disconnected'))
        .then(resolve);
    }
  });
  await stopped;
  return 0;
}

/** Entry point: returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === 'vhost-user') return await serve(rest);
    if (command === 'pack') return await (await import('../../pack/cli.ts')).packCommand(rest);
    if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      process.stdout.write(COMMANDS);
      return command === undefined ? 2 : 0;
    }
    throw new CliError(`unknown command "${command}"\n\n${COMMANDS}`, 2);
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`virtio-blk-web: ${err.message}\n`);
      return err.exitCode;
    }
    if (err instanceof StorageError || err instanceof AddonUnavailableError) {
      process.stderr.write(`virtio-blk-web: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
