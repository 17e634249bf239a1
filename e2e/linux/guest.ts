// The guest side of the boot tests: busybox sh scripts, run as /test.sh.
//
// Every script reports with `VBW <key> <value>` (parsed by qemu.ts) and stops
// at the first problem with `VBW-FAIL <why>`. Checksums the host must compare
// are reported, never judged only inside the guest.

/** Shared helpers: fail, report, checksum of stdin, what the disk looks like. */
const PRELUDE = String.raw`set -e
fail() { echo "VBW-FAIL $*"; exit 1; }
report() { echo "VBW $*"; }
sum256() { sha256sum | cut -d' ' -f1; }
summd5() { md5sum | cut -d' ' -f1; }
[ -b /dev/vda ] || fail "no /dev/vda"
report ro $(cat /sys/block/vda/ro)
report sectors $(cat /sys/block/vda/size)
report device $(readlink -f /sys/block/vda/device)
report features $(cat /sys/block/vda/device/features)
report serial "$(cat /sys/block/vda/serial)"
`;

/** Read the host's files and check them against the SHA256SUMS the host put there. */
const CHECK_HOST_FILES = String.raw`(cd /mnt/host && sha256sum -c SHA256SUMS) > /tmp/host-check || { cat /tmp/host-check; fail "host files do not match SHA256SUMS"; }
report host-files-ok $(grep -c ': OK$' /tmp/host-check)
report hello "$(cat /mnt/host/hello.txt)"
`;

/** MiB written to a scratch file and deleted before each fstrim: space the trim must give back to the host. */
export const SCRATCH_MIB = 8;

/**
 * Write a random blob (buffered, then a copy with O_DIRECT), its checksums
 * and a note; write and delete a scratch file (its blocks are allocated in
 * the image but free in the file system), sync, trim, and read everything
 * back with O_DIRECT in 1 MiB and 4 KiB blocks, from files and from the raw
 * disk after unmounting.
 */
function writeAndVerify(name: string, blobMiB: number, note: string): string {
  return String.raw`mkdir -p /mnt/guest
dd if=/dev/urandom of=/mnt/guest/${name}.bin bs=1M count=${blobMiB} 2>/dev/null
(cd /mnt/guest && sha256sum ${name}.bin > ${name}.sha256 && md5sum ${name}.bin > ${name}.md5)
dd if=/mnt/guest/${name}.bin of=/mnt/guest/${name}-direct.bin bs=1M oflag=direct 2>/dev/null || fail "O_DIRECT write"
echo "${note}" > /mnt/guest/${name}-note.txt
dd if=/dev/urandom of=/mnt/guest/scratch.bin bs=1M count=${SCRATCH_MIB} conv=fsync 2>/dev/null || fail "scratch write"
rm /mnt/guest/scratch.bin
sync
report trim "$(fstrim -v /mnt)"
echo 3 > /proc/sys/vm/drop_caches
report ${name}-sha256 $(sum256 < /mnt/guest/${name}.bin)
report ${name}-md5 $(summd5 < /mnt/guest/${name}.bin)
report ${name}-direct-1m-sha256 $(dd if=/mnt/guest/${name}.bin iflag=direct bs=1M 2>/dev/null | sum256)
report ${name}-direct-4k-sha256 $(dd if=/mnt/guest/${name}-direct.bin iflag=direct bs=4k 2>/dev/null | sum256)
`;
}

const UNMOUNT_AND_HASH_DISK = String.raw`umount /mnt
report disk-sha256 $(dd if=/dev/vda iflag=direct bs=1M 2>/dev/null | sum256)
`;

/**
 * One block written with O_DIRECT into the middle of a preallocated
 * (unwritten) extent: ext4 splits the extent, and the file must read as that
 * block between zeroes. (busybox has no BLKZEROOUT or `fallocate -z`, so
 * WRITE_ZEROES is not driven deterministically from the guest; ext4's lazy
 * inode-table init sends some when it runs. The device tests cover it.)
 */
const ZEROOUT = String.raw`fallocate -l 65536 /mnt/guest/zeroout.bin || fail "fallocate"
printf 'zeroout-marker' | dd of=/mnt/guest/zeroout.bin bs=4096 seek=2 conv=notrunc,sync oflag=direct 2>/dev/null || fail "write into an unwritten extent"
sync
report zeroout-sha256 $(dd if=/mnt/guest/zeroout.bin iflag=direct bs=4k 2>/dev/null | sum256)
`;

/** Boot 1: a fresh image the host made. */
export function firstBootScript(note: string): string {
  return (
    PRELUDE +
    String.raw`mount -t ext4 -o rw /dev/vda /mnt || fail "mount rw"
mkdir -p /mnt/guest
` +
    CHECK_HOST_FILES +
    ZEROOUT +
    writeAndVerify('blob1', 4, note) +
    UNMOUNT_AND_HASH_DISK
  );
}

/** Boot 2: what boot 1 wrote is still there; then write more and remove boot 1's blob. */
export function secondBootScript(previousNote: string, note: string): string {
  return (
    PRELUDE +
    String.raw`mount -t ext4 -o rw /dev/vda /mnt || fail "mount rw"
` +
    CHECK_HOST_FILES +
    String.raw`(cd /mnt/guest && sha256sum -c blob1.sha256 && md5sum -c blob1.md5) || fail "boot 1's blob changed"
[ "$(cat /mnt/guest/blob1-note.txt)" = "${previousNote}" ] || fail "boot 1's note changed"
report previous-blob1-sha256 $(dd if=/mnt/guest/blob1.bin iflag=direct bs=4k 2>/dev/null | sum256)
rm /mnt/guest/blob1.bin /mnt/guest/blob1-direct.bin
` +
    writeAndVerify('blob2', 3, note) +
    String.raw`umount /mnt
report pre-reprobe-disk-sha256 $(dd if=/dev/vda iflag=direct bs=1M 2>/dev/null | sum256)
# The driver writes the writeback field (CONFIG_WCE): QEMU forwards it with SET_CONFIG.
echo "write through" > /sys/block/vda/cache_type
report cache-type "$(cat /sys/block/vda/cache_type)"
# Unbind and re-probe the driver: the device is reset and its ring restarted
# (GET_VRING_BASE, then a new SET_VRING_*), and the disk reads the same.
rmmod virtio_blk || fail "rmmod virtio_blk"
insmod /modules/virtio_blk.ko || fail "insmod virtio_blk"
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
report reprobed-disk-sha256 $(dd if=/dev/vda iflag=direct bs=1M 2>/dev/null | sum256)
report reprobed-cache-type "$(cat /sys/block/vda/cache_type)"
# Writes after the re-probe, write-through as far as the guest knows (no FLUSH follows).
mount -t ext4 -o rw /dev/vda /mnt || fail "mount rw after re-probe"
dd if=/dev/urandom of=/mnt/guest/after-reprobe.bin bs=4k count=16 oflag=direct 2>/dev/null || fail "write after re-probe"
` +
    UNMOUNT_AND_HASH_DISK
  );
}

/** A read-only disk: reads work, every way of writing fails cleanly. */
export function readOnlyScript(): string {
  return (
    PRELUDE +
    String.raw`[ "$(cat /sys/block/vda/ro)" = 1 ] || fail "the disk is not read-only in the guest"
# busybox mount falls back to read-only when the device refuses rw: what counts is the result.
mount -t ext4 -o rw /dev/vda /mnt 2>/dev/null || true
if grep -q ' /mnt ext4 rw' /proc/mounts; then fail "mounted read-write"; fi
umount /mnt 2>/dev/null || true
mount -t ext4 -o ro,noload /dev/vda /mnt || fail "mount ro"
report mounted "$(grep ' /mnt ' /proc/mounts)"
` +
    CHECK_HOST_FILES +
    String.raw`(cd /mnt/guest && sha256sum -c blob2.sha256) || fail "blob2 unreadable"
if touch /mnt/guest/new 2>/dev/null; then fail "created a file on a read-only mount"; fi
umount /mnt
if dd if=/dev/zero of=/dev/vda bs=4k count=1 oflag=direct 2>/tmp/dd-err; then fail "a raw write succeeded"; fi
report raw-write-error "$(cat /tmp/dd-err | head -1)"
report disk-sha256 $(dd if=/dev/vda iflag=direct bs=1M 2>/dev/null | sum256)
`
  );
}

/**
 * A hosted image (read-only, fetched over HTTP by the host as the guest reads
 * it): mount it, check every file against the SHA256SUMS the host wrote into
 * it, and hash the whole disk raw.
 */
export function hostedImageScript(): string {
  return (
    PRELUDE +
    String.raw`[ "$(cat /sys/block/vda/ro)" = 1 ] || fail "the hosted disk is not read-only in the guest"
mount -t ext4 -o ro,noload /dev/vda /mnt || fail "mount ro"
report mounted "$(grep ' /mnt ' /proc/mounts)"
` +
    CHECK_HOST_FILES +
    String.raw`report tree-files $(find /mnt/host -type f | wc -l)
umount /mnt
report disk-sha256 $(dd if=/dev/vda iflag=direct bs=1M 2>/dev/null | sum256)
`
  );
}
