// The parts of a v86 instance the adapter uses, typed structurally, and the
// one place that checks they exist.
//
// None of these are in v86's published `v86.d.ts`; they are the internals
// v86's own devices use, whose names survive in the shipped build
// (libv86.mjs 0.5.x): `emulator.v86.cpu`, its PCI bus, its memory-mapped I/O
// table, its guest RAM inside the wasm module's memory, and the JIT's
// invalidation entry point. v86 is not a dependency of this package: any
// object of this shape works, and `v86Internals` fails with a
// `V86HookError` naming the first missing hook instead of a TypeError
// somewhere inside a guest access.

/** A v86 PCI device description, as `pci.register_device` takes it. */
export interface V86PciDevice {
  /** Bus/device/function: slot << 3. */
  pci_id: number;
  /** The configuration space image (v86 keeps its own copy of 256 bytes). */
  pci_space: number[];
  /** BAR sizes; v86 answers BAR sizing from them. */
  pci_bars: Array<{ size: number } | undefined>;
  name: string;
}

export interface V86Pci {
  register_device(device: V86PciDevice): Int32Array;
  raise_irq(pciId: number): void;
  lower_irq(pciId: number): void;
}

/** v86's memory-mapped I/O table; handler addresses are physical, as signed 32-bit integers. */
export interface V86Io {
  mmap_register(
    address: number,
    size: number,
    read8: (address: number) => number,
    write8: (address: number, value: number) => void,
    read32: (address: number) => number,
    write32: (address: number, value: number) => void,
  ): void;
}

export interface V86Cpu {
  /** The wasm module's memory; guest RAM is a window in it (not shared, and it can grow). */
  readonly wasm_memory: WebAssembly.Memory;
  /**
   * Guest RAM: `byteOffset` is where physical address 0 lives in
   * `wasm_memory`. v86 makes it a Proxy that builds a fresh view on every
   * access (the memory can grow), so only its offset is read, once.
   */
  readonly mem8: { readonly byteOffset: number };
  /** Guest RAM size in bytes, in element 0. */
  readonly memory_size: ArrayLike<number>;
  /** Drop compiled code for physical [start, end): what v86's own DMA devices call after writing RAM. */
  jit_dirty_cache(start: number, end: number): void;
  readonly io: V86Io;
  readonly devices: { readonly pci: V86Pci };
}

/** What a `V86` instance (new V86(...)) must offer: the public API plus `v86.cpu`. */
export interface V86Like {
  readonly v86?: { readonly cpu?: unknown };
  is_running?(): boolean;
}

/** A hook the adapter needs is missing from this v86 build. */
export class V86HookError extends Error {
  override readonly name = 'V86HookError';
  constructor(
    /** The path of the missing hook, e.g. `emulator.v86.cpu.io.mmap_register`. */
    readonly hook: string,
    detail = 'is missing',
  ) {
    super(`v86 hook ${hook} ${detail}: this v86 build is not one the adapter knows (tested with npm v86 0.5.462)`);
  }
}

type Bag = Record<string, unknown>;

function member(owner: unknown, key: string, path: string): unknown {
  const value = owner !== null && typeof owner === 'object' ? (owner as Bag)[key] : undefined;
  if (value === undefined || value === null) throw new V86HookError(`${path}.${key}`);
  return value;
}

function method(owner: unknown, key: string, path: string): void {
  if (typeof member(owner, key, path) !== 'function') throw new V86HookError(`${path}.${key}`, 'is not a function');
}

/**
 * The CPU of a loaded emulator, with every hook the adapter uses checked.
 * Call it in the `emulator-loaded` handler (before `emulator.run()`): the
 * CPU exists from then on, and the BIOS has not enumerated the bus yet.
 */
export function v86Internals(emulator: V86Like): V86Cpu {
  const cpu = member(member(emulator, 'v86', 'emulator'), 'cpu', 'emulator.v86');
  const at = 'emulator.v86.cpu';
  if (!(member(cpu, 'wasm_memory', at) instanceof WebAssembly.Memory)) {
    throw new V86HookError(`${at}.wasm_memory`, 'is not a WebAssembly.Memory');
  }
  const offset = (member(cpu, 'mem8', at) as { byteOffset?: unknown }).byteOffset;
  if (typeof offset !== 'number' || offset % 8 !== 0) throw new V86HookError(`${at}.mem8.byteOffset`, 'is not a RAM offset');
  const size = member(cpu, 'memory_size', at) as ArrayLike<unknown>;
  if (typeof size[0] !== 'number' || size[0] <= 0) throw new V86HookError(`${at}.memory_size`, 'holds no size');
  method(cpu, 'jit_dirty_cache', at);
  method(member(cpu, 'io', at), 'mmap_register', `${at}.io`);
  const pci = member(member(cpu, 'devices', at), 'pci', `${at}.devices`);
  for (const name of ['register_device', 'raise_irq', 'lower_irq']) method(pci, name, `${at}.devices.pci`);
  return cpu as V86Cpu;
}
