// The Vite plugin that serves the VM page's assets (index.html, src/vm) from the
// gitignored caches scripts/build-lab-image.ts fills: the packed lab image
// at /lab-assets/image/, and SeaBIOS, the kernel and the initramfs the v86
// provisioning made at /lab-assets/v86/{bios,kernel,initrd}. It imports no
// provisioning code (vite.config.ts loads it for every page and test): the
// build records the v86 files' paths in .cache/lab-image/assets.json.

import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Connect, Plugin } from 'vite';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const LAB_CACHE_DIR = join(repoRoot, '.cache', 'lab-image');
export const LAB_PACKED_DIR = join(LAB_CACHE_DIR, 'packed');
/** The v86 files the build used: { bios, kernel, initrd } → absolute paths. */
export const LAB_ASSETS_FILE = join(LAB_CACHE_DIR, 'assets.json');
/** URL prefix the plugin serves under. */
export const LAB_ASSETS_PATH = '/lab-assets/';

/** What /lab-assets/ serves: image/… from the packed image; v86/bios, v86/kernel, v86/initrd from the v86 provisioning. */
function assetFile(urlPath: string): string | null {
  const rel = decodeURIComponent(urlPath.slice(LAB_ASSETS_PATH.length).split('?')[0]!);
  const [top, ...rest] = rel.split('/');
  if (top === 'v86') {
    if (!existsSync(LAB_ASSETS_FILE)) return null;
    const v86 = JSON.parse(readFileSync(LAB_ASSETS_FILE, 'utf8')) as Record<string, string>;
    const path = rest.length === 1 && Object.hasOwn(v86, rest[0]!) ? v86[rest[0]!] : undefined;
    return typeof path === 'string' ? path : null;
  }
  if (top !== 'image' || rest.length === 0) return null;
  const file = normalize(join(LAB_PACKED_DIR, ...rest));
  return file.startsWith(LAB_PACKED_DIR + sep) ? file : null;
}

const CONTENT_TYPES: Record<string, string> = { '.json': 'application/json' };

/**
 * Vite plugin: serves /lab-assets/ from the gitignored caches (dev and
 * preview). A missing file is a 404 whose body names the command that
 * provisions it, which the page shows.
 */
export function labAssets(): Plugin {
  const middleware: Connect.NextHandleFunction = (req, res, next) => {
    if (!req.url?.startsWith(LAB_ASSETS_PATH)) return next();
    const file = assetFile(req.url);
    if (!file || !existsSync(file) || !statSync(file).isFile()) {
      res.statusCode = 404;
      res.setHeader('Content-Type', 'text/plain');
      res.end(`${req.url} is not provisioned: run \`npx tsx scripts/build-lab-image.ts\` (npm start runs it)\n`);
      return;
    }
    res.setHeader('Content-Type', CONTENT_TYPES[extname(file)] ?? 'application/octet-stream');
    res.setHeader('Content-Length', String(statSync(file).size));
    res.setHeader('Cache-Control', 'no-cache');
    createReadStream(file).pipe(res);
  };
  return {
    name: 'lab-assets',
    configureServer: (server) => void server.middlewares.use(middleware),
    configurePreviewServer: (server) => void server.middlewares.use(middleware),
  };
}

