// Provisions what the Linux boot tests need, into .cache/linux (gitignored):
// host tools from Debian (QEMU aarch64, kmod, e2fsprogs), Debian 12's arm64
// cloud kernel and busybox-static:arm64 (apt-get download + dpkg-deb -x), and
// a busybox initramfs whose /init loads the virtio modules and runs /test.sh.
//
// Idempotent: a second run finds assets.json and the files it names and
// downloads nothing. As root, missing host packages are installed with
// apt-get; otherwise the error says exactly what to install.
//
// Run directly: `npx tsx e2e/linux/provision.ts`.

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpioNewc, type CpioEntry } from './cpio.ts';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const cacheDir = join(repoRoot, '.cache', 'linux');

/** Bump when the initramfs layout or /init changes: the cache is rebuilt. */
const LAYOUT_VERSION = 3;

/** Modules the guest loads, in any order (dependencies are resolved with modprobe). */
const GUEST_MODULES = ['virtio_mmio', 'virtio_pci', 'virtio_blk'];

/** Host command → the Debian package that provides it. */
const HOST_TOOLS: Record<string, string> = {
  'qemu-system-aarch64': 'qemu-system-arm',
  modprobe: 'kmod',
  depmod: 'kmod',
  mke2fs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  debugfs: 'e2fsprogs',
  'dpkg-deb': 'dpkg',
};

export interface LinuxAssets {
  kernel: string;
  initrd: string;
  kernelVersion: string;
  qemu: string;
}

/** Provisioning cannot finish; the message says what to do. */
export class ProvisionError extends Error {
  override readonly name = 'ProvisionError';
}

export function log(line: string): void {
  process.stderr.write(`[provision] ${line}\n`);
}

export function which(command: string): string | null {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin']);
  for (const d of dirs) {
    const p = join(d, command);
    if (d && existsSync(p)) return p;
  }
  return null;
}

export function run(command: string, args: string[], options: { cwd?: string } = {}): string {
  const r = spawnSync(command, args, { cwd: options.cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    throw new ProvisionError(`${command} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stderr}${r.stdout}`);
  }
  return r.stdout;
}

export const isRoot = (): boolean => process.getuid?.() === 0;

/** The ext4 tools alone, for tests that build or check an image without booting (the Chromium ext4 test). */
export const E2FS_TOOLS: Record<string, string> = { mke2fs: 'e2fsprogs', e2fsck: 'e2fsprogs', debugfs: 'e2fsprogs' };

/** Install missing host tools (as root) or explain how. */
export function ensureHostTools(tools: Record<string, string> = HOST_TOOLS): void {
  if (process.platform !== 'linux') throw new ProvisionError('the Linux boot tests need a Linux host');
  const missing = [...new Set(Object.entries(tools).filter(([cmd]) => !which(cmd)).map(([, pkg]) => pkg))];
  if (missing.length === 0) return;
  if (!isRoot() || !which('apt-get')) {
    throw new ProvisionError(
      `missing packages: ${missing.join(' ')}\ninstall them with: sudo apt-get install -y --no-install-recommends ${missing.join(' ')}`,
    );
  }
  log(`installing ${missing.join(' ')}`);
  const install = (): boolean =>
    spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...missing], {
      stdio: ['ignore', 2, 2],
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    }).status === 0;
  if (!install()) {
    run('apt-get', ['update']);
    if (!install()) throw new ProvisionError(`apt-get install ${missing.join(' ')} failed`);
  }
}

/** Make arm64 packages downloadable (dpkg --add-architecture arm64 && apt-get update). */
function ensureArm64Architecture(): void {
  const foreign = run('dpkg', ['--print-foreign-architectures']).split(/\s+/);
  const known = /Candidate: (?!\(none\))/.test(run('apt-cache', ['policy', 'busybox-static:arm64']));
  if (foreign.includes('arm64') && known) return;
  if (!isRoot()) {
    throw new ProvisionError(
      'arm64 packages are not available to apt\nrun: sudo dpkg --add-architecture arm64 && sudo apt-get update',
    );
  }
  log('adding the arm64 architecture');
  run('dpkg', ['--add-architecture', 'arm64']);
  run('apt-get', ['update']);
}

/** Debian's current arm64 cloud kernel package (unsigned: same image, no signing dependency). */
function kernelPackage(): string {
  const deps = run('apt-cache', ['depends', 'linux-image-cloud-arm64:arm64']);
  const match = /Depends: (linux-image-[\w.+-]+-cloud-arm64)/.exec(deps);
  if (!match) throw new ProvisionError(`cannot find Debian's arm64 cloud kernel:\n${deps}`);
  return `${match[1]}-unsigned:arm64`;
}

function downloadAndExtract(debDir: string, rootDir: string): void {
  ensureArm64Architecture();
  mkdirSync(debDir, { recursive: true });
  const packages = [kernelPackage(), 'busybox-static:arm64'];
  log(`downloading ${packages.join(' ')}`);
  run('apt-get', ['download', ...packages], { cwd: debDir });
  rmSync(rootDir, { recursive: true, force: true });
  for (const deb of readdirSync(debDir).filter((f) => f.endsWith('.deb'))) {
    run('dpkg-deb', ['-x', join(debDir, deb), rootDir]);
  }
}

/** Module files in load order (dependencies first), for the initramfs. */
function moduleLoadOrder(rootDir: string, version: string): string[] {
  run('depmod', ['-b', rootDir, version]);
  const order: string[] = [];
  for (const m of GUEST_MODULES) {
    const lines = run('modprobe', ['-d', rootDir, '-S', version, '--show-depends', m]).split('\n');
    for (const line of lines) {
      const path = /^insmod (\S+)/.exec(line.trim())?.[1];
      if (path && !order.includes(path)) order.push(path);
    }
  }
  if (order.length === 0) throw new ProvisionError('modprobe found no virtio modules');
  return order;
}

/** /init: mount the pseudo filesystems, load virtio, run /test.sh, power off. */
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /mnt /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do
  insmod /modules/$m || echo "VBW-INIT: insmod $m failed"
done
# The disk appears asynchronously after the driver probes.
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ -f /test.sh ]; then
  sh /test.sh
  echo "VBW-EXIT $?"
else
  echo "VBW-INIT: no /test.sh in the initramfs"
fi
sync
poweroff -f
`;

function buildInitramfs(rootDir: string, version: string, out: string): void {
  const modules = moduleLoadOrder(rootDir, version);
  const entries: CpioEntry[] = [
    { kind: 'dir', path: 'bin' },
    { kind: 'dir', path: 'sbin' },
    { kind: 'dir', path: 'modules' },
    { kind: 'file', path: 'bin/busybox', data: readFileSync(join(rootDir, 'bin', 'busybox')), mode: 0o755 },
    { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    { kind: 'file', path: 'init', data: new TextEncoder().encode(INIT), mode: 0o755 },
  ];
  const names = modules.map((p) => p.split('/').pop()!);
  modules.forEach((p, i) => entries.push({ kind: 'file', path: `modules/${names[i]}`, data: readFileSync(p) }));
  entries.push({ kind: 'file', path: 'modules/order', data: new TextEncoder().encode(names.join('\n') + '\n') });
  writeFileSync(out, cpioNewc(entries));
}

/** Everything the boot tests need; downloads only when the cache lacks it. */
export function provision(): LinuxAssets {
  ensureHostTools();
  const manifest = join(cacheDir, 'assets.json');
  if (existsSync(manifest)) {
    const assets = JSON.parse(readFileSync(manifest, 'utf8')) as LinuxAssets & { layout?: number };
    if (assets.layout === LAYOUT_VERSION && existsSync(assets.kernel) && existsSync(assets.initrd)) return assets;
  }
  mkdirSync(cacheDir, { recursive: true });
  const debDir = join(cacheDir, 'debs');
  const rootDir = join(cacheDir, 'root');
  if (!existsSync(join(rootDir, 'bin', 'busybox')) || !existsSync(join(rootDir, 'boot'))) {
    rmSync(debDir, { recursive: true, force: true });
    downloadAndExtract(debDir, rootDir);
  }
  const kernelFile = readdirSync(join(rootDir, 'boot')).find((f) => f.startsWith('vmlinuz-'));
  if (!kernelFile) throw new ProvisionError(`no vmlinuz in ${join(rootDir, 'boot')}`);
  const kernelVersion = kernelFile.slice('vmlinuz-'.length);
  const initrd = join(cacheDir, 'initramfs.cpio');
  buildInitramfs(rootDir, kernelVersion, `${initrd}.tmp`);
  renameSync(`${initrd}.tmp`, initrd);
  const assets: LinuxAssets & { layout: number } = {
    kernel: join(rootDir, 'boot', kernelFile),
    initrd,
    kernelVersion,
    qemu: which('qemu-system-aarch64')!,
    layout: LAYOUT_VERSION,
  };
  writeFileSync(manifest, JSON.stringify(assets, null, 2));
  log(`ready: kernel ${kernelVersion}, initramfs ${initrd}`);
  return assets;
}

/** An ext4 image of `sizeMiB` holding the files under `sourceDir` (mke2fs -d). */
export function makeExt4Image(path: string, sizeMiB: number, sourceDir: string): void {
  rmSync(path, { force: true });
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'vbw', '-d', sourceDir, path, `${sizeMiB}M`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** `e2fsck -fn`: null when the filesystem is clean, else its report. */
export function fsckProblems(path: string): string | null {
  const r = spawnSync('e2fsck', ['-fn', path], { encoding: 'utf8' });
  return r.status === 0 ? null : `e2fsck -fn exited ${r.status}:\n${r.stdout}${r.stderr}`;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const assets = provision();
    process.stdout.write(`${JSON.stringify(assets, null, 2)}\n`);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  }
}
