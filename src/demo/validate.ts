// The lab's input rules, one function per field. Each returns the value or
// the reason it is refused, in words the page shows beside the field:
// nothing is clamped or replaced behind the user's back.

export type Checked<T> = { ok: true; value: T } | { ok: false; reason: string };

const MiB = 1 << 20;
/** A memory disk lives in the device worker's heap; past this the lab refuses instead of failing to allocate. */
export const MEMORY_DISK_MAX_MIB = 2048;

function wholeNumber(text: string, what: string, min: number, max: number, unit = ''): Checked<number> {
  const trimmed = text.trim();
  if (trimmed === '') return { ok: false, reason: `${what}: enter a number` };
  const n = Number(trimmed);
  if (!Number.isInteger(n)) return { ok: false, reason: `${what}: "${trimmed}" is not a whole number` };
  const u = unit ? ` ${unit}` : '';
  if (n < min) return { ok: false, reason: `${what}: at least ${min.toLocaleString()}${u}` };
  if (n > max) return { ok: false, reason: `${what}: at most ${max.toLocaleString()}${u}` };
  return { ok: true, value: n };
}

/**
 * A disk size in MiB. `freeBytes` is what the origin's quota has left
 * (OPFS: Chromium counts a disk's full size against it, even sparse);
 * `existingBytes` is set when the OPFS or IndexedDB disk exists (its size is kept).
 */
export function checkDiskSize(
  text: string,
  backend: 'memory' | 'opfs' | 'indexeddb',
  freeBytes: number | null,
  existingBytes: number | null,
): Checked<number> {
  if (backend !== 'memory' && existingBytes !== null) return { ok: true, value: existingBytes };
  const max = backend === 'memory' ? MEMORY_DISK_MAX_MIB : Math.floor((freeBytes ?? Number.MAX_SAFE_INTEGER) / MiB);
  const r = wholeNumber(text, 'Size', 1, Math.max(1, max), 'MiB');
  if (!r.ok) {
    if (backend === 'memory' && Number(text) > MEMORY_DISK_MAX_MIB) {
      return { ok: false, reason: `${r.reason}: a memory disk lives in the device worker's memory` };
    }
    if (backend !== 'memory' && freeBytes !== null && Number(text) > max) {
      return { ok: false, reason: `${r.reason}: this origin has ${max.toLocaleString()} MiB of storage quota free` };
    }
    return r;
  }
  return { ok: true, value: r.value * MiB };
}

/** An OPFS file name (one path component). */
export function checkDiskName(text: string): Checked<string> {
  const name = text.trim();
  if (name === '') return { ok: false, reason: 'OPFS name: enter a name' };
  if (/[/\\]/.test(name) || name === '.' || name === '..') return { ok: false, reason: `OPFS name: "${name}" cannot contain / or \\ or be . or ..` };
  if (name.length > 200) return { ok: false, reason: 'OPFS name: at most 200 characters' };
  return { ok: true, value: name };
}

/** Queue depth: at most the queue size, and the buffers must fit the guest's data area. */
export function checkQueueDepth(text: string, queueSize: number, blockBytes: number, dataBytes: number): Checked<number> {
  const fit = Math.floor(dataBytes / blockBytes);
  const max = Math.min(queueSize, fit);
  const r = wholeNumber(text, 'Queue depth', 1, max);
  if (!r.ok && Number(text) > max) {
    return {
      ok: false,
      reason:
        fit < queueSize
          ? `Queue depth: at most ${max} with ${blockBytes / 1024} KiB blocks (the guest's ${dataBytes / MiB} MiB data area)`
          : `Queue depth: at most ${max} (the queue size)`,
    };
  }
  return r;
}

export function checkSeconds(text: string): Checked<number> {
  return wholeNumber(text, 'Seconds', 1, 600, 's');
}

/** IOPS limit, 0 for none. */
export function checkIopsLimit(text: string): Checked<number> {
  return wholeNumber(text, 'IOPS limit', 0, 10_000_000);
}
