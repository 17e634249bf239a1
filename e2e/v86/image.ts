// The root filesystems the v86 boot test and benchmark give the guest: an
// ext4 image built on the host with `mke2fs -d`, holding the guest's static
// busybox (so every program after /init is read from the disk under test),
// the guest script /vbw/init.sh, and known files with their checksums for the
// guest to verify. Images go to .cache/v86/images/, which the dev server
// serves to the harness page as /.cache/v86/images/NAME.
//
// The guest script is one program for every test; the kernel command line
// picks what it does (`vbw.test=write|persist|ro|boot|dd`). Every line the
// host waits for starts with VBW-: `VBW-OK name`, `VBW-BAD name detail`, and
// `VBW-END` last.

import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, copyFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeExt4Image } from '../linux/provision.ts';
import { v86CacheDir } from './provision.ts';

export const imagesDir = join(v86CacheDir, 'images');

/** Applets the guest script calls (symlinked to /bin/busybox on the image). */
const APPLETS = [
  'sh', 'cat', 'echo', 'mount', 'umount', 'sync', 'fstrim', 'dd', 'sha256sum', 'mkdir', 'cut', 'sed', 'grep',
  'ls', 'rm', 'touch', 'poweroff', 'sleep', 'head', 'tail', 'dmesg', 'wc', 'tr', 'date', 'stat', 'cmp',
];

/** Size of the random blob the guest writes, in MiB (multi-MiB, as the issue asks). */
export const GUEST_BLOB_MIB = 8;

const GUEST_SCRIPT = `#!/bin/sh
export PATH=/bin
echo "VBW-SHELL uptime=$(cut -d' ' -f1 /proc/uptime)"
mode=boot
disk=vda
for word in $(cat /proc/cmdline); do
  case "$word" in
    vbw.test=*) mode="\${word#vbw.test=}" ;;
    vbw.disk=*) disk="\${word#vbw.disk=}" ;;
  esac
done
ok() { echo "VBW-OK $1"; }
bad() { echo "VBW-BAD $*"; }
check() { if "$@" >/tmp/out 2>&1; then ok "$name"; else bad "$name: $(head -c 300 /tmp/out | tr '\\n' ' ')"; fi; }
mount -t tmpfs tmpfs /tmp
cd /vbw/known && name=host-files check sha256sum -c SHA256SUMS
cd /
case "$mode" in
  write)
    mkdir -p /vbw/guest
    dd if=/dev/urandom of=/vbw/guest/blob.bin bs=1M count=${GUEST_BLOB_MIB} 2>/dev/null
    echo "written by the guest" > /vbw/guest/note.txt
    (cd /vbw/guest && sha256sum blob.bin note.txt > SHA256SUMS)
    echo "VBW-SUM $(cut -d' ' -f1 /vbw/guest/SHA256SUMS | head -1)"
    sync
    if [ "$(cat /sys/block/$disk/queue/discard_max_bytes)" = 0 ]; then
      echo "VBW-NOTE no discard on $disk: fstrim skipped"
    else
      name=fstrim check fstrim -v /
    fi
    echo 3 > /proc/sys/vm/drop_caches
    direct=$(dd if=/vbw/guest/blob.bin bs=1M iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    if grep -q "^$direct  blob.bin" /vbw/guest/SHA256SUMS; then ok direct-read; else bad direct-read "$direct"; fi
    rawdirect=$(dd if=/dev/$disk bs=4096 count=16 iflag=direct 2>/dev/null | wc -c)
    if [ "$rawdirect" = 65536 ]; then ok direct-device-read; else bad direct-device-read "$rawdirect bytes"; fi
    name=remount-ro check mount -o remount,ro /
    ;;
  persist)
    cd /vbw/guest && name=guest-files check sha256sum -c SHA256SUMS
    cd /
    ;;
  ro)
    if [ "$(cat /sys/block/$disk/ro)" = 1 ]; then ok sysfs-ro; else bad sysfs-ro "$(cat /sys/block/$disk/ro)"; fi
    if mount -o remount,rw / 2>/tmp/out; then bad remount-rw-refused; else ok remount-rw-refused; fi
    if touch /vbw/new 2>/tmp/out; then bad file-write-refused; else ok file-write-refused; fi
    if dd if=/dev/zero of=/dev/$disk bs=512 count=1 conv=fsync 2>/tmp/out; then bad device-write-refused; else ok device-write-refused; fi
    ;;
  dd)
    echo "VBW-DD-START"
    dd if=/dev/$disk of=/dev/null bs=1M count=32 iflag=direct 2>/tmp/out
    echo "VBW-DD-END $(tail -1 /tmp/out)"
    ;;
esac
sync
echo "VBW-END"
poweroff -f
`;

export interface RootImage {
  /** Path of the image on the host. */
  path: string;
  /** URL path the harness page fetches it from. */
  url: string;
  sizeBytes: number;
}

/** Build .cache/v86/images/NAME.img: busybox, /vbw/init.sh and known files, `sizeMiB` large. */
export function buildRootImage(name: string, busybox: string, sizeMiB = 64): RootImage {
  const root = mkdtempSync(join(tmpdir(), 'vbw-v86-root-'));
  try {
    for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'vbw/known']) mkdirSync(join(root, d), { recursive: true });
    copyFileSync(busybox, join(root, 'bin', 'busybox'));
    chmodSync(join(root, 'bin', 'busybox'), 0o755);
    for (const applet of APPLETS) symlinkSync('busybox', join(root, 'bin', applet));
    writeFileSync(join(root, 'vbw', 'init.sh'), GUEST_SCRIPT, { mode: 0o755 });
    const known: Record<string, Uint8Array> = {
      'hello.txt': new TextEncoder().encode('hello from the host\n'),
      'random.bin': randomBytes(3 << 20),
    };
    const sums: string[] = [];
    for (const [file, data] of Object.entries(known)) {
      writeFileSync(join(root, 'vbw', 'known', file), data);
      sums.push(`${createHash('sha256').update(data).digest('hex')}  ${file}`);
    }
    writeFileSync(join(root, 'vbw', 'known', 'SHA256SUMS'), sums.join('\n') + '\n');
    mkdirSync(imagesDir, { recursive: true });
    const path = join(imagesDir, `${name}.img`);
    makeExt4Image(path, sizeMiB, root);
    return { path, url: `/.cache/v86/images/${name}.img`, sizeBytes: sizeMiB << 20 };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
