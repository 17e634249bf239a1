// The virtio-pci harness page: a disk made with createDisk({transport: 'pci'})
// on either host, and this page as the vCPU: the project's driver over
// PciTransport, woken only by the function's INTx line (`onInterruptLevel`),
// as an emulator would wire it. Playwright calls `window.pciHarness.run(args)`
// and gets back what the guest saw.

import { BlkRequestType } from '../../src/block/constants.ts';
import { VirtioBlkDriver } from '../../src/driver/driver.ts';
import { PciTransport } from '../../src/driver/pci-transport.ts';
import { createDisk } from '../../src/host/browser/disk.ts';
import type { BackendSpec } from '../../src/host/browser/worker-protocol.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';
import { pattern } from '../../test/support/rig.ts';

export interface PciRunArgs {
  host: 'worker' | 'same-thread';
  backend: BackendSpec;
  /** Same-thread: run the device in a microtask after each doorbell, not inside the register write. */
  deferDoorbell?: boolean;
  barSize?: number;
}

export interface PciRunResult {
  host: string;
  isolated: boolean;
  barSize: number;
  id: string;
  dataMatches: boolean;
  zeroesMatch: boolean;
  discardStatus: number;
  rises: number;
  falls: number;
  /**
   * The line was low whenever the guest had just read the ISR (same-thread; on the worker host the
   * device may set a new cause right after the read, so it is not asserted there).
   */
  lowAfterIsrRead: boolean;
  capacityBefore: number;
  capacityAfter: number;
  configChanges: number;
  afterResetMatches: boolean;
  stats: { reads: number; writes: number; flushes: number; ioErrors: number };
}

declare global {
  interface Window {
    pciHarness?: { run(args: PciRunArgs): Promise<PciRunResult> };
  }
}

const RAM_BASE = 0x1000_0000;
const MiB = 1 << 20;

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

async function run(args: PciRunArgs): Promise<PciRunResult> {
  const ram = new WebAssembly.Memory({ initial: 512, maximum: 512, shared: crossOriginIsolated });
  const regions = [{ guestAddress: RAM_BASE, source: ram }];
  const disk = await createDisk({
    memory: regions,
    backend: args.backend,
    host: args.host,
    transport: 'pci',
    pci: { barSize: args.barSize },
    scheduleDoorbell: args.deferDoorbell ? (go) => queueMicrotask(go) : undefined,
  });
  const fn = disk.pci!;
  let rises = 0;
  let falls = 0;
  let wake: (() => void) | null = null;
  fn.onInterruptLevel = (asserted) => {
    if (!asserted) {
      falls++;
      return;
    }
    rises++;
    wake?.();
    wake = null;
  };
  let lowAfterIsrRead = true;
  const transport = new PciTransport(fn);
  const takeInterrupt = transport.takeInterrupt.bind(transport);
  transport.takeInterrupt = () => {
    const bits = takeInterrupt();
    if (fn.interruptLevel) lowAfterIsrRead = false;
    return bits;
  };
  const boot = () =>
    VirtioBlkDriver.init({
      transport,
      memory: new GuestMemory(regions),
      arena: { addr: RAM_BASE + MiB, len: 16 * MiB },
      // The guest sleeps until the line rises, as a vCPU halted in its idle loop.
      waitForInterrupt: () => (fn.interruptLevel ? Promise.resolve() : new Promise<void>((resolve) => (wake = resolve))),
    });
  try {
    let driver = await boot();
    const id = await driver.getId();
    const data = pattern(MiB, 7);
    await driver.write(64, data);
    await driver.flush();
    const dataMatches = equal(await driver.read(64, MiB), data);
    await driver.discardOrZero(BlkRequestType.WriteZeroes, [{ sector: 64, sectors: 16 }]);
    const zeroesMatch = equal(await driver.read(64, 8192), new Uint8Array(8192));
    const discardStatus = await driver.discardOrZero(BlkRequestType.Discard, [{ sector: 4096, sectors: 8 }]);
    const capacityBefore = driver.capacitySectors;
    let configChanges = 0;
    await disk.resize(capacityBefore * 512 + 2 * MiB);
    while (configChanges === 0) {
      await (fn.interruptLevel ? Promise.resolve() : new Promise<void>((resolve) => (wake = resolve)));
      if (driver.ackInterrupt() & 2) configChanges++;
    }
    const capacityAfter = driver.capacitySectors;
    await transport.reset();
    driver = await boot();
    const afterResetMatches = equal(await driver.read(64 + 16, MiB - 8192), data.subarray(8192));
    // On the worker host the device may set the ISR just after the driver's last read of it (it reaped
    // the completion first): once the device is idle (a control round trip follows its last poll), one
    // more ISR read leaves the line down, so every rise has had its fall.
    await disk.flush();
    await new Promise((resolve) => setTimeout(resolve, 0));
    driver.ackInterrupt();
    const { reads, writes, flushes, ioErrors } = disk.stats;
    return {
      host: disk.host,
      isolated: crossOriginIsolated,
      barSize: fn.barSize,
      id,
      dataMatches,
      zeroesMatch,
      discardStatus,
      rises,
      falls,
      lowAfterIsrRead,
      capacityBefore,
      capacityAfter,
      configChanges,
      afterResetMatches,
      stats: { reads, writes, flushes, ioErrors },
    };
  } finally {
    await disk.close();
  }
}

window.pciHarness = { run };
document.body.dataset.ready = 'true';
