// Latency percentiles for the lab: a fixed log-scale histogram, 20 buckets a
// decade from 1 µs to 100 s (each bucket ~12 % wide), so a percentile is
// known to within 12 % and a histogram is a plain array of counts that can
// be posted from the vCPU worker and added up on the page.

const BUCKETS_PER_DECADE = 20;
const MIN_MS = 0.001;
const DECADES = 8;
/** Number of buckets; the last one also holds everything slower. */
export const LATENCY_BUCKETS = BUCKETS_PER_DECADE * DECADES;

/** The bucket a latency of `ms` falls in. */
export function latencyBucket(ms: number): number {
  if (!(ms > MIN_MS)) return 0;
  const b = Math.floor(Math.log10(ms / MIN_MS) * BUCKETS_PER_DECADE);
  return Math.min(LATENCY_BUCKETS - 1, b);
}

/** An empty histogram. */
export function latencyHistogram(): number[] {
  return new Array<number>(LATENCY_BUCKETS).fill(0);
}

/** Add `from` into `into`. */
export function addHistogram(into: number[], from: readonly number[]): void {
  for (let i = 0; i < LATENCY_BUCKETS; i++) into[i]! += from[i] ?? 0;
}

/** The `q` quantile (0 < q < 1) in ms, as the upper edge of its bucket; NaN when empty. */
export function latencyQuantile(histogram: readonly number[], q: number): number {
  let total = 0;
  for (const c of histogram) total += c;
  if (total === 0) return Number.NaN;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i]!;
    if (seen >= rank) return MIN_MS * 10 ** ((i + 1) / BUCKETS_PER_DECADE);
  }
  return MIN_MS * 10 ** DECADES;
}
