// The lab's PC: v86 with SeaBIOS, Debian's i386 kernel and the v86 boot
// test's initramfs (fetched from /lab-assets/v86/), 256 MiB of RAM, the
// serial console on ttyS0, and the lab disk as a virtio-blk PCI function
// through the project's v86 adapter (src/host/v86). No VGA, keyboard or
// mouse: the terminal beside the panel is the console.
//
// The adapter must run before SeaBIOS enumerates the bus, so v86 starts
// with autostart off, the disk is attached in `emulator-loaded`, and only
// then does the machine run.

import { V86 } from 'v86';
import v86WasmUrl from 'v86/build/v86.wasm?url';
import type { BlockBackend, StorageError } from '../backends/backend.ts';
import { attachVirtioBlk, type V86VirtioBlk } from '../host/v86/index.ts';
import type { DiskStats } from '../host/browser/types.ts';

/** What the page fetches before it starts the machine (served by scripts/build-lab-image.ts's plugin). */
export const LAB_BOOT_FILES = {
  bios: '/lab-assets/v86/bios',
  kernel: '/lab-assets/v86/kernel',
  initrd: '/lab-assets/v86/initrd',
} as const;

/** The command that provisions every lab asset; the page's errors name it. */
export const PROVISION_COMMAND = 'npx tsx scripts/build-lab-image.ts';

const RAM_BYTES = 256 * 1024 * 1024;
/** loglevel=2: the kernel's complaints about v86's firmware tables (no ACPI RSDP, no MP table) are not for the lab's visitors. */
const CMDLINE = 'console=ttyS0 rdinit=/init quiet loglevel=2';

export class LabAssetError extends Error {
  override readonly name = 'LabAssetError';
}

/** Fetch one boot file; a 404 names the command that provisions it. */
export async function fetchBootFile(url: string): Promise<ArrayBuffer> {
  let response: Response;
  try {
    response = await fetch(url);
  } catch (cause) {
    throw new LabAssetError(`cannot fetch ${url}: is the dev server running?`, { cause });
  }
  if (!response.ok) {
    throw new LabAssetError(`${url} answered ${response.status}: the lab's assets are not provisioned; run \`${PROVISION_COMMAND}\` (npm start runs it)`);
  }
  return response.arrayBuffer();
}

export interface LabMachineOptions {
  bios: ArrayBuffer;
  kernel: ArrayBuffer;
  initrd: ArrayBuffer;
  disk: BlockBackend;
  /** Each byte the guest writes to its first UART. */
  onSerialByte: (byte: number) => void;
  /** A request failed in storage (the guest got IOERR). */
  onStorageError: (error: StorageError) => void;
}

export class LabMachine {
  readonly #emulator: V86;
  readonly #disk: V86VirtioBlk;

  private constructor(emulator: V86, disk: V86VirtioBlk) {
    this.#emulator = emulator;
    this.#disk = disk;
  }

  static start(options: LabMachineOptions): Promise<LabMachine> {
    return new Promise((resolve, reject) => {
      const emulator = new V86({
        wasm_path: v86WasmUrl,
        memory_size: RAM_BYTES,
        // Headless: no screen, so the least VGA memory.
        vga_memory_size: 2 * 1024 * 1024,
        bios: { buffer: options.bios },
        bzimage: { buffer: options.kernel },
        initrd: { buffer: options.initrd },
        cmdline: CMDLINE,
        autostart: false,
        disable_keyboard: true,
        disable_mouse: true,
        disable_speaker: true,
      });
      emulator.add_listener('serial0-output-byte', options.onSerialByte);
      emulator.add_listener('emulator-loaded', () => {
        try {
          const disk = attachVirtioBlk(emulator, {
            backend: options.disk,
            disk: { serial: 'vm-lab-root', onStorageError: options.onStorageError },
          });
          void emulator.run();
          resolve(new LabMachine(emulator, disk));
        } catch (err) {
          void emulator.destroy();
          reject(err);
        }
      });
    });
  }

  /** Keys for the guest's console. */
  send(data: string): void {
    this.#emulator.serial0_send(data);
  }

  /** The device's counters now (the same names a browser Disk reports). */
  stats(): DiskStats {
    return this.#disk.disk.stats;
  }

  /** Hold the CPU (the device finishes what it has in flight; the guest sends nothing new). */
  async pause(): Promise<void> {
    await this.#emulator.stop();
  }

  async resume(): Promise<void> {
    await this.#emulator.run();
  }

  /** Stop the PC, then the device, then close the disk (its top's lock is released). */
  async stop(): Promise<void> {
    await this.#emulator.stop();
    await this.#disk.disk.close();
    await this.#emulator.destroy();
  }
}
