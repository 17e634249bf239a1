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

/**
 * Make packages of a foreign architecture downloadable (`dpkg
 * --add-architecture ARCH && apt-get update`): as root it does so, otherwise
 * the error says what to run. busybox-static:ARCH is the probe.
 */
function ensureForeignArchitecture(arch: string): void {
  const probe = `busybox-static:${arch}`;
  const foreign = run('dpkg', ['--print-foreign-architectures']).split(/\s+/);
  const known = (): boolean => /Candidate: (?!\(none\))/.test(run('apt-cache', ['policy', probe]));
  if (foreign.includes(arch) && known()) return;
  if (!isRoot()) {
    throw new ProvisionError(`${arch} packages are not available to apt\nrun: sudo dpkg --add-architecture ${arch} && sudo apt-get update`);
  }
  log(`adding the ${arch} architecture`);
  if (!foreign.includes(arch)) run('dpkg', ['--add-architecture', arch]);
  run('apt-get', ['update']);
  if (!known()) throw new ProvisionError(`apt-get update did not make ${probe} available`);
}

/** Debian's current kernel of `flavour` for `arch` (the -unsigned package: same image, no signing dependency). */
export function unsignedKernelPackage(arch: string, flavour: string): string {
  const meta = `linux-image-${flavour}:${arch}`;
  const deps = run('apt-cache', ['depends', meta]);
  const match = new RegExp(`Depends: (linux-image-[\\w.+-]+-${flavour})(?::${arch})?\\s`).exec(deps);
  if (!match) throw new ProvisionError(`cannot find Debian's ${arch} ${flavour} kernel (${meta}):\n${deps}`);
  return `${match[1]}-unsigned:${arch}`;
}

/**
 * Debian packages of `arch` unpacked with `dpkg-deb -x` into `<dir>/root`
 * (nothing is installed on the host). They are downloaded with `apt-get
 * download` into `<dir>/debs` only when the root lacks one of `required`
 * (paths relative to it). Returns the root.
 */
export function unpackedDebs(dir: string, arch: string, packages: () => string[], required: string[]): string {
  const debDir = join(dir, 'debs');
  const rootDir = join(dir, 'root');
  if (required.every((p) => existsSync(join(rootDir, p)))) return rootDir;
  ensureForeignArchitecture(arch);
  rmSync(debDir, { recursive: true, force: true });
  mkdirSync(debDir, { recursive: true });
  const names = packages();
  log(`downloading ${names.join(' ')}`);
  run('apt-get', ['download', ...names], { cwd: debDir });
  rmSync(rootDir, { recursive: true, force: true });
  for (const deb of readdirSync(debDir).filter((f) => f.endsWith('.deb'))) {
    run('dpkg-deb', ['-x', join(debDir, deb), rootDir]);
  }
  return rootDir;
}

/** The kernel image an unpacked kernel package left in `<root>/boot`, and its version. */
export function unpackedKernel(rootDir: string): { path: string; version: string } {
  const file = readdirSync(join(rootDir, 'boot')).find((f) => f.startsWith('vmlinuz-'));
  if (!file) throw new ProvisionError(`no vmlinuz in ${join(rootDir, 'boot')}`);
  return { path: join(rootDir, 'boot', file), version: file.slice('vmlinuz-'.length) };
}

/**
 * Module files for `modules` in load order, dependencies first, from
 * `modprobe --show-depends` against an unpacked kernel (run depmod first);
 * `exclude` drops paths (modules the guest cannot or need not load).
 */
export function moduleLoadOrder(rootDir: string, version: string, modules: string[], exclude: (path: string) => boolean = () => false): string[] {
  const order: string[] = [];
  for (const m of modules) {
    const lines = run('modprobe', ['-d', rootDir, '-S', version, '--show-depends', m]).split('\n');
    for (const line of lines) {
      const path = /^insmod (\S+)/.exec(line.trim())?.[1];
      if (path && !order.includes(path) && !exclude(path)) order.push(path);
    }
  }
  if (order.length === 0) throw new ProvisionError(`modprobe found none of ${modules.join(' ')}`);
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
  run('depmod', ['-b', rootDir, version]);
  const modules = moduleLoadOrder(rootDir, version, GUEST_MODULES);
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
  const packages = (): string[] => [unsignedKernelPackage('arm64', 'cloud-arm64'), 'busybox-static:arm64'];
  const rootDir = unpackedDebs(cacheDir, 'arm64', packages, ['bin/busybox', 'boot']);
  const { path: kernel, version: kernelVersion } = unpackedKernel(rootDir);
  const initrd = join(cacheDir, 'initramfs.cpio');
  buildInitramfs(rootDir, kernelVersion, `${initrd}.tmp`);
  renameSync(`${initrd}.tmp`, initrd);
  const assets: LinuxAssets & { layout: number } = {
    kernel,
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
