// Provisions what the v86 boot test needs, into .cache/v86 (gitignored):
// SeaBIOS from Debian's `seabios` package (v86 ships no BIOS), Debian 12's
// i386 kernel (686, unsigned) and busybox-static:i386, and a busybox
// initramfs whose /init loads virtio-pci, virtio-blk and ext4 (or the PIIX
// IDE modules, for v86's own disk), mounts the disk named on the kernel
// command line and switch_roots into it. What the guest then runs comes
// from the disk itself (/vbw/init.sh, written by each test), so every
// program after /init is read through the disk under test.
//
// The packages are fetched with `apt-get download` and unpacked with
// `dpkg-deb -x` (e2e/linux/provision.ts's `unpackedDebs`, shared with the
// QEMU guest's provisioning): nothing is installed on the host except the
// tools (kmod for depmod/modprobe, e2fsprogs), which its helpers check.
// i386 packages need `dpkg --add-architecture i386 && apt-get update` once;
// as root this script does it, otherwise the error says exactly what to run.
// Idempotent: a second run finds assets.json and downloads nothing.
//
// Run directly: `npx tsx e2e/v86/provision.ts`.

import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpioNewc, type CpioEntry } from '../linux/cpio.ts';
import {
  ProvisionError,
  ensureHostTools,
  log,
  moduleLoadOrder,
  repoRoot,
  run,
  unpackedDebs,
  unpackedKernel,
  unsignedKernelPackage,
} from '../linux/provision.ts';

export const v86CacheDir = join(repoRoot, '.cache', 'v86');

/** Bump when the initramfs layout or /init changes: the cache is rebuilt. */
const LAYOUT_VERSION = 4;

/** Modules for the virtio disk; crc32c_generic first (ext4's checksum, a soft dependency modprobe does not list). */
const VIRTIO_MODULES = ['crc32c_generic', 'virtio_pci', 'virtio_blk', 'ext4'];
/** Extra modules for v86's own IDE disk (PIIX3 IDE, SCSI disk). */
const IDE_MODULES = ['ata_piix', 'sd_mod'];

/** Modules modprobe lists that cannot load under v86: crc32c-intel needs SSE4.2, which v86 does not emulate. */
const UNUSABLE = /\/crc32c-intel\.ko/;

/** Host command → the Debian package that provides it. */
const HOST_TOOLS: Record<string, string> = {
  modprobe: 'kmod',
  depmod: 'kmod',
  mke2fs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  debugfs: 'e2fsprogs',
  'dpkg-deb': 'dpkg',
};

export interface V86Assets {
  /** SeaBIOS image (bios.bin). */
  bios: string;
  kernel: string;
  initrd: string;
  kernelVersion: string;
  /** The guest's static busybox (i386), for the root images the tests build. */
  busybox: string;
  /** v86's build folder (libv86.mjs, v86.wasm) from the npm package. */
  v86Build: string;
}

/**
 * /init: load the disk's modules, mount the disk named by `vbw.disk=` (vda
 * by default; sda for v86's IDE disk) with `vbw.mount=` options (rw or ro),
 * and switch_root into it, where /vbw/init.sh takes over. Every line the
 * test waits for starts with VBW-.
 */
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "VBW-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"
disk=vda
opts=rw
for word in $(cat /proc/cmdline); do
  case "$word" in
    vbw.disk=*) disk="\${word#vbw.disk=}" ;;
    vbw.mount=*) opts="\${word#vbw.mount=}" ;;
  esac
done
order=/modules/order
[ "$disk" = sda ] && order=/modules/order-ide
for m in $(cat $order); do
  insmod /modules/$m || echo "VBW-INIT: insmod $m failed"
done
# The disk appears asynchronously after the driver probes.
i=0
while [ ! -b /dev/$disk ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -b /dev/$disk ]; then
  echo "VBW-FAIL no /dev/$disk"; ls /dev /sys/block; dmesg | tail -30
  poweroff -f
fi
echo "VBW-DISK $disk ro=$(cat /sys/block/$disk/ro) sectors=$(cat /sys/block/$disk/size)"
if ! mount -t ext4 -o "$opts" /dev/$disk /newroot; then
  echo "VBW-FAIL mount /dev/$disk"; dmesg | tail -30
  poweroff -f
fi
if [ ! -f /newroot/vbw/init.sh ]; then
  echo "VBW-FAIL no /vbw/init.sh on /dev/$disk"
  poweroff -f
fi
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /bin/sh /vbw/init.sh
`;

function buildInitramfs(rootDir: string, version: string, out: string): void {
  run('depmod', ['-b', rootDir, version]);
  const virtio = moduleLoadOrder(rootDir, version, VIRTIO_MODULES, (p) => UNUSABLE.test(p));
  const ide = [...virtio, ...moduleLoadOrder(rootDir, version, IDE_MODULES, (p) => UNUSABLE.test(p) || virtio.includes(p))];
  const name = (p: string): string => p.split('/').pop()!;
  const entries: CpioEntry[] = [
    { kind: 'dir', path: 'bin' },
    { kind: 'dir', path: 'sbin' },
    { kind: 'dir', path: 'modules' },
    { kind: 'file', path: 'bin/busybox', data: readFileSync(join(rootDir, 'bin', 'busybox')), mode: 0o755 },
    { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    { kind: 'file', path: 'init', data: new TextEncoder().encode(INIT), mode: 0o755 },
  ];
  for (const p of ide) entries.push({ kind: 'file', path: `modules/${name(p)}`, data: readFileSync(p) });
  const list = (paths: string[]): Uint8Array => new TextEncoder().encode(paths.map(name).join('\n') + '\n');
  entries.push({ kind: 'file', path: 'modules/order', data: list(virtio) });
  entries.push({ kind: 'file', path: 'modules/order-ide', data: list(ide) });
  writeFileSync(out, cpioNewc(entries));
}

/** The npm package's build folder; `npm ci` installs it (devDependency). */
function v86BuildDir(): string {
  const dir = join(repoRoot, 'node_modules', 'v86', 'build');
  for (const f of ['libv86.mjs', 'v86.wasm']) {
    if (!existsSync(join(dir, f))) throw new ProvisionError(`node_modules/v86/build/${f} is missing: run npm install (v86 is a devDependency)`);
  }
  return dir;
}

/** Everything the v86 boot test needs; downloads only when the cache lacks it. */
export function provisionV86(): V86Assets {
  const v86Build = v86BuildDir();
  ensureHostTools(HOST_TOOLS);
  const manifest = join(v86CacheDir, 'assets.json');
  if (existsSync(manifest)) {
    const assets = JSON.parse(readFileSync(manifest, 'utf8')) as V86Assets & { layout?: number };
    const files = [assets.bios, assets.kernel, assets.initrd, assets.busybox];
    if (assets.layout === LAYOUT_VERSION && files.every((f) => existsSync(f))) return { ...assets, v86Build };
  }
  mkdirSync(v86CacheDir, { recursive: true });
  const seabiosPath = 'usr/share/seabios/bios.bin';
  const packages = (): string[] => [unsignedKernelPackage('i386', '686'), 'busybox-static:i386', 'seabios'];
  const rootDir = unpackedDebs(v86CacheDir, 'i386', packages, ['bin/busybox', 'boot', seabiosPath]);
  const seabios = join(rootDir, seabiosPath);
  const { path: kernelImage, version: kernelVersion } = unpackedKernel(rootDir);
  // Fixed names, so the pages fetch them without knowing the versions.
  const bios = join(v86CacheDir, 'bios.bin');
  const kernel = join(v86CacheDir, 'vmlinuz.bin');
  const busybox = join(v86CacheDir, 'busybox');
  copyFileSync(seabios, bios);
  copyFileSync(kernelImage, kernel);
  copyFileSync(join(rootDir, 'bin', 'busybox'), busybox);
  const initrd = join(v86CacheDir, 'initramfs.cpio');
  buildInitramfs(rootDir, kernelVersion, `${initrd}.tmp`);
  renameSync(`${initrd}.tmp`, initrd);
  const assets = { bios, kernel, initrd, kernelVersion, busybox, v86Build, layout: LAYOUT_VERSION };
  writeFileSync(manifest, JSON.stringify(assets, null, 2));
  log(`ready: SeaBIOS, kernel ${kernelVersion}, initramfs ${initrd}`);
  return assets;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.stdout.write(`${JSON.stringify(provisionV86(), null, 2)}\n`);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  }
}
