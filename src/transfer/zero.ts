// Zero detection and the split of a block into zero and data runs: the pure
// core of sparse-aware import and export (Node-tested in test/transfer.test.ts).
//
// A run is zero only when it is at least `minZeroBytes` long and lies on
// `grainBytes` boundaries (4 KiB: a page, and a whole number of sectors), so
// the writes a caller makes stay aligned. Shorter zero stretches stay inside
// the data run around them: for an existing disk one write of a few zero
// bytes is cheaper than a write-zeroes call between two writes.

/** True when every byte of `bytes` is zero. Reads eight bytes at a time where the view is aligned. */
export function isAllZero(bytes: Uint8Array): boolean {
  let i = 0;
  const n = bytes.length;
  // Byte-wise up to an 8-byte boundary of the underlying buffer.
  while (i < n && (bytes.byteOffset + i) % 8 !== 0) if (bytes[i++] !== 0) return false;
  const words = Math.floor((n - i) / 8);
  if (words > 0) {
    // Two 32-bit lanes per word; OR-ing a stretch before testing keeps the loop branch-light.
    const lanes = new Uint32Array(bytes.buffer, bytes.byteOffset + i, words * 2);
    for (let w = 0; w < lanes.length; ) {
      const end = Math.min(lanes.length, w + 256);
      let acc = 0;
      for (; w < end; w++) acc |= lanes[w]!;
      if (acc !== 0) return false;
    }
    i += words * 8;
  }
  while (i < n) if (bytes[i++] !== 0) return false;
  return true;
}

/** A stretch of a block: `offset` and `length` in bytes from the block's start. */
export interface Run {
  offset: number;
  length: number;
  zero: boolean;
}

/**
 * Split `block` into alternating data and zero runs (in order, covering it
 * exactly). Zero runs start and end on multiples of `grainBytes` (except at
 * the block's end) and are at least `minZeroBytes` long.
 */
export function splitRuns(block: Uint8Array, grainBytes = 4096, minZeroBytes = grainBytes): Run[] {
  if (!(grainBytes > 0 && minZeroBytes > 0)) throw new RangeError('grain and minimum zero run must be positive');
  const runs: Run[] = [];
  const push = (offset: number, length: number, zero: boolean): void => {
    if (length === 0) return;
    const last = runs[runs.length - 1];
    if (last && last.zero === zero) last.length += length;
    else runs.push({ offset, length, zero });
  };
  // First pass: grains, each zero or not; a zero stretch shorter than the minimum is data.
  let at = 0;
  while (at < block.length) {
    const start = at;
    const zero = isAllZero(block.subarray(at, Math.min(block.length, at + grainBytes)));
    at = Math.min(block.length, at + grainBytes);
    while (at < block.length && isAllZero(block.subarray(at, Math.min(block.length, at + grainBytes))) === zero) {
      at = Math.min(block.length, at + grainBytes);
    }
    push(start, at - start, zero && at - start >= minZeroBytes);
  }
  return runs;
}
