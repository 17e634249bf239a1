// The hostile-guest fuzzer in the unit run: 20,000 seeded cases (fuzz.ts), and
// 3,000 more on a virtio-pci disk with raw config-space and BAR0 writes.
// A failure prints fast-check's seed and path; replay it with
// `npm run fuzz -- --seed S --path P` (add `--transport pci` for the second). HOSTILE_FUZZ_SEED picks another seed.

import fc from 'fast-check';
import { it } from 'vitest';
import { fuzzProperty, pciFuzzProperty } from './fuzz.ts';

const seed = Number(process.env.HOSTILE_FUZZ_SEED ?? 9_2026);

it('fuzz: 20,000 hostile register, descriptor and ring cases keep RAM, disk and the host intact, and the device serves after a reset', async () => {
  await fc.assert(fuzzProperty, { numRuns: 20_000, seed });
  // 492 s beside other suites on 2 cores (load average 50 to 78); the bound is for a hang only.
}, 900_000);

it('fuzz: 3,000 hostile cases on a virtio-pci disk, with raw config-space and BAR0 writes, keep RAM, disk, IDs and the host intact', async () => {
  await fc.assert(pciFuzzProperty, { numRuns: 3_000, seed });
  // 108 s in that run.
}, 300_000);
