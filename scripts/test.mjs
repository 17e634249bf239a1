#!/usr/bin/env node
// `npm test`: every suite, from a fresh clone, with nothing installed by hand.
//
//   1. npm packages (npm ci when node_modules is missing or older than the lock)
//   2. TypeScript check of the whole tree
//   3. Node unit and property tests (vitest)
//   4. Chromium end-to-end tests (Playwright; Debian's chromium, installed with
//      apt when missing and we are root; the v86 boot test's i386 guest is
//      provisioned into .cache/v86 first)
//   5. The consumer test: `npm pack`, the tarball installed into a scratch
//      Vite app (built, then opened in Chromium) and a scratch Node project
//      (the CLI and a vhost-user handshake), outside the repository
//      (test/consumer/; about a minute with npm's cache warm)
//   6. The real-guest tests: Debian's aarch64 Linux under QEMU drives the
//      device through the vhost-user host (QEMU, kernel and busybox are
//      provisioned into .cache/linux by the suite itself)
//
// Each suite writes a JSON report; the last line printed is the total as
// "N passed, N failed, N skipped". Exit status is non-zero when any test
// failed or any suite could not run.
//
// Options: --only unit,e2e,consumer,linux (default: all), or VBW_TEST_ONLY=... .

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const reports = join(root, '.cache', 'test-reports');
mkdirSync(reports, { recursive: true });

const onlyArg = process.argv.find((a) => a.startsWith('--only='))?.slice(7) ?? process.env.VBW_TEST_ONLY;
const only = new Set((onlyArg ?? 'unit,e2e,consumer,linux').split(',').map((s) => s.trim()));

const totals = { passed: 0, failed: 0, skipped: 0 };
const problems = [];

function run(cmd, args, env = {}) {
  console.log(`\n$ ${[cmd, ...args].join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.error) return { status: 127, error: r.error };
  return { status: r.status ?? 1 };
}

function section(title) {
  console.log(`\n==== ${title} ${'='.repeat(Math.max(0, 70 - title.length))}`);
}

// 1. npm packages ----------------------------------------------------------
section('npm packages');
const marker = join(root, 'node_modules', '.package-lock.json');
const lock = join(root, 'package-lock.json');
if (!existsSync(marker) || statSync(marker).mtimeMs < statSync(lock).mtimeMs) {
  const r = run('npm', ['ci', '--no-audit', '--no-fund']);
  if (r.status !== 0) {
    // npm ci also runs `prepare` (the library build): a type error fails it too.
    console.error('npm ci failed (see above): it needs the npm registry, and its `prepare` step builds dist/.');
    process.exit(1);
  }
} else {
  console.log('node_modules is up to date');
}

// 2. TypeScript ------------------------------------------------------------
section('TypeScript');
if (run('npx', ['tsc', '--noEmit', '-p', '.']).status !== 0) {
  problems.push('TypeScript check failed');
  totals.failed++;
}

// 3-6. Suites --------------------------------------------------------------
function vitestSuite(name, config) {
  const out = join(reports, `${name}.json`);
  const args = ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${out}`];
  if (config) args.push('-c', config);
  const r = run('npx', args);
  return collectVitest(name, out, r.status);
}

function collectVitest(name, out, status) {
  if (!existsSync(out)) {
    problems.push(`${name}: the suite did not run (exit ${status})`);
    totals.failed++;
    return;
  }
  const j = JSON.parse(readFileSync(out, 'utf8'));
  const failedFiles = (j.testResults ?? []).filter((f) => f.status === 'failed' && (f.assertionResults ?? []).length === 0);
  totals.passed += j.numPassedTests ?? 0;
  totals.failed += (j.numFailedTests ?? 0) + failedFiles.length;
  totals.skipped += (j.numPendingTests ?? 0) + (j.numTodoTests ?? 0);
  for (const f of failedFiles) problems.push(`${name}: ${f.name} failed to load: ${String(f.message).split('\n')[0]}`);
  if ((j.numFailedTests ?? 0) > 0) problems.push(`${name}: ${j.numFailedTests} failed`);
  if (status !== 0 && (j.numFailedTests ?? 0) === 0 && failedFiles.length === 0) {
    problems.push(`${name}: exited ${status}`);
    totals.failed++;
  }
}

if (only.has('unit')) {
  section('Unit and property tests (Node)');
  vitestSuite('unit');
}

if (only.has('e2e')) {
  section('End-to-end tests (Chromium)');
  const ensure = run('node', ['scripts/ensure-chromium.mjs']);
  if (ensure.status !== 0) {
    problems.push('e2e: Chromium is missing and could not be installed (see above)');
    totals.failed++;
  } else {
    // The v86 boot test's guest (SeaBIOS, Debian's i386 kernel, busybox) goes
    // to .cache/v86; on failure the message says what to install, and the
    // other specs still run.
    if (run('npx', ['tsx', 'e2e/v86/provision.ts']).status !== 0) {
      problems.push('e2e: the v86 guest could not be provisioned (see above); e2e/v86-boot.spec.ts fails until it is');
    }
    const out = join(reports, 'e2e.json');
    const r = run('npx', ['playwright', 'test', '--reporter=list,json'], { PLAYWRIGHT_JSON_OUTPUT_NAME: out });
    if (!existsSync(out)) {
      problems.push(`e2e: Playwright did not run (exit ${r.status})`);
      totals.failed++;
    } else {
      const s = JSON.parse(readFileSync(out, 'utf8')).stats ?? {};
      totals.passed += (s.expected ?? 0) + (s.flaky ?? 0);
      totals.failed += s.unexpected ?? 0;
      totals.skipped += s.skipped ?? 0;
      if (s.unexpected) problems.push(`e2e: ${s.unexpected} failed`);
      if (r.status !== 0 && !s.unexpected) {
        problems.push(`e2e: exited ${r.status}`);
        totals.failed++;
      }
    }
  }
}

if (only.has('consumer')) {
  section('Consumer: the packed tarball in a scratch Vite app and Node project');
  // The browser half needs the same Chromium as the e2e suite.
  if (run('node', ['scripts/ensure-chromium.mjs']).status !== 0) {
    problems.push('consumer: Chromium is missing and could not be installed (see above)');
    totals.failed++;
  } else {
    vitestSuite('consumer', 'test/consumer/vitest.config.ts');
  }
}

if (only.has('linux')) {
  section('Real guest: Linux aarch64 under QEMU through vhost-user');
  vitestSuite('linux', 'e2e/linux/vitest.config.ts');
}

// Summary ------------------------------------------------------------------
section('Summary');
for (const p of problems) console.log(`- ${p}`);
console.log(`${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
process.exit(totals.failed > 0 || problems.length > 0 ? 1 : 0);
