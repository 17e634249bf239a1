// The lab's disk-state line: what the attached persistent disk holds right
// now. IndexedDB: chunks stored (counted in the database itself, read-only,
// beside the device) and the device's cache (cached, dirty, write-back
// transactions in flight, from the state lab-backend.ts publishes); overlay:
// blocks read from the base, held in the top, zeroed, and whether the map has
// unflushed changes; every kind: the origin's storage use against its quota.
// Refreshed twice a second while a disk is attached; the numbers are also on
// <body data-*> for tests.

import { indexedDbDatabaseName } from '../backends/indexeddb.ts';
import type { Disk } from '../host/browser/disk.ts';
import type { BackendSpec } from '../host/browser/worker-protocol.ts';
import { LabState } from './lab-backend.ts';

const MiB = 1 << 20;
const REFRESH_MS = 500;
const mib = (bytes: number) => `${(bytes / MiB).toLocaleString(undefined, { maximumFractionDigits: 1 })} MiB`;

interface Shown {
  kind: 'memory' | 'opfs' | 'indexeddb' | 'overlay';
  name: string;
  stored: BackendSpec | null;
  state: Float64Array | null;
}

/** Chunk records (number keys; 'meta' is a string) in IndexedDB disk `name`, or null when it cannot be read. */
async function storedChunks(name: string): Promise<number | null> {
  try {
    const request = indexedDB.open(indexedDbDatabaseName(name));
    const db = await new Promise<IDBDatabase>((resolve, reject) => {
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
      // Not a disk (never created): do not create a database for it.
      request.onupgradeneeded = () => request.transaction?.abort();
    });
    try {
      return await new Promise<number>((resolve, reject) => {
        const r = db.transaction('chunks').objectStore('chunks').count(IDBKeyRange.bound(-Infinity, Infinity));
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
      });
    } finally {
      db.close();
    }
  } catch {
    return null;
  }
}

/** The IndexedDB disk behind a stored spec: the disk itself, or an overlay's top. */
function indexedDbName(spec: BackendSpec | null): string | null {
  if (spec?.kind === 'indexeddb') return spec.name;
  if (spec?.kind === 'overlay' && spec.top.kind === 'indexeddb') return spec.top.name;
  return null;
}

export class DiskState {
  readonly #el: HTMLElement;
  #timer: ReturnType<typeof setInterval> | null = null;
  #shown: Shown | null = null;
  #busy = false;

  constructor(el: HTMLElement) {
    this.#el = el;
  }

  /** Follow `lab` (null: nothing attached). */
  show(lab: Shown | null, disk: Disk | null): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#shown = lab;
    for (const key of ['storedChunks', 'dirtyChunks', 'topBlocks']) delete document.body.dataset[key];
    if (!lab || !disk || lab.kind === 'memory') {
      this.#el.textContent = lab?.kind === 'memory' ? 'memory disk: nothing is stored; it is gone when the page closes' : '';
      return;
    }
    void this.#refresh();
    this.#timer = setInterval(() => void this.#refresh(), REFRESH_MS);
  }

  async #refresh(): Promise<void> {
    const lab = this.#shown;
    if (!lab || this.#busy) return;
    this.#busy = true;
    try {
      const parts: string[] = [];
      const s = lab.state;
      const idb = indexedDbName(lab.stored);
      const chunks = idb ? await storedChunks(idb) : null;
      if (lab !== this.#shown) return;
      if (lab.kind === 'overlay' && s) {
        parts.push(
          `overlay "${lab.name}": ${s[LabState.BaseBlocks]!.toLocaleString()} blocks read from the base, ` +
            `${s[LabState.TopBlocks]!.toLocaleString()} in the top, ${s[LabState.ZeroBlocks]!.toLocaleString()} zeroed; ` +
            `map ${s[LabState.MapDirty] ? 'has changes not yet flushed' : 'flushed'}`,
        );
        document.body.dataset.topBlocks = String(s[LabState.TopBlocks]);
      }
      if (chunks !== null) {
        parts.push(`IndexedDB "${idb}": ${chunks.toLocaleString()} chunks stored`);
        document.body.dataset.storedChunks = String(chunks);
      }
      if (lab.kind === 'indexeddb' && s) {
        parts.push(
          `device cache: ${s[LabState.CachedChunks]!.toLocaleString()} chunks, ${s[LabState.DirtyChunks]!.toLocaleString()} dirty, ` +
            `${s[LabState.InFlightTransactions]!.toLocaleString()} write-back transactions in flight`,
        );
        document.body.dataset.dirtyChunks = String(s[LabState.DirtyChunks]);
      }
      if (lab.kind === 'opfs') parts.push(`OPFS "${lab.name}": a file of the disk's size (OPFS cannot punch holes)`);
      const e = await navigator.storage?.estimate?.();
      if (e?.quota !== undefined) parts.push(`origin storage: ${mib(e.usage ?? 0)} used of ${mib(e.quota)} quota`);
      if (lab === this.#shown) this.#el.textContent = parts.join('\n');
    } finally {
      this.#busy = false;
    }
  }
}
