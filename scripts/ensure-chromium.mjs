#!/usr/bin/env node
// Makes sure a Chromium for the e2e tests exists before Playwright starts.
//
// Playwright cannot download its own browser on this project's machines
// (DESIGN.md), so the tests use Debian's `chromium` package. Found: exit 0.
// Missing, and we are root on Debian: `apt-get install -y chromium` (after
// `apt-get update` when apt does not know the package yet). Playwright's own
// downloaded build, where one exists, is accepted too. Otherwise: say
// what is missing and how to get it, and exit 1. $CHROMIUM_PATH, when set,
// must point at an executable; nothing is installed for it.

import { execFileSync, spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

function executable(path) {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function findChromium() {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    for (const name of ['chromium', 'chromium-browser']) {
      if (dir && executable(join(dir, name))) return join(dir, name);
    }
  }
  return undefined;
}

function run(cmd, args) {
  console.log(`ensure-chromium: ${cmd} ${args.join(' ')}`);
  const result = spawnSync(cmd, args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  return result.status === 0;
}

function aptKnows(pkg) {
  try {
    const out = execFileSync('apt-cache', ['policy', pkg], { encoding: 'utf8' });
    return /Candidate: (?!\(none\))/.test(out);
  } catch {
    return false;
  }
}

function fail(message) {
  console.error(`ensure-chromium: ${message}`);
  process.exit(1);
}

if (process.env.CHROMIUM_PATH) {
  if (!executable(process.env.CHROMIUM_PATH)) fail(`CHROMIUM_PATH=${process.env.CHROMIUM_PATH} is not an executable file.`);
  process.exit(0);
}

const found = findChromium();
if (found) {
  console.log(`ensure-chromium: using ${found}`);
  process.exit(0);
}

// Playwright's own build, where `npx playwright install chromium` worked.
try {
  const { chromium } = await import('playwright-core');
  if (existsSync(chromium.executablePath())) {
    console.log(`ensure-chromium: using Playwright's ${chromium.executablePath()}`);
    process.exit(0);
  }
} catch {
  // playwright-core missing or too old to say: fall through to Debian's package.
}

const isRoot = process.getuid?.() === 0;
const isDebian = existsSync('/etc/debian_version') && existsSync('/usr/bin/apt-get');
if (!isRoot || !isDebian) {
  fail(
    'no Chromium found on PATH for the e2e tests.\n' +
      '  On Debian/Ubuntu:  sudo apt-get install -y chromium\n' +
      '  Elsewhere:         npx playwright install chromium   (Playwright then uses its own build)\n' +
      '  Or point CHROMIUM_PATH at a Chromium or Chrome executable.',
  );
}

if (!aptKnows('chromium') && !run('apt-get', ['update'])) fail('apt-get update failed.');
if (!run('apt-get', ['install', '-y', '--no-install-recommends', 'chromium'])) fail('apt-get install chromium failed.');
const installed = findChromium();
if (!installed) fail('chromium was installed but is not on PATH.');
console.log(`ensure-chromium: installed ${installed}`);
