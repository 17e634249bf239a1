// The page the v86 HTTP boots run on (bench/node/v86-http.ts): one boot per
// fresh browser profile, v86 on the page, its root ext4 fetched over HTTP
// from the bench's counting server (another origin), until the disk's
// /vbw/init.sh prints its first line (VBW-SHELL). Then the emulator stops, so
// what the server counted is what the boot to a shell needed.
//
// Three disks on the same image:
// - 'ide-http': v86's own IDE disk with its asynchronous HTTP image
//   (`hda: {url, async: true, size}`): one XHR Range request per read the
//   IDE controller makes, no read cache (v86 caches only with
//   fixed_chunk_size), whatever the browser's HTTP cache keeps;
// - 'http-range' / 'http-chunked': this project's HTTP backends (block cache,
//   coalesced misses, read-ahead) under attachVirtioBlk.
// The guest's boot is the same kernel, initramfs and command line as the
// e2e harness (e2e/harness/v86-guest.ts); the kernel, initramfs and BIOS come
// from the dev server, uncounted and identical for all three.

import { HttpChunkedBackend, HttpRangeBackend, type HttpStats } from '../../src/backends/http.ts';
import { attachVirtioBlk } from '../../src/host/v86/index.ts';
import { V86 } from 'v86';

export type HttpDisk = 'ide-http' | 'http-range' | 'http-chunked';

export interface HttpBootConfig {
  disk: HttpDisk;
  /** The image (ide-http, http-range) or the chunked image's manifest.json (http-chunked). */
  url: string;
  /** Image size in bytes (v86's async disk is given it, so it makes no size request). */
  size: number;
  timeoutMs: number;
}

export interface HttpBootResult {
  /** ms from the call to /init and to the disk's shell line; null if never seen. */
  initMs: number | null;
  shellMs: number | null;
  /** The guest's uptime at the shell line (s). */
  guestUptimeS: number | null;
  /** The project backend's own count (virtio disks only). */
  backendStats?: HttpStats;
  /** The serial console's tail when the shell never came. */
  serialTail?: string;
}

declare global {
  interface Window {
    v86HttpBench?: { boot(config: HttpBootConfig): Promise<HttpBootResult> };
  }
}

async function asset(name: string): Promise<ArrayBuffer> {
  const r = await fetch(`/.cache/v86/${name}`);
  if (!r.ok) throw new Error(`GET /.cache/v86/${name}: ${r.status} (run npx tsx e2e/v86/provision.ts)`);
  return r.arrayBuffer();
}

async function boot(config: HttpBootConfig): Promise<HttpBootResult> {
  const t0 = performance.now();
  const [bios, kernel, initrd] = await Promise.all(['bios.bin', 'vmlinuz.bin', 'initramfs.cpio'].map(asset));
  const ide = config.disk === 'ide-http';
  const backend = ide ? undefined : config.disk === 'http-range' ? await HttpRangeBackend.open(config.url) : await HttpChunkedBackend.open(config.url);
  const emulator = new V86({
    wasm_path: '/node_modules/v86/build/v86.wasm',
    memory_size: 256 << 20,
    vga_memory_size: 2 << 20,
    bios: { buffer: bios },
    bzimage: { buffer: kernel },
    initrd: { buffer: initrd },
    cmdline: `console=ttyS0 rdinit=/init quiet noisapnp pnpbios=off vbw.disk=${ide ? 'sda' : 'vda'} vbw.mount=ro vbw.test=boot`,
    hda: ide ? { url: config.url, async: true, size: config.size } : undefined,
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
  });
  const result: HttpBootResult = { initMs: null, shellMs: null, guestUptimeS: null };
  let serial = '';
  let settle!: () => void;
  const shell = new Promise<void>((resolve) => (settle = resolve));
  emulator.add_listener('serial0-output-byte', (byte: number) => {
    serial += String.fromCharCode(byte);
    if (byte !== 10) return;
    const lineStart = serial.lastIndexOf('\n', serial.length - 2) + 1;
    const text = serial.slice(lineStart, -1).replace(/\r$/, '');
    const ms = Math.round(performance.now() - t0);
    if (text.startsWith('VBW-INIT')) result.initMs ??= ms;
    if (text.startsWith('VBW-FAIL')) settle();
    if (text.startsWith('VBW-SHELL')) {
      result.shellMs = ms;
      result.guestUptimeS = Number(/uptime=([\d.]+)/.exec(text)?.[1] ?? NaN);
      settle();
    }
  });
  emulator.add_listener('emulator-loaded', () => {
    if (backend) attachVirtioBlk(emulator, { backend });
    void emulator.run();
  });
  const timer = setTimeout(settle, config.timeoutMs);
  await shell;
  clearTimeout(timer);
  await emulator.stop();
  if (backend) result.backendStats = { ...backend.stats };
  if (result.shellMs === null) result.serialTail = serial.slice(-4000);
  await emulator.destroy();
  return result;
}

window.v86HttpBench = { boot };
document.body.dataset.ready = 'true';
