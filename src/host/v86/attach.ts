// `attachVirtioBlk`: put a virtio-blk disk (any backend) on a v86 PC's PCI
// bus as a modern virtio-pci function.
//
// Where it runs: v86's guest RAM is its wasm module's own, unshared memory,
// so the device runs on v86's thread (the page, or the dedicated worker v86
// runs in: OPFS sync access handles need the latter, docs/v86.md).
//
// Wiring, all through the hooks `v86Internals` checks:
// - PCI: the function's configuration space image, with BAR0 preset to a
//   fixed address, is registered at `slot` before SeaBIOS enumerates the bus
//   (call this in `emulator-loaded`, with `autostart: false`, then
//   `emulator.run()`). v86 keeps that image itself and answers BAR sizing
//   from `pci_bars`, but it ignores a guest moving a memory BAR, so the BAR
//   never moves from `barAddress`.
// - BAR0: `mmap_register` over [barAddress, barAddress + barSize), a
//   multiple of v86's 128 KiB mapping unit. v86 has 8- and 32-bit handlers
//   only: a 16-bit access arrives as two 8-bit ones, low byte first
//   (bar-access.ts puts them back together).
// - INTx: the function's line level drives `pci.raise_irq/lower_irq`.
// - Timing: a register access only rings the doorbell; the device runs the
//   queue in a microtask after the guest's access has returned, and raises
//   the line from there. Running it (and raising the line) inside the
//   access hung 3 of 6 Linux boots on this machine (the guest never read the
//   ISR again); deferred, 0 of 7 (DESIGN.md).
// - Guest RAM and the JIT: guest-ram.ts.
// - When the guest stops making progress: diagnosis.ts (`diagnose`, `kick`).

import type { BlockBackend } from '../../backends/backend.ts';
import { createSameThreadDisk, type SameThreadDisk, type SameThreadDiskOptions } from '../browser/same-thread.ts';
import { DiskTransport } from '../browser/types.ts';
import { BarAccess } from './bar-access.ts';
import { LineLog, PendingCalls, diagnose, readV86CpuState, type V86DiskDiagnosis } from './diagnosis.ts';
import { JitDirtyingMemory, jitDirtyingBackend } from './guest-ram.ts';
import { V86HookError, v86Internals, type V86Like } from './hooks.ts';
import { BarRegion } from '../../virtio/pci/layout.ts';
import { InterruptBit, W } from '../../virtio/transport/layout.ts';

/** v86 maps memory in 128 KiB units (`mmap_register` asserts it). */
export const V86_MMAP_UNIT = 0x2_0000;
/** Default BAR0 address: above RAM, below the IO-APIC and BIOS, free in v86's map. */
export const V86_DEFAULT_BAR_ADDRESS = 0xfe00_0000;
/** Default PCI slot: free in v86 0.5.x (its ne2k sits at 5 and shares PIRQA with it). */
export const V86_DEFAULT_SLOT = 0x0d;

/** What the same-thread host takes, less what the adapter decides (memory, transport, doorbell scheduling). */
export type V86DiskOptions = Omit<SameThreadDiskOptions, 'memory' | 'backend' | 'transport' | 'pci' | 'scheduleDoorbell' | 'sharedState'>;

export interface AttachVirtioBlkOptions {
  /** The disk's storage: any `BlockBackend` (memory, OPFS, IndexedDB, HTTP, overlay, your own). */
  backend: BlockBackend;
  /** Device and host options (read-only, cache mode, serial, queue size, rate limit...). */
  disk?: V86DiskOptions;
  /** PCI slot (device number) 1–31; default 0x0d. */
  slot?: number;
  /** BAR0's fixed physical address, a multiple of 128 KiB; default 0xFE000000. */
  barAddress?: number;
  /** PCI name v86 logs. Default "virtio-blk-web". */
  name?: string;
}

export interface V86VirtioBlk {
  /** The project's same-thread disk (stats, setRateLimit, resize, flush, close, the PCI function as `pci`). */
  readonly disk: SameThreadDisk;
  /** The slot and BAR0 address it was registered at. */
  readonly slot: number;
  readonly barAddress: number;
  /** Counters: JIT invalidations, deferred device runs, asynchronous requests redone because guest RAM moved. */
  readonly counters: { readonly dirtyCalls: number; readonly runs: number; readonly redos: number };
  /** Where every request and interrupt stands right now (diagnosis.ts); changes nothing. */
  diagnose(): V86DiskDiagnosis;
  /**
   * Poke what `diagnose().kick` names, as a watchdog would: 'queue' runs the
   * queue as a notification would; 'interrupt' sets the used-buffer ISR bit
   * and lowers and raises the line. For a stalled guest only: a guest that
   * moves on after it shows where the wake-up was lost.
   */
  kick(what: 'queue' | 'interrupt'): void;
}

export class V86AttachError extends Error {
  override readonly name = 'V86AttachError';
}

function checkPlacement(slot: number, barAddress: number, barSize: number): void {
  if (!Number.isInteger(slot) || slot < 1 || slot > 31) throw new V86AttachError(`slot must be 1-31, got ${slot}`);
  if (!Number.isInteger(barAddress) || barAddress <= 0 || barAddress % V86_MMAP_UNIT !== 0 || barAddress + barSize > 0x1_0000_0000) {
    throw new V86AttachError(`barAddress must be a multiple of 128 KiB below 4 GiB, got 0x${barAddress.toString(16)}`);
  }
}

/** Attach `options.backend` as a virtio-blk PCI function of `emulator` (loaded, not yet running). */
export function attachVirtioBlk(emulator: V86Like, options: AttachVirtioBlkOptions): V86VirtioBlk {
  const cpu = v86Internals(emulator);
  if (emulator.is_running?.()) throw new V86AttachError('attach before emulator.run(): the BIOS enumerates PCI once, at start');
  const slot = options.slot ?? V86_DEFAULT_SLOT;
  const barAddress = options.barAddress ?? V86_DEFAULT_BAR_ADDRESS;
  const barSize = V86_MMAP_UNIT;
  checkPlacement(slot, barAddress, barSize);
  const pciId = slot << 3;
  const pciBus = cpu.devices.pci;

  const counters = { dirtyCalls: 0, runs: 0, redos: 0 };
  const dirty = (start: number, end: number): void => {
    counters.dirtyCalls++;
    cpu.jit_dirty_cache(start, end);
  };
  const memory = new JitDirtyingMemory(cpu, dirty);
  const calls = new PendingCalls();
  const backend = jitDirtyingBackend(options.backend, cpu, dirty, () => counters.redos++, calls);
  const log = new LineLog();
  const disk = createSameThreadDisk({
    ...options.disk,
    memory,
    backend,
    // Not shared: everything runs on this thread.
    sharedState: false,
    transport: DiskTransport.Pci,
    pci: { barSize },
    // The guest's access returns first; the queue runs (and raises the line) after it.
    scheduleDoorbell: (run) => {
      counters.runs++;
      log.mark('doorbell');
      queueMicrotask(() => {
        log.mark('run');
        run();
      });
    },
  });
  const fn = disk.pci!;
  fn.onInterruptLevel = (asserted) => {
    log.mark(asserted ? 'raise' : 'lower');
    if (asserted) pciBus.raise_irq(pciId);
    else pciBus.lower_irq(pciId);
  };

  const space = fn.configSpaceImage();
  // BAR0: 32-bit memory BAR, non-prefetchable, at its fixed address (PCI 3.0 §6.2.5.1).
  new DataView(space.buffer, space.byteOffset).setUint32(0x10, barAddress, true);
  const registered = pciBus.register_device({ pci_id: pciId, pci_space: Array.from(space), pci_bars: [{ size: barSize }], name: options.name ?? 'virtio-blk-web' });
  if (!(registered instanceof Int32Array)) throw new V86HookError('emulator.v86.cpu.devices.pci.register_device', 'returned no configuration space');

  const bar = new BarAccess(fn);
  const offsetOf = (address: number): number => (address >>> 0) - barAddress;
  cpu.io.mmap_register(
    barAddress,
    barSize,
    (address) => {
      const offset = offsetOf(address);
      const value = bar.read8(offset);
      if (offset === BarRegion.IsrCfg) log.mark(value === 0 ? 'emptyIsrRead' : 'isrRead');
      return value;
    },
    (address, value) => bar.write8(offsetOf(address), value),
    (address) => bar.read32(offsetOf(address)),
    (address, value) => bar.write32(offsetOf(address), value),
  );

  const state = disk.state;
  return {
    disk,
    slot,
    barAddress,
    counters,
    diagnose: () =>
      diagnose({
        state,
        memory,
        queue: disk.transport.queue(0),
        device: disk.device,
        calls,
        log,
        level: fn.interruptLevel,
        cpu: readV86CpuState(cpu, pciId),
      }),
    kick(what) {
      if (what === 'queue') {
        fn.core.notify(0);
        return;
      }
      const wasSet = Atomics.or(state, W.InterruptStatus, InterruptBit.UsedBuffer) !== 0;
      if (wasSet && fn.interruptLevel) {
        // Already high: a fresh edge, as if it had been lowered in between.
        log.mark('lower');
        pciBus.lower_irq(pciId);
        log.mark('raise');
        pciBus.raise_irq(pciId);
        return;
      }
      fn.updateInterruptLevel();
    },
  };
}
