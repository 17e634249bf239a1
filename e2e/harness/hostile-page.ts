// The hostile-guest harness page: runs the cases of test/hostile/cases.ts
// against createDisk's worker host (the device in a module worker, guest RAM a
// SharedArrayBuffer), with this page as the guest's vCPU. Playwright calls
// `window.hostile.run(name)` and gets the case's verdict.

import { createDisk } from '../../src/host/browser/disk.ts';
import { findCase, hostileCases } from '../../test/hostile/cases.ts';
import { runCase, type CaseResult } from '../../test/hostile/runner.ts';
import { PciAsMmio } from '../../test/hostile/pci-view.ts';
import { Gate } from '../../test/hostile/shared-disk.ts';
import { DEFAULT_SERIAL, HOSTILE_RAM_BASE, type TargetFactory } from '../../test/hostile/target.ts';

declare global {
  interface Window {
    hostile?: { run(name: string): Promise<CaseResult>; names(): string[]; isolated: boolean };
  }
}

/** Errors that reached this page (from the disk, its worker, or a stray rejection) during the current case. */
let pageErrors: string[] = [];
window.addEventListener('error', (e) => pageErrors.push(`error: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => pageErrors.push(`unhandled rejection: ${String(e.reason)}`));

const workerTarget: TargetFactory = async (options) => {
  const ram = new Uint8Array(new SharedArrayBuffer(options.ramBytes ?? 256 << 10));
  const data = new Uint8Array(new SharedArrayBuffer(options.diskBytes ?? 256 << 10));
  const gate = options.gateOps ? new Gate() : null;
  const disk = await createDisk({
    memory: [{ guestAddress: HOSTILE_RAM_BASE, source: ram.buffer as SharedArrayBuffer }],
    backend: {
      kind: 'module',
      url: new URL('./hostile-backend.ts', import.meta.url).href,
      options: { data, readOnly: options.readOnly, gate: gate?.words ?? null, gateOps: options.gateOps },
    },
    device: { readOnly: options.readOnly, queueSize: options.queueSize, serial: options.serial ?? DEFAULT_SERIAL },
    host: 'worker',
    transport: options.transport,
  });
  pageErrors = [];
  return {
    host: 'worker',
    // A PCI disk: the raw guest's MMIO names carried onto the function (the PCI cases use `pci` itself).
    mmio: disk.pci ? new PciAsMmio(disk.pci) : disk.mmio,
    pci: disk.pci ?? undefined,
    ram,
    ramBase: HOSTILE_RAM_BASE,
    disk: data,
    gate,
    hangMs: options.hangMs ?? 5000,
    get interruptLevel() {
      return disk.interruptLevel;
    },
    // Two control round trips: the worker handles a message after a poll, and
    // polls again before the next, so the second reply comes after a poll
    // that began after every register write made before this call.
    async settle() {
      await disk.setRateLimit(null);
      await disk.setRateLimit(null);
    },
    get hostErrors() {
      return pageErrors;
    },
    async close() {
      gate?.open();
      await disk.close();
    },
  };
};

window.hostile = {
  isolated: crossOriginIsolated,
  names: () => hostileCases.filter((c) => !c.sameThreadOnly).map((c) => c.name),
  run: (name) => runCase(workerTarget, findCase(name)),
};
document.body.dataset.ready = 'true';
