// The package as a stranger gets it (`npm run test:consumer`, and part of
// `npm test`): `npm pack`, then install the tarball into scratch projects in
// the system temp directory, outside this repository, so nothing resolves
// through the repository's own node_modules, src/ or dist/.
//
//   1. The tarball: dist/ with .d.ts, source maps and the device worker; the
//      addon's sources but none of its build outputs; no TypeScript sources.
//   2. A scratch Vite app: `vite build` bundles the package and emits the
//      device worker as its own chunk; `tsc` type-checks a consumer's code
//      against the shipped .d.ts with no @types/node.
//   3. Debian's Chromium opens the built app and a plain <script type=module>
//      page (import map onto node_modules, no bundler), both served with
//      COOP/COEP: a worker-hosted OPFS disk answers its registers and serves a
//      driver's write and read.
//   4. A scratch Node project: the CLI runs from the installed package without
//      tsx; with no C compiler it says so in one line; then it builds its addon
//      and answers a vhost-user handshake (features, protocol features, the
//      config space's capacity) on a unix socket.

import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { chromium, type BrowserContext } from 'playwright';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { chromiumArgs, chromiumExecutable } from '../../e2e/chromium.ts';

const repo = new URL('../..', import.meta.url).pathname;
const appSources = new URL('./app/', import.meta.url).pathname;
const scratch = mkdtempSync(join(tmpdir(), 'virtio-blk-web-consumer-'));
const webApp = join(scratch, 'web');
const nodeApp = join(scratch, 'node');
let tarball = '';
let packedFiles: string[] = [];

/** The repository's own version of a dev tool, so the scratch install is served from npm's cache. */
function repoVersion(name: string): string {
  return JSON.parse(readFileSync(join(repo, 'node_modules', name, 'package.json'), 'utf8')).version;
}

function npm(cwd: string, args: string[]): string {
  const r = spawnSync('npm', [...args, '--no-audit', '--no-fund', '--prefer-offline'], { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npm ${args.join(' ')} failed in ${cwd}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

beforeAll(() => {
  // prepack/prepare print to stdout before npm's JSON: read from the JSON's first line.
  const out = npm(repo, ['pack', '--json', '--pack-destination', scratch]);
  const [packed] = JSON.parse(out.slice(out.search(/^\[/m)));
  tarball = join(scratch, packed.filename);
  packedFiles = packed.files.map((f: { path: string }) => f.path);
}, 300_000);

afterAll(() => {
  if (!process.env.CONSUMER_KEEP) rmSync(scratch, { recursive: true, force: true });
  else console.log(`consumer test: scratch projects kept in ${scratch}`);
});

describe('the tarball', () => {
  test('ships dist/ with types, source maps and the device worker', () => {
    for (const file of ['dist/index.js', 'dist/index.d.ts', 'dist/index.js.map', 'dist/node.js', 'dist/node.d.ts']) {
      expect(packedFiles).toContain(file);
    }
    expect(packedFiles).toContain('dist/host/browser/device-worker.js');
    expect(packedFiles).toContain('dist/host/vhost-user/cli.js');
    const workerHost = execFileSync('tar', ['-xOzf', tarball, 'package/dist/host/browser/worker-host.js'], { encoding: 'utf8' });
    expect(workerHost).toContain("new Worker(new URL('./device-worker.js', import.meta.url)");
    // A map carries its sources, since src/ does not ship.
    const map = JSON.parse(execFileSync('tar', ['-xOzf', tarball, 'package/dist/index.js.map'], { encoding: 'utf8' }));
    expect(map.sourcesContent?.[0]).toContain('export');
  });

  test('ships the addon sources, bin, README and LICENSE, and no build outputs or TypeScript sources', () => {
    for (const file of ['native/binding.gyp', 'native/vhost_user.c', 'bin/virtio-blk-web.mjs', 'README.md', 'LICENSE']) {
      expect(packedFiles).toContain(file);
    }
    expect(packedFiles.filter((f) => f.startsWith('native/build/') || /\.(o|node)$/.test(f))).toEqual([]);
    expect(packedFiles.filter((f) => f.startsWith('src/'))).toEqual([]);
  });

  test('package.json: every runtime dependency is imported by dist/, node-gyp is there for the addon', () => {
    const pkg = JSON.parse(execFileSync('tar', ['-xOzf', tarball, 'package/package.json'], { encoding: 'utf8' }));
    const shipped = execFileSync('tar', ['-xOzf', tarball, '--wildcards', 'package/dist/*.js'], { encoding: 'utf8', maxBuffer: 64 << 20 });
    const unused = Object.keys(pkg.dependencies ?? {}).filter((name) => !shipped.includes(`from '${name}'`) && !shipped.includes(`from "${name}"`));
    expect(unused).toEqual([]);
    expect(Object.keys(pkg.optionalDependencies ?? {})).toContain('node-gyp');
  });

  test("README's relative links name files that exist (docs/ ships with the package)", () => {
    const readme = execFileSync('tar', ['-xOzf', tarball, 'package/README.md'], { encoding: 'utf8' });
    const targets = [...readme.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)].map((m) => normalize(m[1])).filter((t) => !/^[a-z]+:/i.test(t));
    const tracked = new Set(execFileSync('git', ['ls-files'], { cwd: repo, encoding: 'utf8' }).split('\n'));
    expect(targets.filter((t) => !tracked.has(t) && !packedFiles.includes(t))).toEqual([]);
    expect(targets.filter((t) => t.startsWith('docs/') && !packedFiles.includes(t))).toEqual([]);
  });

  test('the description promises only backends that ship', () => {
    const pkg = JSON.parse(execFileSync('tar', ['-xOzf', tarball, 'package/package.json'], { encoding: 'utf8' }));
    const backends = packedFiles.filter((f) => f.startsWith('dist/backends/') && f.endsWith('.js')).join(' ');
    const claims: [RegExp, RegExp][] = [
      [/IndexedDB/i, /idb|indexeddb/i],
      [/HTTP/, /http/i],
      [/overlay|copy-on-write/i, /overlay|cow/i],
    ];
    for (const [claim, file] of claims) {
      if (claim.test(pkg.description)) expect(backends, `description says ${claim}`).toMatch(file);
    }
  });
});

describe('a Vite app', () => {
  beforeAll(() => {
    mkdirSync(webApp, { recursive: true });
    for (const file of ['check.js', 'index.html', 'plain.html', 'vite.config.js']) copyFileSync(join(appSources, file), join(webApp, file));
    writeFileSync(
      join(webApp, 'package.json'),
      JSON.stringify({
        name: 'consumer-web',
        private: true,
        type: 'module',
        dependencies: { 'virtio-blk-web': `file:${tarball}` },
        devDependencies: { vite: repoVersion('vite'), typescript: repoVersion('typescript') },
      }),
    );
    npm(webApp, ['install']);
  }, 300_000);

  test('vite build bundles the package and emits the device worker as a chunk', () => {
    const r = spawnSync(process.execPath, [join(webApp, 'node_modules/vite/bin/vite.js'), 'build'], { cwd: webApp, encoding: 'utf8' });
    expect(r.stderr + r.stdout).not.toMatch(/failed to resolve/i);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/device-worker[-\w]*\.js/);
  }, 120_000);

  test('a consumer type-checks against the shipped .d.ts, strict and without @types/node', () => {
    writeFileSync(
      join(webApp, 'typecheck.ts'),
      [
        "import { createDisk, VirtioBlkDriver, type CreateDiskOptions, type Disk, type BlockBackend } from 'virtio-blk-web';",
        "const options: CreateDiskOptions = { memory: [], backend: { kind: 'memory', size: 1 << 20 } };",
        'export const disk: Promise<Disk> = createDisk(options);',
        'export type Init = typeof VirtioBlkDriver.init;',
        'export type Read = BlockBackend["read"];',
      ].join('\n'),
    );
    writeFileSync(
      join(webApp, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'ESNext', moduleResolution: 'Bundler', strict: true, noEmit: true, lib: ['ES2022', 'DOM'], types: [] },
        files: ['typecheck.ts'],
      }),
    );
    const r = spawnSync(process.execPath, [join(webApp, 'node_modules/typescript/bin/tsc'), '-p', '.'], { cwd: webApp, encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  }, 120_000);

  describe('in Chromium, cross-origin isolated', () => {
    let server: Server;
    let context: BrowserContext;
    let profile: string;
    let origin = '';
    let chromiumVersion = '';

    beforeAll(async () => {
      server = isolatedStaticServer(webApp);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const address = server.address();
      origin = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
      profile = mkdtempSync(join(tmpdir(), 'virtio-blk-web-consumer-profile-'));
      // A persistent profile: OPFS in a private one is slow and not durable (DESIGN.md).
      context = await chromium.launchPersistentContext(profile, {
        headless: true,
        executablePath: chromiumExecutable(),
        args: chromiumArgs(),
      });
      chromiumVersion = context.browser()?.version() ?? (await browserVersion(context));
      console.log(`consumer test: Chromium ${chromiumVersion}`);
    }, 120_000);

    afterAll(async () => {
      await context?.close();
      await new Promise((resolve) => server?.close(resolve));
      if (profile) rmSync(profile, { recursive: true, force: true });
    });

    test('README names no Chromium version other than the one the tests ran', () => {
      const readme = readFileSync(join(repo, 'README.md'), 'utf8');
      const claimed = [...readme.matchAll(/[Tt]ested (?:in|with|on) (?:headless )?Chromium (\d+)/g)].map((m) => m[1]);
      expect(claimed.filter((major) => major !== chromiumVersion.split('.')[0])).toEqual([]);
    });

    for (const [what, path] of [
      ['the Vite build', '/app/'],
      ['a plain <script type=module> page', '/plain.html'],
    ] as const) {
      test(`${what}: a worker-hosted disk answers its registers and serves a write and a read`, async () => {
        const page = await context.newPage();
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(e.message));
        page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') && errors.push(m.text()));
        // Every file the page asks for must be there (a browser's own /favicon.ico aside).
        page.on('response', (r) => r.status() >= 400 && !r.url().endsWith('/favicon.ico') && errors.push(`${r.status()} ${r.url()}`));
        await page.goto(`${origin}${path}`);
        await page.waitForFunction(() => document.body?.dataset.result, null, { timeout: 60_000 });
        const result = JSON.parse((await page.evaluate(() => document.body.dataset.result)) ?? '{}');
        await page.close();
        expect(errors).toEqual([]);
        expect(result).toMatchObject({
          crossOriginIsolated: true,
          host: 'worker',
          magic: 0x74726976,
          version: 2,
          deviceId: 2,
          capacitySectors: 2048,
          roundTrip: true,
        });
      }, 90_000);
    }
  });
});

describe('a Node project: the CLI', () => {
  const cli = () => join(nodeApp, 'node_modules', '.bin', 'virtio-blk-web');

  beforeAll(() => {
    mkdirSync(nodeApp, { recursive: true });
    writeFileSync(join(nodeApp, 'package.json'), JSON.stringify({ name: 'consumer-node', private: true, type: 'module' }));
    npm(nodeApp, ['install', tarball]);
  }, 300_000);

  test('--help runs from the installed package, with no TypeScript loader installed', () => {
    expect(existsSync(join(nodeApp, 'node_modules', 'tsx'))).toBe(false);
    const r = spawnSync(cli(), ['--help'], { cwd: nodeApp, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^commands:\n {2}virtio-blk-web vhost-user --socket PATH --image FILE/);
    expect(r.stdout).toMatch(/^ {2}virtio-blk-web pack IMAGE OUTDIR/m);
    expect(r.stdout).toMatch(/^usage: virtio-blk-web vhost-user --socket PATH --image FILE/m);
  });

  test('with no C compiler, the addon build fails with one clear message', () => {
    // PATH holds python3 and make but no cc: node-gyp configures, make cannot compile.
    const bin = join(scratch, 'no-cc-bin');
    mkdirSync(bin, { recursive: true });
    for (const tool of ['python3', 'make']) symlinkSync(execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim(), join(bin, tool));
    const image = join(scratch, 'no-cc.img');
    writeFileSync(image, new Uint8Array(1 << 20));
    const socket = join(scratch, 'no-cc.sock');
    const r = spawnSync(process.execPath, [cli(), 'vhost-user', '--socket', socket, '--image', image], {
      cwd: nodeApp,
      encoding: 'utf8',
      env: { ...process.env, PATH: bin, CC: '', CXX: '' },
      timeout: 120_000,
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^virtio-blk-web: building the vhost-user addon failed \(needs python3, make and a C compiler\)/);
    expect(existsSync(socket)).toBe(false);
  }, 150_000);

  test('builds its addon on first use and answers a vhost-user handshake', async () => {
    const image = join(scratch, 'disk.img');
    writeFileSync(image, new Uint8Array(4 << 20));
    const socket = join(scratch, 'vbw.sock');
    const child = spawn(process.execPath, [cli(), 'vhost-user', '--socket', socket, '--image', image, '--once'], { cwd: nodeApp });
    try {
      await waitForStderr(child, /serving .* on /, 150_000);
      expect(existsSync(join(nodeApp, 'node_modules/virtio-blk-web/native/build/Release/vhost_user.node'))).toBe(true);
      const frontEnd = await VhostUserFrontEnd.connect(socket);
      frontEnd.send(Req.SetOwner);
      const features = (await frontEnd.request(Req.GetFeatures)).readBigUInt64LE(0);
      expect(features & (1n << 32n)).toBe(1n << 32n); // VIRTIO_F_VERSION_1
      expect(features & (1n << 30n)).toBe(1n << 30n); // VHOST_USER_F_PROTOCOL_FEATURES
      const protocol = (await frontEnd.request(Req.GetProtocolFeatures)).readBigUInt64LE(0);
      expect(protocol & (1n << 9n)).toBe(1n << 9n); // CONFIG: QEMU's vhost-user-blk needs it
      frontEnd.send(Req.SetProtocolFeatures, u64(protocol & (1n << 9n)));
      // GET_CONFIG: offset 0, size 8, flags 0, then 8 bytes: the capacity in sectors.
      const config = await frontEnd.request(Req.GetConfig, Buffer.concat([u32(0), u32(8), u32(0), Buffer.alloc(8)]));
      expect(config.readBigUInt64LE(12)).toBe(BigInt((4 << 20) / 512));
      frontEnd.close();
      // --once: the server exits when its front-end leaves.
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      expect(code).toBe(0);
    } finally {
      child.kill();
    }
  }, 200_000);
});

// --- helpers ------------------------------------------------------------------------------

/** Static files from `dir`, /app/* from its Vite build, every response cross-origin isolated. */
function isolatedStaticServer(dir: string): Server {
  const types: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.map': 'application/json', '.wasm': 'application/wasm' };
  return createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = url.pathname.startsWith('/app/') ? join('build', url.pathname.slice(5)) : url.pathname.slice(1);
    let file = join(dir, normalize(path));
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
    res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
    res.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
    if (!file.startsWith(dir) || !existsSync(file)) {
      res.statusCode = 404;
      res.end('not found');
      return;
    }
    res.setHeader('Content-Type', types[extname(file)] ?? 'application/octet-stream');
    res.end(readFileSync(file));
  });
}

async function browserVersion(context: BrowserContext): Promise<string> {
  const page = await context.newPage();
  const ua = await page.evaluate(() => navigator.userAgent);
  await page.close();
  return /Chrome\/([\d.]+)/.exec(ua)?.[1] ?? ua;
}

function waitForStderr(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`no ${pattern} on stderr within ${timeoutMs} ms:\n${text}`)), timeoutMs);
    child.stderr?.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (pattern.test(text)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the CLI exited (${code}) before serving:\n${text}`));
    });
  });
}

const Req = { GetFeatures: 1, SetOwner: 3, GetProtocolFeatures: 15, SetProtocolFeatures: 16, GetConfig: 24 } as const;
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
};

/** The front-end side of vhost-user, just enough for a handshake that passes no fds. */
class VhostUserFrontEnd {
  #received = Buffer.alloc(0);
  #waiting: (() => void) | null = null;

  private constructor(private readonly socket: ReturnType<typeof connect>) {
    socket.on('data', (chunk: Buffer) => {
      this.#received = Buffer.concat([this.#received, chunk]);
      this.#waiting?.();
    });
  }

  static connect(path: string): Promise<VhostUserFrontEnd> {
    return new Promise((resolve, reject) => {
      const socket = connect(path, () => resolve(new VhostUserFrontEnd(socket)));
      socket.once('error', reject);
    });
  }

  /** A message with header flags = version 1. */
  send(request: number, payload = Buffer.alloc(0)): void {
    this.socket.write(Buffer.concat([u32(request), u32(0x1), u32(payload.length), payload]));
  }

  /** Send and return the reply's payload (its header must carry REPLY and the request's code). */
  async request(request: number, payload = Buffer.alloc(0)): Promise<Buffer> {
    this.send(request, payload);
    for (;;) {
      if (this.#received.length >= 12) {
        const size = this.#received.readUInt32LE(8);
        if (this.#received.length >= 12 + size) {
          expect(this.#received.readUInt32LE(0)).toBe(request);
          expect(this.#received.readUInt32LE(4) & 0x7).toBe(0x5);
          const reply = this.#received.subarray(12, 12 + size);
          this.#received = this.#received.subarray(12 + size);
          return reply;
        }
      }
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no reply to request ${request}`)), 10_000);
        this.#waiting = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  close(): void {
    this.socket.end();
  }
}
