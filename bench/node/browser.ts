// The browser and the server a benchmark run needs: Vite (with the project's
// vite.config.ts, so COOP/COEP are on) on a free port, and headless Chromium
// with a persistent profile in a fresh temporary directory.
//
// Persistent, not a private context: OPFS in a private profile is 100–200×
// slower (DESIGN.md), which would make every OPFS row wrong. Chromium is
// Debian's, through e2e/chromium.ts, as for the e2e tests.

import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright';
import { createServer, type ViteDevServer } from 'vite';
import { chromiumArgs, chromiumExecutable } from '../../e2e/chromium.ts';

export interface BenchBrowser {
  readonly page: Page;
  readonly context: BrowserContext;
  readonly profileDir: string;
  readonly baseUrl: string;
  close(): Promise<void>;
}

/** A TCP port nobody listens on right now. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function startVite(root: string): Promise<{ server: ViteDevServer; baseUrl: string }> {
  const port = await freePort();
  const server = await createServer({
    root,
    configFile: join(root, 'vite.config.ts'),
    logLevel: 'warn',
    // No HMR and no dependency discovery: a file saved (or a dependency found)
    // mid-run must not reload the page under a running benchmark.
    server: { port, strictPort: true, host: '127.0.0.1', hmr: false, watch: null },
    optimizeDeps: { noDiscovery: true },
  });
  await server.listen();
  return { server, baseUrl: `http://127.0.0.1:${port}` };
}

/** Start Vite and Chromium; `extraArgs` are added to the e2e flags. */
export async function openBenchBrowser(root: string, extraArgs: string[] = []): Promise<BenchBrowser> {
  const { server, baseUrl } = await startVite(root);
  const profileDir = await mkdtemp(join(tmpdir(), 'virtio-blk-web-bench-'));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profileDir, {
      headless: true,
      executablePath: chromiumExecutable(),
      args: [...chromiumArgs(), ...extraArgs],
      baseURL: baseUrl,
    });
  } catch (err) {
    await server.close();
    await rm(profileDir, { recursive: true, force: true });
    throw err;
  }
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (err) => process.stderr.write(`[page error] ${err.stack ?? err.message}\n`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' || process.env.BENCH_CONSOLE) process.stderr.write(`[console.${msg.type()}] ${msg.text()}\n`);
  });
  return {
    page,
    context,
    profileDir,
    baseUrl,
    async close() {
      await context.close().catch(() => undefined);
      await server.close();
      await rm(profileDir, { recursive: true, force: true });
    },
  };
}

/** Default limit of one page call: a row takes seconds, so anything near this is a hang. */
const CALL_TIMEOUT_MS = 120_000;

/** Call `window.bench.call(op, args)` on the benchmark page; rejects after `timeoutMs` rather than hang. */
export async function callPage<T>(page: Page, op: string, args?: unknown, timeoutMs = CALL_TIMEOUT_MS): Promise<T> {
  if (process.env.BENCH_TRACE) process.stderr.write(`[bench] ${op}\n`);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`bench op "${op}" did not finish in ${timeoutMs / 1000} s`)), timeoutMs);
  });
  try {
    return await Promise.race([page.evaluate(([o, a]) => window.bench!.call(o, a), [op, args] as const) as Promise<T>, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
