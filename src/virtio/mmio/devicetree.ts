// What an emulator must tell the guest kernel about the disk, which emulator
// authors otherwise write by hand: the device-tree node of a virtio-mmio
// device (as QEMU's aarch64 `virt` emits it) and the kernel command-line
// words that boot from it.
//
// Two forms of the node: DTS text (for a .dts the emulator compiles, and for
// reading), and raw properties with big-endian cell bytes, for emulators that
// build their flattened device tree in code (libfdt-style `property(name,
// bytes)`). Addresses use the `virt` root's 2 address cells and 2 size cells.

import { MMIO_WINDOW_SIZE } from './mmio.ts';
import { highU32 as hi32, lowU32 as lo32 } from '../u64.ts';

/** GIC interrupt flags (include/dt-bindings/interrupt-controller/irq.h). */
export const IrqTrigger = {
  EdgeRising: 1,
  LevelHigh: 4,
} as const;
export type IrqTrigger = (typeof IrqTrigger)[keyof typeof IrqTrigger];

export interface VirtioMmioNodeOptions {
  /** Guest-physical base of the register window (QEMU virt: 0x0a00_0000 + 0x200 × n). */
  baseAddress: number;
  /** Window size; default MMIO_WINDOW_SIZE (0x200). */
  size?: number;
  /** GIC SPI number (QEMU virt: 16 + n; the GIC sees it as interrupt 32 + spi). */
  spi: number;
  /**
   * Trigger. Default level-high: the line is InterruptStatus, which stays
   * asserted until the driver acknowledges it. QEMU's virt says edge-rising;
   * Linux's virtio_mmio works with either.
   */
  trigger?: IrqTrigger;
  /** Emit `dma-coherent` (default true: the device reads guest RAM directly). */
  dmaCoherent?: boolean;
}

/** One property of the node, with its value encoded as the FDT stores it. */
export interface FdtProperty {
  name: string;
  /** Big-endian cells or a NUL-terminated string; empty for a flag like dma-coherent. */
  value: Uint8Array;
}

function cells(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setUint32(i * 4, v >>> 0));
  return out;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function resolve(options: VirtioMmioNodeOptions) {
  const size = options.size ?? MMIO_WINDOW_SIZE;
  const trigger = options.trigger ?? IrqTrigger.LevelHigh;
  if (!Number.isSafeInteger(options.baseAddress) || options.baseAddress < 0) throw new RangeError('bad base address');
  if (!Number.isInteger(options.spi) || options.spi < 0 || options.spi > 987) throw new RangeError('GIC SPIs are 0 to 987');
  return { base: options.baseAddress, size, trigger, spi: options.spi, dmaCoherent: options.dmaCoherent ?? true };
}

/** The node's name, `virtio_mmio@<base>`. */
export function virtioMmioNodeName(options: VirtioMmioNodeOptions): string {
  return `virtio_mmio@${options.baseAddress.toString(16)}`;
}

/** The node as DTS source, to paste under the root node of an aarch64 `virt` tree. */
export function virtioMmioDts(options: VirtioMmioNodeOptions): string {
  const { base, size, trigger, spi, dmaCoherent } = resolve(options);
  const lines = [
    `${virtioMmioNodeName(options)} {`,
    `\tcompatible = "virtio,mmio";`,
    `\treg = <${hex(hi32(base))} ${hex(lo32(base))} ${hex(hi32(size))} ${hex(lo32(size))}>;`,
    `\tinterrupts = <0x0 ${hex(spi)} ${hex(trigger)}>;`,
  ];
  if (dmaCoherent) lines.push('\tdma-coherent;');
  lines.push('};');
  return lines.join('\n');
}

/** The node's properties, encoded for an FDT builder. */
export function virtioMmioFdtProperties(options: VirtioMmioNodeOptions): FdtProperty[] {
  const { base, size, trigger, spi, dmaCoherent } = resolve(options);
  const props: FdtProperty[] = [
    { name: 'compatible', value: new TextEncoder().encode('virtio,mmio\0') },
    { name: 'reg', value: cells(hi32(base), lo32(base), hi32(size), lo32(size)) },
    // <GIC_SPI number flags>: the first cell 0 selects an SPI.
    { name: 'interrupts', value: cells(0, spi, trigger) },
  ];
  if (dmaCoherent) props.push({ name: 'dma-coherent', value: new Uint8Array(0) });
  return props;
}

export interface KernelCommandLineOptions {
  /**
   * The root file system: a partition number on /dev/vda (0: the whole
   * disk), or a partition UUID (GPT partition GUID, or MBR `SSSSSSSS-PP`).
   * Default: partition 1.
   */
  root?: number | { partuuid: string };
  /** Which virtio disk, when the emulator has several: 0 is vda. Default 0. */
  diskIndex?: number;
  /** rootfstype=, e.g. 'ext4'. */
  fsType?: string;
  /** Mount the root read-only (`ro`) instead of `rw`. */
  readOnly?: boolean;
  /** Extra words appended as they are (console=ttyAMA0, init=...). */
  extra?: string[];
}

/** Kernel command-line words that boot from the disk: `root=/dev/vda1 rootwait rw`, and so on. */
export function kernelCommandLine(options: KernelCommandLineOptions = {}): string {
  const root = options.root ?? 1;
  const words: string[] = [];
  if (typeof root === 'number') {
    const index = options.diskIndex ?? 0;
    if (!Number.isInteger(index) || index < 0 || index >= 26) throw new RangeError('disk index must be 0 to 25');
    if (!Number.isInteger(root) || root < 0) throw new RangeError('partition must be a whole number');
    words.push(`root=/dev/vd${String.fromCharCode(97 + index)}${root === 0 ? '' : root}`);
  } else {
    if (!/^[0-9a-fA-F-]+$/.test(root.partuuid)) throw new RangeError(`"${root.partuuid}" is not a partition UUID`);
    words.push(`root=PARTUUID=${root.partuuid}`);
  }
  if (options.fsType) words.push(`rootfstype=${options.fsType}`);
  // The disk may probe after the kernel first looks for root.
  words.push('rootwait', options.readOnly ? 'ro' : 'rw');
  words.push(...(options.extra ?? []));
  return words.join(' ');
}

/**
 * Linux's `virtio_mmio.device=` parameter, for a guest booted without a
 * device tree (needs CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES). `irq` is the Linux
 * interrupt number, which on a GIC is not the SPI number.
 */
export function virtioMmioCmdlineDevice(baseAddress: number, irq: number, size = MMIO_WINDOW_SIZE): string {
  return `virtio_mmio.device=${size}@${hex(baseAddress)}:${irq}`;
}
