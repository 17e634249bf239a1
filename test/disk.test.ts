// createDisk in Node: no Worker here, so 'auto' picks the same-thread host;
// the Disk it returns drives like the worker host's (registers, interrupts,
// stats, resize with a config interrupt, storage errors, close).

import { pathToFileURL } from 'node:url';
import { describe, expect, test } from 'vitest';
import { MemoryBackend } from '../src/backends/memory.ts';
import { VirtioBlkDriver } from '../src/driver/driver.ts';
import { canUseWorkerHost, createDisk, waitForLine, type Disk } from '../src/host/browser/disk.ts';
import { pattern } from './contract/backend-contract.ts';

const RAM_BASE = 0x4000_0000;
const MiB = 1 << 20;

function guestRam() {
  const ram = new ArrayBuffer(16 * MiB);
  return { ram, memory: [{ guestAddress: RAM_BASE, source: ram }] };
}

async function boot(disk: Disk, memory: ReturnType<typeof guestRam>['memory']) {
  const { GuestMemory } = await import('../src/virtio/memory.ts');
  return VirtioBlkDriver.init({
    mmio: disk.mmio,
    memory: new GuestMemory(memory),
    arena: { addr: RAM_BASE, len: 8 * MiB },
    waitForInterrupt: () => disk.waitForInterrupt(),
  });
}

describe('createDisk (same-thread host)', () => {
  test('Node has no Worker: auto picks the same-thread host', async () => {
    expect(canUseWorkerHost()).toBe(false);
    const { memory } = guestRam();
    const disk = await createDisk({ memory, backend: { kind: 'memory', size: 2 * MiB } });
    expect(disk.host).toBe('same-thread');
    await disk.close();
  });

  test('a guest reads and writes through the Disk, and stats count it', async () => {
    const { memory } = guestRam();
    const disk = await createDisk({ memory, backend: { kind: 'memory', size: 2 * MiB }, device: { serial: 'node-disk' } });
    let rises = 0;
    disk.onInterrupt = () => void rises++;
    const driver = await boot(disk, memory);
    expect(await driver.getId()).toBe('node-disk');
    await driver.write(100, pattern(8192, 1));
    expect(await driver.read(100, 8192)).toEqual(pattern(8192, 1));
    await driver.flush();
    expect(disk.stats).toMatchObject({ reads: 1, writes: 1, flushes: 1, bytesRead: 8192, bytesWritten: 8192, ioErrors: 0 });
    expect(disk.stats.capacitySectors).toBe((2 * MiB) / 512);
    expect(rises).toBeGreaterThan(0);
    expect(disk.irq.array).toBe(disk.state);
    await disk.close();
  });

  test('resize raises a config interrupt the guest sees', async () => {
    const { memory } = guestRam();
    const disk = await createDisk({ memory, backend: new MemoryBackend(MiB), host: 'same-thread' });
    const driver = await boot(disk, memory);
    await disk.resize(3 * MiB);
    await waitForLine(disk.irq);
    driver.ackInterrupt();
    expect(driver.configChanges).toBe(1);
    expect(driver.capacitySectors).toBe((3 * MiB) / 512);
    expect(disk.stats.capacitySectors).toBe((3 * MiB) / 512);
    await disk.close();
  });

  test('storage errors reach onStorageError as typed errors while the device keeps serving', async () => {
    const { memory } = guestRam();
    const faulty = pathToFileURL(`${process.cwd()}/e2e/harness/faulty-backend.ts`).href;
    const disk = await createDisk({
      memory,
      backend: { kind: 'module', url: faulty, options: { size: 2 * MiB, failFrom: MiB, failTo: 2 * MiB } },
    });
    const errors: unknown[] = [];
    disk.onStorageError = (e) => errors.push(e);
    const driver = await boot(disk, memory);
    await expect(driver.write(MiB / 512, pattern(4096, 2))).rejects.toThrow(/status 1/);
    expect(errors).toEqual([expect.objectContaining({ name: 'StorageError', code: 'quota-exceeded' })]);
    await driver.write(0, pattern(4096, 3));
    expect(await driver.read(0, 4096)).toEqual(pattern(4096, 3));
    expect(disk.stats.ioErrors).toBe(1);
    await disk.close();
  });

  test('a rate limit throttles requests that still all complete, and can be lifted live', async () => {
    const { memory } = guestRam();
    const disk = await createDisk({
      memory,
      backend: { kind: 'memory', size: 2 * MiB },
      device: { rateLimit: { ops: { size: 5, refillTimeMs: 20 } } },
    });
    const driver = await boot(disk, memory);
    for (let i = 0; i < 20; i++) await driver.write(i * 8, pattern(4096, i));
    const throttled = disk.stats.throttled;
    expect(throttled).toBeGreaterThan(0);
    await disk.setRateLimit(null);
    for (let i = 0; i < 20; i++) expect(await driver.read(i * 8, 4096)).toEqual(pattern(4096, i));
    expect(disk.stats.throttled).toBe(throttled);
    await disk.close();
  });

  test('the worker host takes backend descriptions only, and needs SharedArrayBuffer guest RAM', async () => {
    const { memory } = guestRam();
    await expect(createDisk({ memory, backend: new MemoryBackend(MiB), host: 'worker' })).rejects.toThrow(TypeError);
    await expect(createDisk({ memory, backend: { kind: 'memory', size: MiB }, host: 'worker' })).rejects.toThrow(/shared/);
  });
});
