// What a hostile case runs against: a device behind its register window, the
// guest RAM it serves, and the disk's bytes, whichever host runs the device.
// `sameThreadTarget` is the core's same-thread host (Node unit tests);
// e2e/harness/hostile-page.ts makes the worker host's (createDisk in Chromium).
// Environment-neutral: imports only from src/ and this folder.

import { createSameThreadDisk } from '../../src/host/browser/same-thread.ts';
import { GuestMemory } from '../../src/virtio/memory.ts';
import type { PciFunctionAccessor } from '../../src/virtio/pci/function.ts';
import { PciAsMmio, guardedPci } from './pci-view.ts';
import { Gate, openBackend, type GateOp } from './shared-disk.ts';

/** aarch64 `virt`: RAM starts here. */
export const HOSTILE_RAM_BASE = 0x4000_0000;

export interface TargetOptions {
  /** Guest RAM (default 256 KiB). */
  ramBytes?: number;
  /** Disk size (default 256 KiB). */
  diskBytes?: number;
  readOnly?: boolean;
  /** Hold these backend operations on the gate (a slow asynchronous backend). */
  gateOps?: readonly GateOp[];
  /** The device's QueueNumMax (its queueSize option). */
  queueSize?: number;
  /** GET_ID's answer. */
  serial?: string;
  /** Override Target.hangMs (the fuzzer's synchronous cases need no more than a moment). */
  hangMs?: number;
  /** 'pci': the disk is a virtio-pci function, `mmio` carries the raw guest's MMIO names onto it (pci-view.ts). */
  transport?: 'mmio' | 'pci';
}

export interface Mmio {
  read(offset: number, width: number): number;
  write(offset: number, value: number, width: number): void;
}

export interface Target {
  readonly host: 'same-thread' | 'worker';
  /** The register window, as the emulator calls it. */
  readonly mmio: Mmio;
  /** The PCI function, when `transport` was 'pci'. */
  readonly pci?: PciFunctionAccessor;
  /** All of guest RAM, at guest address `ramBase`. */
  readonly ram: Uint8Array;
  readonly ramBase: number;
  /** The disk's bytes, live. */
  readonly disk: Uint8Array;
  /** Present when `gateOps` was given. */
  readonly gate: Gate | null;
  /** How long a wait may last before the case is called WEDGED. */
  readonly hangMs: number;
  readonly interruptLevel: number;
  /**
   * Resolves once the device has handled every register write made before
   * the call, as far as it can without a backend that is held: the
   * deterministic way to observe that nothing happened.
   */
  settle(): Promise<void>;
  /** Exceptions that reached the host (any is a FAIL). */
  readonly hostErrors: string[];
  close(): Promise<void>;
}

export type TargetFactory = (options: TargetOptions) => Promise<Target>;

export const DEFAULT_SERIAL = 'hostile-guest-suite!';

const diskPatterns = new Map<number, Uint8Array>();
/** Fill `disk` with a lasting pattern, so reads prove where their data came from. */
export function fillDisk(disk: Uint8Array): void {
  let p = diskPatterns.get(disk.length);
  if (!p) {
    p = new Uint8Array(disk.length);
    for (let i = 0; i < p.length; i++) p[i] = (i * 7 + (i >>> 9)) & 0xff;
    diskPatterns.set(disk.length, p);
  }
  disk.set(p);
}

/** The same-thread host: the device runs inside the register write that needs it. */
export const sameThreadTarget: TargetFactory = async (options) => {
  const ramBytes = options.ramBytes ?? 256 << 10;
  const ram = new Uint8Array(new ArrayBuffer(ramBytes));
  const disk = new Uint8Array(new ArrayBuffer(options.diskBytes ?? 256 << 10));
  const gate = options.gateOps ? new Gate() : null;
  const backend = openBackend({ data: disk, readOnly: options.readOnly, gate: gate?.words, gateOps: options.gateOps });
  const memory = new GuestMemory([{ guestAddress: HOSTILE_RAM_BASE, source: ram.buffer }]);
  const hostErrors: string[] = [];
  const inner = createSameThreadDisk({
    memory,
    backend,
    readOnly: options.readOnly,
    queueSize: options.queueSize,
    serial: options.serial ?? DEFAULT_SERIAL,
    transport: options.transport,
  });
  const guard = <T>(what: string, fn: () => T, fallback: T): T => {
    try {
      return fn();
    } catch (err) {
      hostErrors.push(`${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      return fallback;
    }
  };
  const pci = inner.pci ? guardedPci(inner.pci, guard) : undefined;
  const registers: Mmio = pci ? new PciAsMmio(pci) : inner.mmio;
  return {
    host: 'same-thread',
    mmio: {
      read: (offset, width) => guard(`mmio.read(${offset}, ${width})`, () => registers.read(offset, width), 0),
      write: (offset, value, width) =>
        guard(`mmio.write(${offset}, ${value}, ${width})`, () => registers.write(offset, value, width), undefined),
    },
    pci,
    ram,
    ramBase: HOSTILE_RAM_BASE,
    disk,
    gate,
    hangMs: options.hangMs ?? 2000,
    get interruptLevel() {
      return inner.interruptLevel;
    },
    // Every promise callback already due runs before the next macrotask; a
    // synchronous backend has finished inside the register write itself.
    settle: () => new Promise<void>((resolve) => setTimeout(resolve, 0)),
    hostErrors,
    async close() {
      gate?.open();
      await inner.close();
    },
  };
};
