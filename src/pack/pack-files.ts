// `pack` on files: stream an image from disk into a folder of chunk files and
// a manifest (Node only).
//
// Every file is written to a temporary name and renamed into place, and the
// manifest goes last: a folder whose manifest exists is complete, and an
// interrupted pack leaves at most some `.tmp-*` files, never a manifest
// naming a missing or half-written chunk. Packing a new version of an image
// into the same folder writes only the chunks that changed.

import { createReadStream } from 'node:fs';
import { access, mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { MANIFEST_FILE, type ChunkedManifest } from './manifest.ts';
import { manifestText, packStream, type ChunkStore, type PackOptions } from './pack.ts';

let temporaries = 0;

async function writeAtomically(path: string, bytes: Uint8Array | string): Promise<void> {
  const tmp = join(dirname(path), `.tmp-${process.pid}-${++temporaries}`);
  await writeFile(tmp, bytes);
  await rename(tmp, path);
}

/** A folder on disk as a chunk store. */
export function directoryStore(outDir: string): ChunkStore {
  return {
    async has(path) {
      try {
        await access(join(outDir, path));
        return true;
      } catch {
        return false;
      }
    },
    async put(path, bytes) {
      const file = join(outDir, path);
      await mkdir(dirname(file), { recursive: true });
      await writeAtomically(file, bytes);
    },
  };
}

/** Pack the image file at `imagePath` into `outDir` (created if needed). */
export async function packImage(imagePath: string, outDir: string, options: PackOptions = {}): Promise<ChunkedManifest> {
  await mkdir(outDir, { recursive: true });
  // Large reads: the chunker copies them into its one chunk buffer.
  const source = createReadStream(imagePath, { highWaterMark: 1024 * 1024 });
  const manifest = await packStream(source, directoryStore(outDir), options);
  await writeAtomically(join(outDir, MANIFEST_FILE), manifestText(manifest));
  return manifest;
}
