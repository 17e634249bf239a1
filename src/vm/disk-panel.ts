// The live panel beside the terminal: what the guest's disk is doing, from
// the device's counters (Disk.stats) and the HTTP image's (fetches, bytes
// fetched, block-cache hits). Rates are differences between two samples a
// second or so apart, not averages since boot, so a `dd` in the guest shows
// up at once and an idle guest reads 0.

import type { DiskStats } from '../host/browser/types.ts';

/** Counters of the chunked HTTP image under the disk (HttpImageBackend.stats). */
export interface ImageCounters {
  readonly fetches: number;
  readonly bytesFetched: number;
  readonly cacheHits: number;
  readonly cacheMisses: number;
}

export interface PanelSource {
  stats(): DiskStats;
  image(): ImageCounters | null;
}

const TILES = [
  ['iops', 'IOPS', 'requests completed per second'],
  ['mibps', 'MiB/s', 'bytes read + written per second, in MiB (2^20 bytes)'],
  ['inflight', 'in flight', 'requests the device holds now'],
  ['flushes', 'flushes', 'FLUSH requests since boot'],
  ['hits', 'cache hits', 'image blocks found in the block cache'],
  ['fetched', 'fetched', 'image bytes fetched over HTTP, and in how many requests'],
  ['reads', 'reads', 'read requests since boot'],
  ['writes', 'writes', 'write requests since boot'],
  ['errors', 'I/O errors', 'requests answered IOERR'],
] as const;
type TileId = (typeof TILES)[number][0];

const SAMPLE_MS = 1000;

/** Bytes in binary units with at most one decimal, none when whole: 512 B, 256 KiB, 2.5 MiB, 32 MiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'] as const;
  let i = 0;
  while (i < units.length - 1 && n >= 1024 ** (i + 1)) i++;
  return `${Number((n / 1024 ** i).toFixed(1))} ${units[i]}`;
}

const count = (n: number): string => Math.round(n).toLocaleString('en-US');

export class DiskPanel {
  readonly #outputs = new Map<TileId, HTMLOutputElement>();
  #source: PanelSource | null = null;
  #last: { at: number; completed: number; bytes: number } | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;

  constructor(container: HTMLElement) {
    for (const [id, label, title] of TILES) {
      const tile = document.createElement('div');
      tile.className = 'tile';
      tile.title = title;
      const name = document.createElement('span');
      name.textContent = label;
      const output = document.createElement('output');
      output.id = `stat-${id}`;
      output.textContent = '–';
      tile.append(name, output);
      container.append(tile);
      this.#outputs.set(id, output);
    }
  }

  /** Start sampling `source` (null: stop and clear). */
  watch(source: PanelSource | null): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#source = source;
    this.#last = null;
    for (const output of this.#outputs.values()) output.textContent = '–';
    if (!source) return;
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), SAMPLE_MS);
  }

  #set(id: TileId, text: string): void {
    this.#outputs.get(id)!.textContent = text;
  }

  #sample(): void {
    const source = this.#source;
    if (!source) return;
    const s = source.stats();
    const now = performance.now();
    const moved = s.bytesRead + s.bytesWritten;
    if (this.#last) {
      const seconds = (now - this.#last.at) / 1000;
      this.#set('iops', count((s.completed - this.#last.completed) / seconds));
      this.#set('mibps', ((moved - this.#last.bytes) / seconds / 2 ** 20).toFixed(2));
    }
    this.#last = { at: now, completed: s.completed, bytes: moved };
    this.#set('inflight', count(s.inFlight));
    this.#set('flushes', count(s.flushes));
    this.#set('reads', count(s.reads));
    this.#set('writes', count(s.writes));
    this.#set('errors', count(s.ioErrors));
    this.#outputs.get('errors')!.classList.toggle('bad', s.ioErrors > 0);
    const image = source.image();
    this.#set('hits', image ? count(image.cacheHits) : 'n/a');
    this.#set('fetched', image ? `${formatBytes(image.bytesFetched)} in ${count(image.fetches)}` : 'n/a');
  }
}
