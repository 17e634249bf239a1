#!/usr/bin/env node
// CLI entry. Installed from npm, the CLI is plain JavaScript from dist/
// (dist/host/vhost-user/cli.js); the package ships no TypeScript and needs
// no loader. In a repository checkout (src/ beside bin/, tsx installed as a
// devDependency) it runs the TypeScript sources instead, so the tests drive
// the code as it is now and not a dist/ left over from an earlier build.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const source = new URL('../src/host/vhost-user/cli.ts', import.meta.url);
const built = new URL('../dist/host/vhost-user/cli.js', import.meta.url);

function hasTsx() {
  try {
    createRequire(import.meta.url).resolve('tsx/esm/api');
    return true;
  } catch {
    return false;
  }
}

let entry = built;
if (existsSync(fileURLToPath(source)) && hasTsx()) {
  const { register } = await import('tsx/esm/api');
  register();
  entry = source;
} else if (!existsSync(fileURLToPath(built))) {
  process.stderr.write('virtio-blk-web: dist/ is missing: run `npm run build:lib` in the package directory\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
