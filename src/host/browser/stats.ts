// A disk's statistics: one list of counter names from which every copy is
// derived — the object the same-thread host returns, the shared Float64Array
// a device worker rewrites after each batch (slot i holds DISK_STAT_NAMES[i]),
// and the object the page reads back from it without asking the worker.

import { BLOCK_STAT_NAMES, type VirtioBlkDevice } from '../../block/device.ts';
import type { TransportStats } from '../../virtio/transport/device.ts';

/** Every counter a Disk reports: the block device's own, then the host's. */
export const DISK_STAT_NAMES = [
  ...BLOCK_STAT_NAMES,
  /** Requests popped and not yet completed. */
  'inFlight',
  /** Queue notifications the driver sent. */
  'notifications',
  /** Interrupts raised. */
  'interrupts',
  /** Disk size in 512-byte sectors. */
  'capacitySectors',
] as const;

export type DiskStatName = (typeof DISK_STAT_NAMES)[number];
/** Counters since the disk was created (see BLOCK_STAT_NAMES and DISK_STAT_NAMES for what each counts). */
export type DiskStats = Record<DiskStatName, number>;

/** Slots of the shared statistics array. */
export const STAT_SLOTS = DISK_STAT_NAMES.length;

/** Fill `into` from the device and its transport (no allocation: the device worker calls it every turn). */
export function gatherStats(into: DiskStats, device: VirtioBlkDevice, transport: { readonly stats: TransportStats }): DiskStats {
  const d = device.stats;
  for (const name of BLOCK_STAT_NAMES) into[name] = d[name];
  const t = transport.stats;
  into.inFlight = device.inFlight;
  into.notifications = t.notifications;
  into.interrupts = t.interrupts;
  into.capacitySectors = device.capacitySectors;
  return into;
}

/** A DiskStats with every counter 0. */
export function emptyStats(): DiskStats {
  return Object.fromEntries(DISK_STAT_NAMES.map((name) => [name, 0])) as DiskStats;
}

export function writeStats(array: Float64Array, stats: DiskStats): void {
  for (let i = 0; i < STAT_SLOTS; i++) array[i] = stats[DISK_STAT_NAMES[i]!];
}

export function readStats(array: Float64Array): DiskStats {
  const stats = emptyStats();
  for (let i = 0; i < STAT_SLOTS; i++) stats[DISK_STAT_NAMES[i]!] = array[i]!;
  return stats;
}
