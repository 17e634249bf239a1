// A test rig: guest RAM at the aarch64 `virt` base, a backend, the device on
// the same thread, and the Linux-style driver, wired as an emulator would.

import type { BlockBackend } from '../../src/backends/backend.ts';
import { MemoryBackend } from '../../src/backends/memory.ts';
import { VirtioBlkDriver, arenaBytes, type DriverOptions } from '../../src/driver/driver.ts';
import { createSameThreadDisk, type SameThreadDisk, type SameThreadDiskOptions } from '../../src/host/browser/same-thread.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';

export const RAM_BASE = 0x4000_0000;

export interface Rig {
  ram: ArrayBuffer | SharedArrayBuffer;
  memory: GuestMemory;
  backend: BlockBackend;
  disk: SameThreadDisk;
  driver: VirtioBlkDriver;
}

export interface RigOptions extends Partial<Omit<SameThreadDiskOptions, 'memory' | 'backend'>> {
  ramBytes?: number;
  diskBytes?: number;
  backend?: BlockBackend;
  driver?: Partial<Omit<DriverOptions, 'mmio' | 'memory' | 'arena'>>;
  shared?: boolean;
}

export async function makeRig(options: RigOptions = {}): Promise<Rig> {
  const ramBytes = options.ramBytes ?? 16 << 20;
  const ram = options.shared ? new SharedArrayBuffer(ramBytes) : new ArrayBuffer(ramBytes);
  const memory = new GuestMemory([{ guestAddress: RAM_BASE, source: ram }]);
  const backend = options.backend ?? new MemoryBackend(options.diskBytes ?? 4 << 20);
  const { ramBytes: _r, diskBytes: _d, backend: _b, driver: driverOptions, shared: _s, ...deviceOptions } = options;
  const disk = createSameThreadDisk({ memory, backend, ...deviceOptions });
  const driver = await VirtioBlkDriver.init({
    mmio: disk.mmio,
    memory,
    // Leave the first MiB of RAM to tests that hand-build rings.
    arena: { addr: RAM_BASE + (1 << 20), len: ramBytes - (1 << 20) },
    waitForInterrupt: () => disk.waitForInterrupt(),
    ...driverOptions,
  });
  return { ram, memory, backend, disk, driver };
}

export { arenaBytes };

/** Deterministic bytes. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
