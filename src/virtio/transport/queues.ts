// Building a device's SplitQueue from what a driver set up — the one way
// every transport does it (virtio-mmio and PCI through TransportDevice,
// vhost-user from its vring messages): the geometry checked against guest
// RAM and the device's maximum, the ring features taken from the negotiated
// ones.

import { VirtioFeature, hasFeature } from '../device.ts';
import type { GuestMemory } from '../memory.ts';
import { SplitQueue, checkGeometry, type QueueGeometry } from '../queue.ts';

/** Why `geometry` cannot be served (size above `maxSize`, misaligned, outside RAM), or null. */
export function queueProblem(memory: GuestMemory, geometry: QueueGeometry, maxSize: number): string | null {
  // §4.2.2 / §4.1.4.3: the size is at most the device's maximum, a power of two; the rings lie in RAM.
  if (geometry.size > maxSize) return `queue size ${geometry.size} above the maximum ${maxSize}`;
  return checkGeometry(memory, geometry);
}

export interface QueueStart {
  /** False once the driver took the queue away (see QueueFeatures.live). */
  live?: () => boolean;
  /** Where the device resumes (vhost-user's vring base and the used index the driver saw). */
  availIdx?: number;
  usedIdx?: number;
}

/** A queue over checked geometry (`queueProblem` returned null), reading rings as the driver's features say. */
export function splitQueueFor(memory: GuestMemory, geometry: QueueGeometry, driverFeatures: bigint, start: QueueStart = {}): SplitQueue {
  const features = {
    eventIdx: hasFeature(driverFeatures, VirtioFeature.RingEventIdx),
    indirect: hasFeature(driverFeatures, VirtioFeature.RingIndirectDesc),
    ...(start.live ? { live: start.live } : {}),
  };
  return new SplitQueue(memory, geometry, features, { availIdx: start.availIdx, usedIdx: start.usedIdx });
}
