// v86's memory-mapped I/O has 8- and 32-bit handlers only: a guest's 16-bit
// access to BAR0 arrives as two 8-bit accesses, low byte first. virtio-pci's
// common configuration has 16-bit fields that must be accessed at their
// natural width (virtio 1.2 §4.1.3.1), so the function decodes no byte of
// them. This puts the halves back together:
// - a byte read of a 16-bit field reads the field and returns the byte asked
//   for (reads of the common configuration have no side effects);
// - a byte write to the low half of a 16-bit field is held, and the write of
//   the high half completes one 16-bit write. A held low byte followed by
//   anything else is a lone byte write, which the spec does not allow: it
//   goes to the function as a byte, which ignores it.
// Every other offset (1- and 4-byte fields, device config, ISR, notify) goes
// to the function at the width the guest used.

import { COMMON_FIELDS } from '../../virtio/pci/common-cfg.ts';
import { BarRegion } from '../../virtio/pci/layout.ts';
import type { PciFunctionAccessor } from '../../virtio/pci/function.ts';

/** Whether BAR0 offset `at` (even) starts a 16-bit common configuration field. */
function isHalfword(at: number): boolean {
  const inCommon = at - BarRegion.CommonCfg;
  return inCommon >= 0 && COMMON_FIELDS.get(inCommon)?.width === 2;
}

export class BarAccess {
  readonly #fn: PciFunctionAccessor;
  /** Offset of a held low byte, or -1. */
  #heldAt = -1;
  #heldValue = 0;

  constructor(fn: PciFunctionAccessor) {
    this.#fn = fn;
  }

  read8(offset: number): number {
    this.#dropHeld();
    const even = offset & ~1;
    if (isHalfword(even)) return (this.#fn.readBar(even, 2) >>> (8 * (offset & 1))) & 0xff;
    return this.#fn.readBar(offset, 1) & 0xff;
  }

  write8(offset: number, value: number): void {
    const even = offset & ~1;
    if (isHalfword(even)) {
      if ((offset & 1) === 0) {
        this.#dropHeld();
        this.#heldAt = offset;
        this.#heldValue = value & 0xff;
        return;
      }
      if (this.#heldAt === even) {
        this.#heldAt = -1;
        this.#fn.writeBar(even, 2, this.#heldValue | ((value & 0xff) << 8));
        return;
      }
    }
    this.#dropHeld();
    this.#fn.writeBar(offset, 1, value & 0xff);
  }

  read32(offset: number): number {
    this.#dropHeld();
    return this.#fn.readBar(offset, 4) | 0;
  }

  write32(offset: number, value: number): void {
    this.#dropHeld();
    this.#fn.writeBar(offset, 4, value);
  }

  /** A held low byte not followed by its high byte: pass it on as the lone byte write it was. */
  #dropHeld(): void {
    if (this.#heldAt < 0) return;
    const at = this.#heldAt;
    this.#heldAt = -1;
    this.#fn.writeBar(at, 1, this.#heldValue);
  }
}
