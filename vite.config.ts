// Vite serves the demo (`npm start`) and the e2e harness pages.
//
// SharedArrayBuffer (and so a shared WebAssembly.Memory and the worker host)
// needs a cross-origin isolated page: COOP `same-origin` + COEP `require-corp`
// on the document (DESIGN.md: no other flag needed in Chromium). Both dev and
// preview send them on every response, through one middleware instead of
// `server.headers`, so that a page can opt out with the query parameter
// `?isolation=off`: the e2e test of the same-thread host needs a page that is
// NOT isolated, served by the same server. Subresources of an isolated page
// are same-origin, which `require-corp` accepts without a CORP header.

import { readdirSync } from 'node:fs';
import { defineConfig, type Connect, type Plugin } from 'vite';
import { labAssets } from './scripts/build-lab-image.plugin.ts';

/** Query parameter that turns cross-origin isolation off for one document. */
export const ISOLATION_OFF_QUERY = 'isolation=off';

function crossOriginIsolation(): Plugin {
  const middleware: Connect.NextHandleFunction = (req, res, next) => {
    if (!req.url?.includes(ISOLATION_OFF_QUERY)) {
      res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
      res.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
    }
    next();
  };
  return {
    name: 'cross-origin-isolation',
    configureServer: (server) => void server.middlewares.use(middleware),
    configurePreviewServer: (server) => void server.middlewares.use(middleware),
  };
}

/** The pages to build: the VM lab (index) and the synthetic lab, plus the e2e harness pages for E2E_SERVER=preview runs. */
function buildInputs(): Record<string, string> {
  const inputs: Record<string, string> = { index: 'index.html', lab: 'lab.html' };
  if (process.env.E2E_BUILD_HARNESS) {
    for (const file of readdirSync('e2e/harness')) {
      if (file.endsWith('.html')) inputs[`harness-${file.slice(0, -5)}`] = `e2e/harness/${file}`;
    }
  }
  return inputs;
}

export default defineConfig({
  // labAssets: the VM page's image, BIOS, kernel and initramfs from the gitignored caches.
  plugins: [crossOriginIsolation(), labAssets()],
  server: {
    host: '127.0.0.1',
    strictPort: true,
    // Under test, an edit elsewhere in the tree must not reload a page in
    // the middle of a test (no hot-update client, no file watching).
    ...(process.env.E2E_NO_HMR ? { hmr: false, watch: null } : {}),
  },
  preview: { host: '127.0.0.1', strictPort: true },
  // Bare imports that reach the browser, pre-bundled when the server starts.
  // Discovered later instead (the first IndexedDB disk imports idb-keyval),
  // Vite re-optimizes and reloads every open page: in a full e2e run that
  // killed the long reset-race test's page mid-run, three runs out of three.
  optimizeDeps: { include: ['idb-keyval'], noDiscovery: true },
  // The device worker and the guest (vCPU) worker are ES modules.
  worker: { format: 'es' },
  build: {
    target: 'es2022',
    outDir: 'build',
    rolldownOptions: { input: buildInputs() },
  },
});
