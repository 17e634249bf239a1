#!/usr/bin/env node
// CLI entry. The CLI is TypeScript (src/host/vhost-user/cli.ts), run through
// tsx's loader so that the repository works without a build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/host/vhost-user/cli.ts');
process.exitCode = await main(process.argv.slice(2));
