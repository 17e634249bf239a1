// The Web Lock that says who owns a persistent disk (OPFS, IndexedDB), shared
// by those backends so both give the same answer: writers take the disk's
// lock exclusively, read-only openers share it, and `ifAvailable` means a
// loser learns 'in-use' at once instead of queueing behind the holder (never
// a hang). The browser releases a lock when the tab or worker holding it dies,
// so a crash leaves no stale owner behind.

import { StorageError, StorageErrorCode } from './backend.ts';

/** A held Web Lock: `release()` lets it go; `released` settles once the lock manager has dropped it. */
export interface HeldLock {
  release(): void;
  released: Promise<void>;
}

/** How often a bounded lock wait tries again. */
const LOCK_RETRY_MS = 50;

/** `acquireLock`, retried every LOCK_RETRY_MS while the disk is in use, for at most `waitMs`. */
export async function acquireLockWithin(
  lockName: string,
  mode: LockMode,
  inUse: () => StorageError,
  waitMs: number,
): Promise<HeldLock | null> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return await acquireLock(lockName, mode, inUse);
    } catch (err) {
      const inUseNow = err instanceof StorageError && err.code === StorageErrorCode.InUse;
      if (!inUseNow || Date.now() + LOCK_RETRY_MS > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS));
    }
  }
}

/**
 * Take a Web Lock without waiting. Returns null where Web Locks do not exist
 * (the storage's own exclusivity, if any, still guards writers). Throws
 * `inUse()` when someone else holds it.
 */
export async function acquireLock(lockName: string, mode: LockMode, inUse: () => StorageError): Promise<HeldLock | null> {
  const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
  if (!locks) return null;
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let released!: Promise<void>;
  const granted = await new Promise<boolean>((resolve, reject) => {
    // request() settles only after the callback's promise does and the lock
    // is gone, which is what a closer must wait for before the disk can be
    // opened again.
    released = locks
      .request(lockName, { mode, ifAvailable: true }, async (lock) => {
        resolve(lock !== null);
        // The lock lasts as long as this callback's promise is pending.
        if (lock) await held;
      })
      .then(() => undefined, reject);
  });
  if (!granted) throw inUse();
  return { release, released };
}

/** The typed error every persistent backend throws when another holder has the disk. */
export function inUseError(what: string, cause?: unknown): StorageError {
  return new StorageError(
    StorageErrorCode.InUse,
    `${what} is in use by another tab or worker; close it there first, or open it read-only if it is only being read`,
    cause === undefined ? undefined : { cause },
  );
}
