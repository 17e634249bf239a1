#!/usr/bin/env node
// The library build: tsc emits src/ to dist/ (imports rewritten from .ts to
// .js by rewriteRelativeImportExtensions). Worker entry points are named in
// `new URL('./x.ts', import.meta.url)`, which tsc leaves alone, so point
// those at the emitted .js files too; bundlers (Vite, webpack 5, esbuild)
// follow the URL pattern and bundle the worker.
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const tsc = spawnSync('npx', ['tsc', '-p', 'tsconfig.lib.json'], { cwd: root, stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else if (path.endsWith('.js')) yield path;
  }
}

let rewritten = 0;
for (const path of files(join(root, 'dist'))) {
  const text = readFileSync(path, 'utf8');
  const next = text.replace(/new URL\((['"])(\.{1,2}\/[^'"]+)\.ts\1, import\.meta\.url\)/g, (_m, q, p) => `new URL(${q}${p}.js${q}, import.meta.url)`);
  if (next !== text) {
    writeFileSync(path, next);
    rewritten++;
  }
}
console.log(`build-lib: dist/ written; worker URLs rewritten in ${rewritten} file(s)`);
