// Builds the VM lab's root disk (index.html, src/vm): a small ext4 image holding the
// guest's static busybox, an inittab that keeps a shell on ttyS0, a motd and
// a profile, packed by the project's own `virtio-blk-web pack` into
// .cache/lab-image/packed/ (gitignored), which the Vite plugin
// (build-lab-image.plugin.ts) serves at /lab-assets/image/ as a chunked HTTP
// image.
//
// Everything else the VM needs comes from the v86 boot test's provisioning
// (e2e/v86/provision.ts), called here rather than copied: SeaBIOS, Debian's
// i386 kernel, and its initramfs, whose /init loads the virtio-pci,
// virtio-blk and ext4 modules in dependency order, mounts /dev/vda read-write
// and switch_roots into it, handing over to the disk's /vbw/init.sh. The
// lab's /vbw/init.sh simply execs busybox init, so the lab boots the same
// initramfs the boot test proves and has no second copy of its module list.
//
// The image is rebuilt only when its inputs change (a stamp of the layout
// version and the hashes of busybox and the initramfs): a rebuilt image has a new
// manifest hash, and the page's persistent overlay is tied to that hash, so
// needless rebuilds would throw away what the person wrote in the guest.
//
// Run: `npx tsx scripts/build-lab-image.ts`. `npm start` and `npm run dev`
// run it first with --warn-only: where it cannot provision (no root, no
// apt), it says why and the server starts anyway, and the VM page shows the
// same message.

import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ProvisionError, log, makeExt4Image, repoRoot } from '../e2e/linux/provision.ts';
import { provisionV86, type V86Assets } from '../e2e/v86/provision.ts';
import { LAB_ASSETS_FILE, LAB_CACHE_DIR, LAB_PACKED_DIR } from './build-lab-image.plugin.ts';

/** Bump when the image's layout changes (the image, and every overlay on it, is renewed). */
const LAB_LAYOUT = 2;
/** Disk size: busybox takes ~2 MiB; the rest is room for the person's files (all-zero chunks are not shipped). */
const IMAGE_MIB = 32;

const INITTAB = `::sysinit:/etc/init.d/rcS
ttyS0::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
`;

const RCS = `#!/bin/sh
# Applet links come with the image when the host could run the i386 busybox to list them; else they are made here, once.
[ -e /bin/ls ] || /bin/busybox --install -s
mount -t tmpfs tmpfs /tmp
hostname -F /etc/hostname
`;

const PROFILE = `export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
export TERM=xterm
export PS1='\\u@\\h:\\w\\$ '
cd /root
cat /etc/motd
`;

const MOTD = `
  Welcome to the virtio-blk-web lab.

  This Linux runs in your browser under v86. Its root disk, /dev/vda, is a
  chunked HTTP image under a copy-on-write overlay kept in your browser:
  what you write survives a reload. Try:

    echo hello > /root/note; sync     then reload the page and: cat /root/note
    dd if=/dev/vda of=/dev/null bs=1M  and watch the disk panel

`;

/**
 * Where busybox's applets go (`busybox --list-full`: bin/ls, usr/bin/awk...),
 * when this host can run the i386 binary (x86 Linux can); none otherwise, and
 * rcS links them on the first boot instead, at the cost of ~270 writes then.
 */
function appletPaths(busybox: string): string[] {
  const r = spawnSync(busybox, ['--list-full'], { encoding: 'utf8' });
  if (r.status !== 0) return [];
  return r.stdout.split('\n').filter((p) => /^(bin|sbin|usr\/bin|usr\/sbin)\/[^/]+$/.test(p));
}

/** The lab disk's files; /vbw/init.sh is the v86 initramfs's hand-off point. */
function stageRoot(dir: string, busybox: string): void {
  rmSync(dir, { recursive: true, force: true });
  for (const d of ['bin', 'sbin', 'etc/init.d', 'root', 'tmp', 'proc', 'sys', 'dev', 'mnt', 'usr/bin', 'usr/sbin', 'vbw']) {
    mkdirSync(join(dir, d), { recursive: true });
  }
  writeFileSync(join(dir, 'bin', 'busybox'), readFileSync(busybox));
  chmodSync(join(dir, 'bin', 'busybox'), 0o755);
  symlinkSync('busybox', join(dir, 'bin', 'sh'));
  symlinkSync('../bin/busybox', join(dir, 'sbin', 'init'));
  for (const applet of appletPaths(busybox)) {
    const depth = applet.split('/').length - 1;
    const link = join(dir, applet);
    if (!existsSync(link)) symlinkSync(`${'../'.repeat(depth)}bin/busybox`, link);
  }
  const files: Array<[string, string, number]> = [
    ['etc/inittab', INITTAB, 0o644],
    ['etc/init.d/rcS', RCS, 0o755],
    ['etc/profile', PROFILE, 0o644],
    ['etc/motd', MOTD, 0o644],
    ['etc/hostname', 'lab\n', 0o644],
    ['etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n', 0o644],
    ['etc/group', 'root:x:0:\n', 0o644],
    ['vbw/init.sh', '#!/bin/sh\nexec /sbin/init\n', 0o755],
  ];
  for (const [path, text, mode] of files) {
    writeFileSync(join(dir, path), text);
    chmodSync(join(dir, path), mode);
  }
}

/** What the image is built from, by content (the v86 provisioning may copy the same files again). */
function stampOf(assets: V86Assets): string {
  const file = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
  return JSON.stringify({ layout: LAB_LAYOUT, mib: IMAGE_MIB, busybox: file(assets.busybox), initrd: file(assets.initrd) });
}

export interface LabImage {
  /** The packed image's folder (manifest.json, chunks/). */
  packed: string;
  v86: V86Assets;
}

/** Provision the v86 guest and build and pack the lab's root image, unless it is up to date. */
export async function buildLabImage(): Promise<LabImage> {
  const v86 = provisionV86();
  mkdirSync(LAB_CACHE_DIR, { recursive: true });
  writeFileSync(LAB_ASSETS_FILE, JSON.stringify({ bios: v86.bios, kernel: v86.kernel, initrd: v86.initrd }));
  const stampFile = join(LAB_CACHE_DIR, 'stamp.json');
  const stamp = stampOf(v86);
  const manifest = join(LAB_PACKED_DIR, 'manifest.json');
  if (existsSync(manifest) && existsSync(stampFile) && readFileSync(stampFile, 'utf8') === stamp) {
    return { packed: LAB_PACKED_DIR, v86 };
  }
  log('building the lab image');
  const root = join(LAB_CACHE_DIR, 'root');
  const image = join(LAB_CACHE_DIR, 'lab.img');
  stageRoot(root, v86.busybox);
  makeExt4Image(image, IMAGE_MIB, root);
  rmSync(LAB_PACKED_DIR, { recursive: true, force: true });
  execFileSync(process.execPath, [join(repoRoot, 'bin', 'virtio-blk-web.mjs'), 'pack', image, LAB_PACKED_DIR, '--quiet'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  writeFileSync(stampFile, stamp);
  log(`lab image ready: ${LAB_PACKED_DIR}`);
  return { packed: LAB_PACKED_DIR, v86 };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const { packed } = await buildLabImage();
    process.stdout.write(`${packed}\n`);
  } catch (err) {
    process.stderr.write(`${err instanceof ProvisionError ? err.message : String((err as Error).stack ?? err)}\n`);
    if (process.argv.includes('--warn-only')) {
      process.stderr.write('[provision] the VM page (/) cannot boot until this succeeds; the server starts anyway\n');
    } else {
      process.exit(1);
    }
  }
}
