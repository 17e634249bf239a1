// The lab VM's root disk: the chunked HTTP image the project script builds
// (scripts/build-lab-image.ts) as a read-only base, under a copy-on-write
// overlay whose top is an IndexedDB disk in this browser profile. The base
// is fetched on demand and never written; everything the guest writes goes
// to the top, so it survives a reload, and resetting the overlay (deleting
// the top) returns the disk to the shipped image.
//
// Why IndexedDB and not OPFS for the top: v86 runs on the page's thread and
// the device runs on v86's thread (DESIGN.md: v86's memory is not shared),
// and OPFS sync access handles exist only in dedicated workers. The device
// awaits the top's promises like any asynchronous backend.
//
// The top is tied to the base's identity, the SHA-256 of its manifest: a
// rebuilt image under a kept top is refused with 'base-mismatch' (never mixed
// data), and the page then offers the reset.
//
// A reload's new page can start before the old one has let go of the top's
// Web Lock (more so while the old one was flushing, on a loaded machine), so
// a top that is in use is waited for, up to TOP_LOCK_WAIT_MS, and the page is
// told it is waiting; only then is it "open in another tab".

import { StorageError, StorageErrorCode } from '../backends/backend.ts';
import { HttpChunkedBackend } from '../backends/http-chunked.ts';
import { IndexedDbBackend, deleteIndexedDbDisk, listIndexedDbDisks } from '../backends/indexeddb.ts';
import { OverlayBackend, overlayTopBytes } from '../backends/overlay.ts';

/** Where the Vite plugin serves the packed image. */
export const LAB_MANIFEST_URL = '/lab-assets/image/manifest.json';
/** The IndexedDB disk holding the overlay's top. */
export const LAB_TOP_NAME = 'vm-lab-overlay';

const TOP_LOCK_WAIT_MS = 30_000;

export interface LabDisk {
  /** What the device serves. */
  readonly backend: OverlayBackend;
  /** The HTTP image under it, for its fetch and cache counters. */
  readonly image: HttpChunkedBackend;
  /** The manifest hash the top is tied to. */
  readonly identity: string;
  /** Whether this open made a new top (first visit, or after a reset). */
  readonly freshTop: boolean;
}

/** Open the lab disk; `onLockWait` is called once if the top is held elsewhere and waited for. */
export async function openLabDisk(onLockWait?: () => void, manifestUrl = LAB_MANIFEST_URL): Promise<LabDisk> {
  const image = await HttpChunkedBackend.open(manifestUrl);
  const existed = (await listIndexedDbDisks()).some((d) => d.name === LAB_TOP_NAME);
  let top: IndexedDbBackend | null = null;
  try {
    const openTop = (lockWaitMs: number) => IndexedDbBackend.open({ name: LAB_TOP_NAME, size: overlayTopBytes(image.size), lockWaitMs });
    try {
      top = await openTop(0);
    } catch (err) {
      if (!(err instanceof StorageError && err.code === StorageErrorCode.InUse)) throw err;
      onLockWait?.();
      top = await openTop(TOP_LOCK_WAIT_MS);
    }
    const backend = await OverlayBackend.open({ base: image, top, name: 'lab root' });
    return { backend, image, identity: image.identity, freshTop: !existed };
  } catch (err) {
    // On failure the overlay owns neither backend (overlay.ts).
    await top?.close();
    image.close();
    throw err;
  }
}

/** Forget everything the guest wrote: delete the overlay's top (the disk must be closed). */
export async function resetLabOverlay(): Promise<void> {
  if ((await listIndexedDbDisks()).some((d) => d.name === LAB_TOP_NAME)) await deleteIndexedDbDisk(LAB_TOP_NAME);
}
