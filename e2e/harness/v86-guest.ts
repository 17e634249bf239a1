// Boots Debian's i386 kernel in v86, headless, with its root ext4 on either
// this project's virtio-blk disk (attached with src/host/v86) or v86's own
// IDE disk holding the same image (the baseline). Runs unchanged on the page
// or in a dedicated worker (v86-worker.ts): OPFS sync access handles exist
// only in the latter.
//
// The guest's /init and /vbw/init.sh (e2e/v86/provision.ts, e2e/v86/image.ts)
// print lines starting with VBW-; each is stamped with the milliseconds since
// `boot` was called, so a result says both what the guest found and when.

import type { BlockBackend } from '../../src/backends/backend.ts';
import { MemoryBackend } from '../../src/backends/memory.ts';
import { OpfsBackend } from '../../src/backends/opfs.ts';
import { attachVirtioBlk, type V86VirtioBlk } from '../../src/host/v86/index.ts';
import { explainStall } from '../v86/stall.ts';
import { V86 } from 'v86';

export type BootBackend =
  | { kind: 'memory'; readOnly?: boolean }
  | { kind: 'opfs'; name: string; fresh: boolean; readOnly?: boolean }
  | { kind: 'indexeddb'; name: string; fresh: boolean }
  /** The image over HTTP (Range requests) under a copy-on-write top in OPFS (worker only). */
  | { kind: 'overlay'; name: string };

export interface BootConfig {
  /** 'virtio': this project's disk; 'ide': v86's own IDE disk on the same image (from memory). */
  disk: 'virtio' | 'ide';
  backend: BootBackend;
  /** URL of the ext4 image (fetched to fill a fresh disk, or the IDE disk). */
  imageUrl: string;
  /** What /vbw/init.sh does (vbw.test=). */
  test: string;
  /** Mount options for the root (vbw.mount=). */
  mount?: 'rw' | 'ro';
  timeoutMs: number;
  /** Kernel command line words added after the harness's own. */
  extraCmdline?: string;
  /** Read the whole disk back after the guest powered off (from the disk, not the image). */
  exportImage?: boolean;
}

export interface BootResult {
  /** Every VBW- line with the ms since boot() it arrived at. */
  marks: Array<{ line: string; ms: number }>;
  serial: string;
  ended: boolean;
  /** Where it ran and what it saw. */
  where: 'page' | 'worker';
  counters?: { dirtyCalls: number; runs: number; redos: number; reads: number; writes: number; discards: number; flushes: number };
  image?: ArrayBuffer;
  error?: string;
  /** A boot that timed out on this disk: where its requests and interrupts stood, and a kick's outcome (e2e/v86/stall.ts). */
  stall?: string;
}

const ASSETS = '/.cache/v86';
const V86_BUILD = '/node_modules/v86/build';

async function fetchBytes(url: string): Promise<ArrayBuffer> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${url}: ${r.status} (run npx tsx e2e/v86/provision.ts)`);
  return r.arrayBuffer();
}

async function openBackend(spec: BootBackend, imageUrl: string, image: () => Promise<ArrayBuffer>): Promise<BlockBackend> {
  if (spec.kind === 'memory') {
    const data = new Uint8Array(await image());
    return new MemoryBackend(data.length, { data, shareBuffer: true, readOnly: spec.readOnly });
  }
  if (spec.kind === 'opfs') {
    if (spec.fresh) {
      const bytes = new Uint8Array(await image());
      const writer = await OpfsBackend.open({ name: spec.name, size: bytes.length, lockWaitMs: 5000 });
      writer.write(0, bytes);
      writer.flush();
      writer.close();
    }
    return OpfsBackend.open({ name: spec.name, readOnly: spec.readOnly, lockWaitMs: 5000 });
  }
  if (spec.kind === 'overlay') {
    const [{ HttpRangeBackend }, { OverlayBackend, overlayTopBytes }] = await Promise.all([
      import('../../src/backends/http-range.ts'),
      import('../../src/backends/overlay.ts'),
    ]);
    const base = await HttpRangeBackend.open(new URL(imageUrl, location.href).href);
    const top = await OpfsBackend.open({ name: spec.name, size: overlayTopBytes(base.size), lockWaitMs: 5000 });
    return OverlayBackend.open({ base, top, name: spec.name });
  }
  const { IndexedDbBackend } = await import('../../src/backends/indexeddb.ts');
  if (spec.fresh) {
    const bytes = new Uint8Array(await image());
    const writer = await IndexedDbBackend.open({ name: spec.name, size: bytes.length, lockWaitMs: 5000 });
    await writer.write(0, bytes);
    await writer.flush();
    await writer.close();
  }
  return IndexedDbBackend.open({ name: spec.name, lockWaitMs: 5000 });
}

async function readWhole(backend: BlockBackend): Promise<ArrayBuffer> {
  const out = new Uint8Array(backend.size);
  const step = 4 << 20;
  for (let at = 0; at < out.length; at += step) await backend.read(at, out.subarray(at, Math.min(out.length, at + step)));
  return out.buffer;
}

export async function boot(config: BootConfig): Promise<BootResult> {
  const t0 = performance.now();
  const where = typeof document === 'undefined' ? 'worker' : 'page';
  const result: BootResult = { marks: [], serial: '', ended: false, where };
  const [bios, kernel, initrd] = await Promise.all(['bios.bin', 'vmlinuz.bin', 'initramfs.cpio'].map((f) => fetchBytes(`${ASSETS}/${f}`)));
  let imageBytes: ArrayBuffer | undefined;
  const image = async (): Promise<ArrayBuffer> => (imageBytes ??= await fetchBytes(config.imageUrl));
  const backend = config.disk === 'virtio' ? await openBackend(config.backend, config.imageUrl, image) : undefined;
  const diskName = config.disk === 'virtio' ? 'vda' : 'sda';
  const cmdline = `console=ttyS0 rdinit=/init quiet noisapnp pnpbios=off vbw.disk=${diskName} vbw.mount=${config.mount ?? 'rw'} vbw.test=${config.test} ${config.extraCmdline ?? ''}`.trim();
  const emulator = new V86({
    wasm_path: `${V86_BUILD}/v86.wasm`,
    memory_size: 256 << 20,
    vga_memory_size: 2 << 20,
    bios: { buffer: bios },
    bzimage: { buffer: kernel },
    initrd: { buffer: initrd },
    cmdline,
    hda: config.disk === 'ide' ? { buffer: await image() } : undefined,
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
  });
  let attached: V86VirtioBlk | undefined;
  let line = '';
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  emulator.add_listener('serial0-output-byte', (byte: number) => {
    const ch = String.fromCharCode(byte);
    result.serial += ch;
    if (ch !== '\n') {
      line += ch;
      return;
    }
    const text = line.replace(/\r$/, '');
    line = '';
    if (text.startsWith('VBW-')) {
      result.marks.push({ line: text, ms: Math.round(performance.now() - t0) });
      if (text === 'VBW-END' || text.startsWith('VBW-FAIL')) finish();
    }
  });
  emulator.add_listener('emulator-loaded', () => {
    try {
      if (backend) attached = attachVirtioBlk(emulator, { backend });
      void emulator.run();
    } catch (err) {
      result.error = String((err as Error).stack ?? err);
      finish();
    }
  });
  const timer = setTimeout(finish, config.timeoutMs);
  await done;
  clearTimeout(timer);
  result.ended = result.marks.some((m) => m.line === 'VBW-END');
  if (!result.ended && !result.error && attached) result.stall = await explainStall(emulator, attached, backend);
  await emulator.stop();
  if (attached) {
    const s = attached.disk.device.stats;
    result.counters = { ...attached.counters, reads: s.reads, writes: s.writes, discards: s.discards, flushes: s.flushes };
  }
  if (backend) {
    await backend.flush();
    if (config.exportImage) result.image = await readWhole(backend);
    if (attached) await attached.disk.close();
    else await backend.close();
  }
  await emulator.destroy();
  return result;
}
