// The hostile-guest fuzzer in the unit run: 20,000 seeded cases (fuzz.ts).
// A failure prints fast-check's seed and path; replay it with
// `npm run fuzz -- --seed S --path P`. HOSTILE_FUZZ_SEED picks another seed.

import fc from 'fast-check';
import { it } from 'vitest';
import { fuzzProperty } from './fuzz.ts';

const seed = Number(process.env.HOSTILE_FUZZ_SEED ?? 9_2026);

it('fuzz: 20,000 hostile register, descriptor and ring cases keep RAM, disk and the host intact, and the device serves after a reset', async () => {
  await fc.assert(fuzzProperty, { numRuns: 20_000, seed });
}, 120_000);
