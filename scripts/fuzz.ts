// `npm run fuzz -- --runs N --seed S [--path P] [--transport pci]`: a long run
// of the hostile-guest fuzzer (test/hostile/fuzz.ts) on the same-thread host,
// on a virtio-mmio disk or (`--transport pci`) a virtio-pci one.
// It prints the seed first; on a failure it prints the seed, the path and the
// counterexample, and the command that replays exactly that case.
//
//   npm run fuzz -- --runs 1000000
//   npm run fuzz -- --seed 92026 --path "110:0:0:1"     (replay one failure)

import fc from 'fast-check';
import { parseArgs } from 'node:util';
import { fuzzProperty, pciFuzzProperty } from '../test/hostile/fuzz.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '200000' },
    seed: { type: 'string' },
    path: { type: 'string' },
    transport: { type: 'string', default: 'mmio' },
  },
});
const seed = values.seed !== undefined ? Number(values.seed) : (Date.now() ^ (Math.random() * 2 ** 31)) | 0;
const numRuns = Number(values.runs);
const pci = values.transport === 'pci';
if (!Number.isSafeInteger(seed) || !Number.isSafeInteger(numRuns) || numRuns < 1 || (!pci && values.transport !== 'mmio')) {
  console.error('usage: npm run fuzz -- [--runs N] [--seed S] [--path P] [--transport mmio|pci]');
  process.exit(2);
}
console.log(`hostile fuzz (${values.transport}): ${values.path ? `replaying path ${values.path}` : `${numRuns} runs`}, seed ${seed}`);
const started = Date.now();
const property: fc.IAsyncPropertyWithHooks<unknown[]> = pci ? pciFuzzProperty : fuzzProperty;
const result = await fc.check(property, { numRuns, seed, path: values.path, endOnFailure: false });
const seconds = ((Date.now() - started) / 1000).toFixed(1);
if (!result.failed) {
  console.log(`hostile fuzz: ${result.numRuns} cases passed in ${seconds} s (seed ${seed})`);
  process.exit(0);
}
const error = result.errorInstance;
console.log(`hostile fuzz: FAILED after ${result.numRuns} cases (${result.numShrinks} shrinks) in ${seconds} s`);
console.log(`  seed: ${result.seed}`);
console.log(`  path: ${result.counterexamplePath}`);
console.log(`  error: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
console.log(`  counterexample: ${fc.stringify(result.counterexample)}`);
console.log(`  replay: npm run fuzz -- --seed ${result.seed} --path "${result.counterexamplePath}"${pci ? ' --transport pci' : ''}`);
process.exit(1);
