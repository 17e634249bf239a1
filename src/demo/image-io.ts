// Import a local disk image into OPFS and export an OPFS disk as a download,
// both streaming: the image passes through in chunks and is never held whole
// in memory. Both run while the disk is detached; each holds the disk's Web
// Lock for its duration, so a device cannot open the disk half-written (and
// an attached disk makes them fail with 'in-use' instead of racing it).

import { StorageError, StorageErrorCode, toStorageError } from '../backends/backend.ts';
import { opfsDirectory, opfsLockName } from '../backends/opfs.ts';
import { SECTOR_SIZE } from '../block/constants.ts';

/** Run `body` holding the disk's lock exclusively, or fail at once with 'in-use'. */
async function withDiskLock<T>(name: string, directory: string, body: () => Promise<T>): Promise<T> {
  let result: T | undefined;
  let got = false;
  await navigator.locks.request(opfsLockName(name, directory), { mode: 'exclusive', ifAvailable: true }, async (lock) => {
    if (!lock) return;
    got = true;
    result = await body();
  });
  if (!got) throw new StorageError(StorageErrorCode.InUse, `OPFS disk "${name}" is attached or in use elsewhere; detach it first`);
  return result as T;
}

/**
 * Stream `image` into the OPFS disk `name` (replacing it). The disk's size is
 * the image's, rounded up to whole sectors. Returns that size.
 */
export async function importImage(
  image: Blob,
  name: string,
  directory: string,
  onProgress: (doneBytes: number, totalBytes: number) => void,
): Promise<number> {
  const size = Math.ceil(image.size / SECTOR_SIZE) * SECTOR_SIZE;
  return withDiskLock(name, directory, async () => {
    try {
      const folder = await opfsDirectory(directory, true);
      const file = await folder.getFileHandle(name, { create: true });
      // The writable stream writes a swap file and replaces the disk on
      // close: an interrupted import leaves the old disk intact.
      const writable = await file.createWritable({ keepExistingData: false });
      const reader = image.stream().getReader();
      let done = 0;
      try {
        for (;;) {
          const chunk = await reader.read();
          if (chunk.done) break;
          await writable.write(chunk.value);
          done += chunk.value.length;
          onProgress(done, image.size);
        }
        if (size !== image.size) await writable.truncate(size);
        await writable.close();
      } catch (err) {
        await writable.abort().catch(() => undefined);
        throw err;
      }
      return size;
    } catch (err) {
      throw toStorageError(err, `import into OPFS disk "${name}"`);
    }
  });
}

/**
 * The OPFS disk `name` as a File. It is backed by the disk on storage, not
 * copied into memory: hand it to URL.createObjectURL for a download.
 */
export async function exportImage(name: string, directory: string): Promise<File> {
  return withDiskLock(name, directory, async () => {
    try {
      const folder = await opfsDirectory(directory);
      return await (await folder.getFileHandle(name)).getFile();
    } catch (err) {
      throw toStorageError(err, `export of OPFS disk "${name}"`);
    }
  });
}
