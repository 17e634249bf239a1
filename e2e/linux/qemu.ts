// Boots Debian's arm64 kernel under QEMU TCG with a guest script, and reads
// back what the script reported.
//
// The guest script runs as /test.sh from an initramfs (the cached base plus a
// tiny archive holding the script, appended). It reports with lines
// `VBW <key> <value>` and fails with `VBW-FAIL <why>`; /init prints
// `VBW-EXIT <status>` and powers off. A boot fails loudly, with the whole
// console log, on a timeout, a non-zero exit, a VBW-FAIL line or any kernel
// error line.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpioNewc } from './cpio.ts';
import type { LinuxAssets } from './provision.ts';

/** How the disk reaches the guest. */
export type Disk =
  /** The project's device over vhost-user, on modern virtio-mmio. */
  | { kind: 'vhost-user-mmio'; socket: string }
  /** The project's device over vhost-user, on virtio-pci. */
  | { kind: 'vhost-user-pci'; socket: string }
  /** QEMU's own virtio-blk (virtio-mmio, modern), for comparison. */
  | { kind: 'qemu-builtin'; image: string; readOnly?: boolean };

export interface BootOptions {
  assets: LinuxAssets;
  disk: Disk;
  /** The guest's /test.sh (busybox sh). */
  script: string;
  timeoutMs?: number;
  /** Guest RAM in MiB (default 512). */
  memoryMiB?: number;
  /** Each console line as it arrives, with the host's clock (performance.now(), ms). */
  onLine?: (line: string, atMs: number) => void;
}

export interface BootResult {
  console: string;
  /** `VBW key value` lines; a repeated key keeps the last value. */
  values: Map<string, string>;
  exitStatus: number;
}

/** Kernel messages that mean the disk path misbehaved. */
const KERNEL_ERRORS = [
  /I\/O error/,
  /blk_update_request/,
  /Oops/,
  /\bBUG\b/,
  /Call trace/i,
  /Kernel panic/,
  /EXT4-fs error/,
  /EXT4-fs warning/,
  /virtio_blk.*(error|failed)/i,
  /hung_task|blocked for more than/,
];

export class GuestFailure extends Error {
  override readonly name = 'GuestFailure';
  constructor(
    why: string,
    readonly console: string,
  ) {
    super(`${why}\n----- guest console -----\n${console}\n----- end of guest console -----`);
  }
}

function qemuArgs(options: BootOptions, initrd: string): string[] {
  const memoryMiB = options.memoryMiB ?? 512;
  const args = [
    '-M',
    'virt,memory-backend=mem',
    '-cpu',
    'cortex-a57',
    '-m',
    `${memoryMiB}`,
    '-smp',
    '1',
    '-nographic',
    '-no-reboot',
    '-nic',
    'none',
    '-object',
    // share=on: vhost-user maps the same memory in the back-end process.
    `memory-backend-memfd,id=mem,size=${memoryMiB}M,share=on`,
    '-global',
    // QEMU 7.2 makes virtio-mmio legacy (version 1) unless told otherwise.
    'virtio-mmio.force-legacy=false',
    '-kernel',
    options.assets.kernel,
    '-initrd',
    initrd,
    '-append',
    'console=ttyAMA0 panic=-1 loglevel=4',
  ];
  const d = options.disk;
  if (d.kind === 'qemu-builtin') {
    const ro = d.readOnly ? ',readonly=on' : '';
    args.push('-drive', `file=${d.image},if=none,format=raw,id=d0,cache=writeback,aio=threads${ro}`);
    args.push('-device', 'virtio-blk-device,drive=d0');
  } else {
    args.push('-chardev', `socket,id=c0,path=${d.socket}`);
    const device = d.kind === 'vhost-user-mmio' ? 'vhost-user-blk' : 'vhost-user-blk-pci';
    args.push('-device', `${device},chardev=c0,num-queues=1`);
  }
  return args;
}

/** Boot, run the script, power off; throws GuestFailure on anything suspicious. */
export async function boot(options: BootOptions): Promise<BootResult> {
  const work = mkdtempSync(join(tmpdir(), 'vbw-boot-'));
  try {
    const initrd = join(work, 'initrd.cpio');
    const extra = cpioNewc([{ kind: 'file', path: 'test.sh', data: new TextEncoder().encode(options.script) }]);
    writeFileSync(initrd, Buffer.concat([readFileSync(options.assets.initrd), extra]));
    const output = await runQemu(
      options.assets.qemu,
      qemuArgs(options, initrd),
      options.timeoutMs ?? 240_000,
      options.onLine,
    );
    return check(output);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function runQemu(
  qemu: string,
  args: string[],
  timeoutMs: number,
  onLine?: (line: string, atMs: number) => void,
): Promise<{ console: string; timedOut: boolean; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let console = '';
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      console += s;
      if (!onLine) return;
      const now = performance.now();
      const lines = (partial + s).split('\n');
      partial = lines.pop()!;
      for (const line of lines) onLine(line.replace(/\r$/, ''), now);
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => (console += s));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ console: console.replace(/\r/g, ''), timedOut, code });
    });
  });
}

function check(output: { console: string; timedOut: boolean; code: number | null }): BootResult {
  const { console } = output;
  if (output.timedOut) throw new GuestFailure('the guest did not power off in time', console);
  const errors = console.split('\n').filter((line) => KERNEL_ERRORS.some((re) => re.test(line)));
  if (errors.length) throw new GuestFailure(`kernel errors:\n${errors.join('\n')}`, console);
  const failures = console.split('\n').filter((line) => line.startsWith('VBW-FAIL'));
  if (failures.length) throw new GuestFailure(`the guest script failed:\n${failures.join('\n')}`, console);
  const exit = /^VBW-EXIT (\d+)$/m.exec(console);
  if (!exit) throw new GuestFailure(`the guest script did not finish (QEMU exited ${output.code})`, console);
  const exitStatus = Number(exit[1]);
  if (exitStatus !== 0) throw new GuestFailure(`the guest script exited ${exitStatus}`, console);
  if (output.code !== 0) throw new GuestFailure(`QEMU exited ${output.code}`, console);
  const values = new Map<string, string>();
  for (const m of console.matchAll(/^VBW (\S+) ?(.*)$/gm)) values.set(m[1]!, m[2]!.trim());
  return { console, values, exitStatus };
}

/** The value the guest reported for `key`, or a GuestFailure naming it. */
export function reported(result: BootResult, key: string): string {
  const value = result.values.get(key);
  if (value === undefined) throw new GuestFailure(`the guest did not report "${key}"`, result.console);
  return value;
}
