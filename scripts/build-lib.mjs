#!/usr/bin/env node
// The library build (`npm run build:lib`; also `prepare` and `prepack`, so
// `npm install` in a clone, `npm pack` and `npm publish` all produce dist/).
//
// tsc emits src/ to dist/: ES modules, .d.ts, source maps with their sources
// inlined (tsconfig.lib.json), imports rewritten from .ts to .js by
// rewriteRelativeImportExtensions. tsc leaves the string in
// `new Worker(new URL('./device-worker.ts', import.meta.url), {type: 'module'})`
// alone, so this script points it at the emitted .js: bundlers (Vite,
// webpack 5, rspack, esbuild) recognise exactly that expression and emit the
// worker as its own chunk, and a plain <script type=module> page loads the
// file beside worker-host.js.
//
// Then it checks what it built, because a mistake here only shows in someone
// else's app: every worker URL names a file that exists, and nothing the
// browser entry (dist/index.js) reaches imports a `node:` module.
//
// `npm pack` runs both prepack and prepare; the second run sees dist/ newer
// than every input and skips (`--force` rebuilds anyway).

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
// Written after a build that passed its checks; kept out of dist/ so it does not ship.
const stamp = join(root, '.cache', 'build-lib.stamp');

function* walk(dir, suffix) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* walk(path, suffix);
    else if (path.endsWith(suffix)) yield path;
  }
}

/** The newest modification time among the build's inputs. */
function newestInput() {
  let newest = 0;
  const inputs = [...walk(join(root, 'src'), '.ts'), join(root, 'tsconfig.json'), join(root, 'tsconfig.lib.json'), fileURLToPath(import.meta.url)];
  for (const path of inputs) newest = Math.max(newest, statSync(path).mtimeMs);
  return newest;
}

if (!process.argv.includes('--force') && existsSync(stamp) && existsSync(join(dist, 'index.js')) && statSync(stamp).mtimeMs >= newestInput()) {
  console.log('build-lib: dist/ is up to date');
  process.exit(0);
}

const tscBin = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
if (!existsSync(tscBin)) {
  console.error('build-lib: TypeScript is not installed (a devDependency): run `npm install` first');
  process.exit(1);
}
rmSync(dist, { recursive: true, force: true });
rmSync(stamp, { force: true });
const tsc = spawnSync(process.execPath, [tscBin, '-p', 'tsconfig.lib.json'], { cwd: root, stdio: 'inherit' });
if (tsc.status !== 0) {
  console.error('build-lib: tsc failed; dist/ is incomplete');
  process.exit(tsc.status ?? 1);
}

const workerUrl = /new URL\((['"])(\.{1,2}\/[^'"]+)\.ts\1, import\.meta\.url\)/g;
const problems = [];
const workerFiles = [];
for (const path of walk(dist, '.js')) {
  const text = readFileSync(path, 'utf8');
  const next = text.replace(workerUrl, (_m, q, p) => {
    const target = resolve(dirname(path), `${p}.js`);
    workerFiles.push(target);
    if (!existsSync(target)) problems.push(`${relative(root, path)}: worker ${p}.js was not emitted`);
    return `new URL(${q}${p}.js${q}, import.meta.url)`;
  });
  if (next !== text) writeFileSync(path, next);
}
if (workerFiles.length === 0) problems.push('no worker URL found: worker-host.js would not find the device worker');

// The browser entry's import graph and its workers', followed through relative imports.
const importRe = /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*(['"])([^'"]+)\1|import\((['"])([^'"]+)\3\)/gm;
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const runtimeDependencies = new Set(Object.keys(manifest.dependencies ?? {}));
const seen = new Set();
/** Walk `entries`' import graph; bare imports must be in `allowed`. */
function checkGraph(entries, allowed, what) {
  const queue = [...entries];
  while (queue.length > 0) {
    const file = queue.pop();
    if (seen.has(file)) continue;
    seen.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(importRe)) {
      const spec = m[2] ?? m[4];
      if (spec.startsWith('.')) queue.push(resolve(dirname(file), spec));
      // A runtime dependency (idb-keyval) installs with the package; anything
      // else (node:*, a devDependency) would break a browser build.
      else if (!allowed.has(spec)) {
        problems.push(`${relative(root, file)} imports ${spec}: ${what} may need only ${[...allowed].join(', ') || 'nothing outside the package'}, never Node`);
      }
    }
  }
}
checkGraph([join(dist, 'index.js'), ...workerFiles.filter((f) => existsSync(f))], runtimeDependencies, 'the browser entry');
// 'virtio-blk-web/wasi' may also import its optional peer, the WASI shim;
// walked second, so the modules it shares with the main entry were already
// held to the main entry's rule.
checkGraph([join(dist, 'wasi', 'index.js')], new Set([...runtimeDependencies, ...Object.keys(manifest.peerDependencies ?? {})]), 'the wasi entry');

if (problems.length > 0) {
  for (const p of problems) console.error(`build-lib: ${p}`);
  process.exit(1);
}
mkdirSync(dirname(stamp), { recursive: true });
writeFileSync(stamp, `${new Date().toISOString()}\n`);
console.log(`build-lib: dist/ written (${seen.size} modules reach the browser entry; ${workerFiles.length} worker URL(s) rewritten)`);
