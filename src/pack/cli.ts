// `virtio-blk-web pack IMAGE OUTDIR [--chunk-size N] [--compress]`: the
// subcommand's argument parsing, progress line and exit codes. The packing
// itself is pack.ts (streaming core) and pack-files.ts (files).

import { stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { MANIFEST_FILE } from './manifest.ts';
import { DEFAULT_CHUNK_SIZE, checkChunkSize, type PackProgress } from './pack.ts';
import { packImage } from './pack-files.ts';

export const PACK_USAGE = `usage: virtio-blk-web pack IMAGE OUTDIR [--chunk-size N] [--compress]

Cut IMAGE (a raw disk image) into chunk files named by their SHA-256 under
OUTDIR/chunks/ and write OUTDIR/${MANIFEST_FILE}, for the HTTP chunked backend
(serve OUTDIR from any static host). All-zero chunks are not stored; chunks
already in OUTDIR (an earlier version of the image) are not written again.

options:
  --chunk-size N   bytes per chunk, a multiple of 512 from 4096 (K and M suffixes: 256K, 1M); default ${DEFAULT_CHUNK_SIZE / 1024}K
  --compress       gzip each chunk file (the backend inflates with DecompressionStream)
  --quiet          no progress line
`;

/** "256K", "1M", "4096" → bytes. */
function parseSize(text: string): number {
  const m = /^(\d+)([KkMm]?)$/.exec(text);
  if (!m) return NaN;
  const unit = m[2]!.toUpperCase();
  return Number(m[1]) * (unit === 'K' ? 1024 : unit === 'M' ? 1024 * 1024 : 1);
}

const mib = (bytes: number): string => (bytes / (1024 * 1024)).toFixed(1);

/** Run `pack` with its arguments; returns the exit code (2: usage, 1: failure). */
export async function packCommand(
  argv: string[],
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream & { isTTY?: boolean } } = process,
): Promise<number> {
  const usage = (why: string): number => {
    io.stderr.write(`virtio-blk-web pack: ${why}\n\n${PACK_USAGE}`);
    return 2;
  };
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'chunk-size': { type: 'string' },
        compress: { type: 'boolean', default: false },
        quiet: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    });
  } catch (err) {
    return usage((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(PACK_USAGE);
    return 0;
  }
  if (positionals.length !== 2) return usage(`expected IMAGE and OUTDIR, got ${positionals.length} argument(s)`);
  const [image, outDir] = positionals as [string, string];
  const chunkSize = values['chunk-size'] === undefined ? DEFAULT_CHUNK_SIZE : parseSize(values['chunk-size']);
  try {
    checkChunkSize(chunkSize);
  } catch (err) {
    return usage(`--chunk-size: ${(err as Error).message}`);
  }
  let total: number;
  try {
    const info = await stat(image);
    if (info.isDirectory()) throw new Error(`${image} is a directory, not a disk image`);
    total = info.size;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    io.stderr.write(`virtio-blk-web pack: ${code === 'ENOENT' ? `${image}: no such file` : (err as Error).message}\n`);
    return 1;
  }

  // One line, rewritten in place on a terminal; a line per 10% elsewhere (logs).
  let lastShown = -1;
  const line = (p: PackProgress): string =>
    `packing ${image}: ${mib(p.bytes)} / ${mib(total)} MiB, ${p.chunks} chunks (${p.stored} stored, ` +
    `${p.zero} zero, ${p.shared} already there)`;
  const onProgress = values.quiet
    ? undefined
    : (p: PackProgress): void => {
        const percent = total > 0 ? Math.floor((p.bytes / total) * 100) : 100;
        const step = io.stderr.isTTY ? percent : Math.floor(percent / 10) * 10;
        if (step === lastShown) return;
        lastShown = step;
        io.stderr.write(io.stderr.isTTY ? `\r${line(p)} ${percent}%` : `${line(p)} ${percent}%\n`);
      };
  try {
    const started = Date.now();
    const manifest = await packImage(image, outDir, { chunkSize, compress: values.compress, onProgress });
    if (!values.quiet && io.stderr.isTTY) io.stderr.write('\n');
    const stored = manifest.chunks.filter((c) => c !== null).length;
    const padded = manifest.size - total;
    if (padded > 0) io.stderr.write(`note: ${image} does not end on a 512-byte sector: ${padded} zero bytes added (the disk is ${manifest.size} bytes)\n`);
    io.stdout.write(
      `packed ${image} (${manifest.size} bytes) into ${outDir}: ${manifest.chunks.length} chunks of ${chunkSize} bytes, ` +
        `${stored} with data, ${manifest.chunks.length - stored} zero, compression ${manifest.compression}, ` +
        `${((Date.now() - started) / 1000).toFixed(1)} s\n`,
    );
    return 0;
  } catch (err) {
    io.stderr.write(`virtio-blk-web pack: ${(err as Error).message}\n`);
    return 1;
  }
}
