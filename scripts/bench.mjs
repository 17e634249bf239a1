#!/usr/bin/env node
// `npm run bench`: make sure a Chromium exists (scripts/ensure-chromium.mjs),
// then run the TypeScript benchmark runner (bench/run.ts) through tsx.
// Arguments pass through: --quick for a short run, --no-linux to skip the
// QEMU guest section, --only=device,latency,memory,limiter,profile,linux.

import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);

const ensure = spawnSync(process.execPath, [join(root, 'scripts', 'ensure-chromium.mjs')], { cwd: root, stdio: 'inherit' });
if (ensure.status !== 0) process.exit(ensure.status ?? 1);

const run = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'bench', 'run.ts'), ...args], { cwd: root, stdio: 'inherit' });
process.exit(run.status ?? 1);
