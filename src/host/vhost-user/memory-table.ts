// The guest's RAM as the front-end shares it (SET_MEM_TABLE): one fd per
// region, each mapped here with the addon and all of them wrapped in one
// GuestMemory, plus the translation of QEMU-process addresses (the space ring
// addresses arrive in) to guest-physical ones.
//
// A table is mapped whole or not at all (a failure unmaps what it had mapped)
// and never changes; the host replaces it only with the device reset, then
// unmaps the old one. The front-end is not trusted: protocol.ts checks the
// layout (no empty, wrapping or overlapping regions), and this file checks
// that every byte of a region is in its fd before mapping it.
//
// Imports: addon.ts (types), protocol.ts, src/virtio/memory.ts.

import { GuestMemory } from '../../virtio/memory.ts';
import type { VhostUserAddon } from './addon.ts';
import { decodeMemTable, ProtocolError, type MemRegion } from './protocol.ts';

/**
 * Largest single mapping. A typed array over more than 4 GiB is not possible
 * in Node 20, and guest RAM is one region as large as `-m`, so a region is
 * mapped in pieces; GuestMemory splits chains at the seams.
 */
export const MAX_MAPPING_BYTES = 1 << 30;

/** One mmap of (part of) a memory region: `bytes` guest bytes from `guestAddress`. */
interface Mapping {
  guestAddress: number;
  bytes: number;
  buffer: ArrayBuffer;
  delta: number;
}

export class MemoryTable {
  /** The regions as the front-end sent them. */
  readonly regions: readonly MemRegion[];
  readonly memory: GuestMemory;
  readonly #addon: VhostUserAddon;
  /** The mmaps behind `memory`; emptied by `unmap`. */
  #mappings: Mapping[];

  private constructor(addon: VhostUserAddon, regions: MemRegion[], mappings: Mapping[], memory: GuestMemory) {
    this.#addon = addon;
    this.regions = regions;
    this.#mappings = mappings;
    this.memory = memory;
  }

  /**
   * Map a SET_MEM_TABLE payload's regions from its fds, in pieces of at most
   * `maxMappingBytes` (a multiple of the page size). Throws (with nothing left
   * mapped) when the table is malformed or a region reaches past its fd. The
   * fds stay the caller's: the mappings hold the memory without them.
   */
  static map(addon: VhostUserAddon, payload: Uint8Array, fds: readonly number[], maxMappingBytes: number): MemoryTable {
    const regions = decodeMemTable(payload);
    if (fds.length !== regions.length) {
      throw new ProtocolError(`memory table has ${regions.length} regions but ${fds.length} fds`);
    }
    const mappings: Mapping[] = [];
    try {
      regions.forEach((region, i) => {
        // Touching a shared mapping past the end of its file is SIGBUS, which
        // kills the process: every byte of the region must be in the file.
        const fileBytes = addon.fdSize(fds[i]!);
        if (region.mmapOffset + region.size > fileBytes) {
          throw new ProtocolError(
            `memory region ${i} needs bytes up to 0x${(region.mmapOffset + region.size).toString(16)} of an fd of 0x${fileBytes.toString(16)}`,
          );
        }
        for (let done = 0; done < region.size; done += maxMappingBytes) {
          const bytes = Math.min(maxMappingBytes, region.size - done);
          const { buffer, delta } = addon.mmap(fds[i]!, region.mmapOffset + done, bytes);
          mappings.push({ guestAddress: region.guestAddress + done, bytes, buffer, delta });
        }
      });
      const memory = new GuestMemory(
        mappings.map((m) => ({ guestAddress: m.guestAddress, source: m.buffer, sourceOffset: m.delta, size: m.bytes })),
      );
      return new MemoryTable(addon, regions, mappings, memory);
    } catch (err) {
      for (const m of mappings) addon.unmap(m.buffer);
      throw err;
    }
  }

  /** Unmap the regions: nothing may use `memory` any more (the device is reset or never saw it). */
  unmap(): void {
    for (const m of this.#mappings) this.#addon.unmap(m.buffer);
    this.#mappings = [];
  }

  /** The regions in guest-physical space, for the log. */
  describe(): string {
    return this.regions.map((r) => `0x${r.guestAddress.toString(16)}+0x${r.size.toString(16)}`).join(', ');
  }
}

/** A QEMU-process address → guest-physical, through `table` (no table: no address translates). */
export function toGuestAddress(table: MemoryTable | null, userAddress: number): number {
  for (const region of table?.regions ?? []) {
    if (userAddress >= region.userAddress && userAddress - region.userAddress < region.size) {
      return userAddress - region.userAddress + region.guestAddress;
    }
  }
  throw new ProtocolError(`ring address 0x${userAddress.toString(16)} is in no memory region`);
}
