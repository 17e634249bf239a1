// 64-bit quantities as JavaScript numbers: guest addresses, sectors and
// feature words arrive as two little-endian 32-bit halves. Numbers are exact
// below 2^53; above it they lose precision but stay above every range they
// are checked against, so they are refused, never wrapped.

const TWO_POW_32 = 0x1_0000_0000;

/** The value of a (low, high) pair of 32-bit words. */
export function joinU64(lo: number, hi: number): number {
  return (lo >>> 0) + (hi >>> 0) * TWO_POW_32;
}

/** The low 32 bits of a non-negative integer below 2^64. */
export function lowU32(n: number): number {
  return n % TWO_POW_32;
}

/** The high 32 bits of a non-negative integer below 2^64. */
export function highU32(n: number): number {
  return Math.floor(n / TWO_POW_32);
}

/** A little-endian u64 at `at` in `view`. */
export function getU64(view: DataView, at: number): number {
  return joinU64(view.getUint32(at, true), view.getUint32(at + 4, true));
}

/** Store `value` as a little-endian u64 at `at` in `view`. */
export function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, lowU32(value), true);
  view.setUint32(at + 4, highU32(value), true);
}
