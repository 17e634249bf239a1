// The limiter's public surface: token buckets, the per-disk (or per-group)
// rate limiter built from them, and the injected clock. Pure TypeScript: no
// DOM, no Node APIs, no timers; the device owns retries.

export { ManualClock, performanceClock, type Clock } from './clock.ts';
export { Reduction, TokenBucket, isBucketEnabled, type TokenBucketConfig } from './bucket.ts';
export {
  IoKind,
  RateLimiter,
  type BucketUnit,
  type BudgetConfig,
  type BudgetScope,
  type RateLimiterConfig,
} from './limiter.ts';
export { DiskLimits, RateLimitGroup, bothLimits, sharedClock, type Limits } from './group.ts';
