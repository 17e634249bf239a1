// The driver's one error type. Every layer of the driver throws it: the
// transport when no device answers or a reset never finishes, the virtqueue
// when it runs out of descriptors or the device returns a head it never
// had, the block driver when the device refuses initialisation or a
// convenience request fails.

/** Thrown when the device refuses initialisation or breaks the driver's contract. */
export class DriverError extends Error {
  override readonly name = 'DriverError';
}
