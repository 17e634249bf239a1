// The project's own fault-injecting HTTP server for the HTTP backends' tests:
// loopback only, everything in memory, and scripted misbehaviour.
//
// It serves Range images under /images/NAME (RFC 9110 single byte ranges,
// If-Range against the current ETag or Last-Modified, 416 past the end) and
// chunked images, packed by the real `pack` core, under /chunked/NAME/. Tests
// queue faults per path with `inject()`: each rule fires on the next matching
// requests, `times` times, then the server behaves again. Every request is
// logged (`log`) and announced (`nextRequest()`), so tests synchronise on what
// the server saw, never on time. A stalled answer is held until the client
// gives up (its abort is logged); `close()` ends every connection.
//
// The browser tests run it cross-origin to the page, so it sends what a
// hosted image needs (docs/http.md): CORS with the Range/If-Range request
// headers allowed and Content-Range/ETag/Last-Modified exposed, plus CORP,
// COOP and COEP. PUT stores an image (?form=chunked packs it) so that a
// browser-side contract factory can create images.

import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { MANIFEST_FILE, type ChunkedManifest } from '../../src/pack/manifest.ts';
import { manifestText, packStream } from '../../src/pack/pack.ts';

export type Fault =
  /** Close the connection before any answer. */
  | { kind: 'drop' }
  /** Answer with this status and a short text body. */
  | { kind: 'status'; status: number }
  /** Never answer: hold the request until the client aborts it. */
  | { kind: 'stall' }
  /** Headers and half the body, then hold until the client aborts. */
  | { kind: 'stall-body' }
  /** Declare the full length, send half the body, close the connection. */
  | { kind: 'truncate' }
  /** Half the body without a Content-Length (chunked), ending cleanly: a short body. */
  | { kind: 'short' }
  /** 206, but the Content-Range (and the bytes) start 512 bytes later than asked. */
  | { kind: 'wrong-range' }
  /** Ignore Range: 200 with the whole image. */
  | { kind: 'no-range' }
  /** gzip the ranged body and say so (Content-Encoding: gzip). */
  | { kind: 'gzip' }
  /** Flip one byte in the body. */
  | { kind: 'corrupt' }
  /** 404. */
  | { kind: 'missing' };

export interface RequestRecord {
  method: string;
  path: string;
  range: string | null;
  ifRange: string | null;
  /** The fault applied to this request, if any. */
  fault: Fault['kind'] | null;
  status: number | null;
  /** The client went away before the answer was complete. */
  aborted: boolean;
}

export interface ImageOptions {
  /** Strong ETag (default), weak ETag, or none. */
  etag?: 'strong' | 'weak' | 'none';
  /** Send Last-Modified. Default true. */
  lastModified?: boolean;
}

/** An image's bytes: a plain array, or a SparseBytes too large for one. */
export interface ImageBytes {
  readonly length: number;
  subarray(from: number, to: number): Uint8Array;
}

/**
 * A sparse image of any size (over 4 GiB: larger than a Node Buffer may be):
 * zeroes except for the extents given. `subarray` builds the bytes of a range
 * on demand; a range without data is a view of one shared zero buffer.
 */
export class SparseBytes implements ImageBytes {
  readonly #extents: Array<{ offset: number; bytes: Uint8Array }>;
  #zero = new Uint8Array(0);
  constructor(
    readonly length: number,
    extents: Array<{ offset: number; bytes: Uint8Array }>,
  ) {
    this.#extents = extents;
    for (const e of extents) if (e.offset < 0 || e.offset + e.bytes.length > length) throw new RangeError('extent outside the image');
  }

  subarray(from: number, to = this.length): Uint8Array {
    const end = Math.min(to, this.length);
    const n = Math.max(0, end - from);
    const hits = this.#extents.filter((e) => e.offset < end && e.offset + e.bytes.length > from);
    if (hits.length === 0) {
      if (this.#zero.length < n) this.#zero = new Uint8Array(n);
      return this.#zero.subarray(0, n);
    }
    const out = new Uint8Array(n);
    for (const e of hits) {
      const a = Math.max(from, e.offset);
      const b = Math.min(end, e.offset + e.bytes.length);
      out.set(e.bytes.subarray(a - e.offset, b - e.offset), a - from);
    }
    return out;
  }
}

interface Image {
  bytes: ImageBytes;
  version: number;
  options: ImageOptions;
}

interface Rule {
  path: string | RegExp;
  fault: Fault;
  times: number;
}

/** Headers a cross-origin, cross-origin-isolated page needs from an image host. */
export const HOSTED_IMAGE_HEADERS: Readonly<Record<string, string>> = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Expose-Headers': 'Content-Range, Content-Length, Content-Encoding, ETag, Last-Modified, Accept-Ranges',
  'Cross-Origin-Resource-Policy': 'cross-origin',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

const PREFLIGHT_HEADERS: Readonly<Record<string, string>> = {
  'Access-Control-Allow-Methods': 'GET, HEAD, PUT, OPTIONS',
  'Access-Control-Allow-Headers': 'Range, If-Range, Content-Type, Authorization',
  'Access-Control-Max-Age': '600',
};

/** Upload bodies are capped so a runaway client cannot fill memory. */
const MAX_UPLOAD_BYTES = 256 * 1024 * 1024;

export class FaultServer {
  readonly log: RequestRecord[] = [];
  readonly #server: Server;
  readonly #images = new Map<string, Image>();
  /** Static files (chunked images): path → bytes. */
  readonly #files = new Map<string, Uint8Array>();
  readonly #rules: Rule[] = [];
  readonly #events = new EventEmitter();
  #url = '';

  private constructor() {
    this.#server = createServer((req, res) => void this.#handle(req, res));
  }

  /** Listen on 127.0.0.1, on a free port. */
  static async start(): Promise<FaultServer> {
    const server = new FaultServer();
    await new Promise<void>((resolve, reject) => {
      server.#server.once('error', reject);
      server.#server.listen(0, '127.0.0.1', () => resolve());
    });
    server.#url = `http://127.0.0.1:${(server.#server.address() as AddressInfo).port}`;
    return server;
  }

  /** e.g. http://127.0.0.1:40123 */
  get url(): string {
    return this.#url;
  }

  imageUrl(name: string): string {
    return `${this.#url}/images/${name}`;
  }

  manifestUrl(name: string): string {
    return `${this.#url}/chunked/${name}/${MANIFEST_FILE}`;
  }

  /** Serve `bytes` as a Range image at /images/NAME. */
  putImage(name: string, bytes: ImageBytes, options: ImageOptions = {}): void {
    this.#images.set(name, { bytes, version: 1, options });
  }

  /** Replace an image's bytes: a new ETag and Last-Modified, as a redeploy would. */
  replaceImage(name: string, bytes: ImageBytes): void {
    const image = this.#images.get(name);
    if (!image) throw new Error(`no image ${name}`);
    image.bytes = bytes;
    image.version++;
  }

  /** Pack `bytes` with the real pack core and serve it under /chunked/NAME/. */
  async putChunked(name: string, bytes: ImageBytes, options: { chunkSize?: number; compress?: boolean } = {}): Promise<ChunkedManifest> {
    const prefix = `/chunked/${name}/`;
    const files = this.#files;
    const manifest = await packStream(
      (async function* () {
        // Uneven pieces, as a file stream would deliver them.
        for (let at = 0; at < bytes.length; at += 100_000) yield bytes.subarray(at, at + 100_000);
      })(),
      {
        has: async (path) => files.has(prefix + path),
        put: async (path, chunk) => void files.set(prefix + path, chunk.slice()),
      },
      options,
    );
    files.set(prefix + MANIFEST_FILE, new TextEncoder().encode(manifestText(manifest)));
    return manifest;
  }

  /** The stored file at `path` (e.g. /chunked/x/chunks/<hash>). */
  file(path: string): Uint8Array | undefined {
    return this.#files.get(path);
  }

  setFile(path: string, bytes: Uint8Array): void {
    this.#files.set(path, bytes);
  }

  deleteFile(path: string): void {
    this.#files.delete(path);
  }

  /** The next `times` requests whose path matches get `fault`. */
  inject(path: string | RegExp, fault: Fault, times = 1): void {
    this.#rules.push({ path, fault, times });
  }

  /** Resolves with the next logged request (or the first already logged) that matches. */
  nextRequest(match: (r: RequestRecord) => boolean, fromIndex = 0): Promise<RequestRecord> {
    return this.#when('request', this.log.slice(fromIndex).find(match), match);
  }

  /** Resolves when a logged request matching `match` was aborted by its client. */
  aborted(match: (r: RequestRecord) => boolean): Promise<RequestRecord> {
    return this.#when('aborted', this.log.find((r) => r.aborted && match(r)), match);
  }

  #when(event: 'request' | 'aborted', seen: RequestRecord | undefined, match: (r: RequestRecord) => boolean): Promise<RequestRecord> {
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const listener = (r: RequestRecord): void => {
        if (!match(r)) return;
        this.#events.off(event, listener);
        resolve(r);
      };
      this.#events.on(event, listener);
    });
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #takeFault(path: string): Fault | null {
    const i = this.#rules.findIndex((r) => (typeof r.path === 'string' ? path === r.path : r.path.test(path)));
    if (i < 0) return null;
    const rule = this.#rules[i]!;
    if (--rule.times <= 0) this.#rules.splice(i, 1);
    return rule.fault;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.#url);
    const path = decodeURIComponent(url.pathname);
    for (const [k, v] of Object.entries(HOSTED_IMAGE_HEADERS)) res.setHeader(k, v);
    if (req.method === 'OPTIONS') {
      for (const [k, v] of Object.entries(PREFLIGHT_HEADERS)) res.setHeader(k, v);
      res.writeHead(204).end();
      return;
    }
    const record: RequestRecord = {
      method: req.method ?? 'GET',
      path,
      range: header(req, 'range'),
      ifRange: header(req, 'if-range'),
      fault: null,
      status: null,
      aborted: false,
    };
    res.on('close', () => {
      if (res.writableFinished) return;
      record.aborted = true;
      this.#events.emit('aborted', record);
    });
    try {
      if (req.method === 'PUT') {
        await this.#upload(req, res, url, path);
      } else {
        const fault = this.#takeFault(path);
        record.fault = fault?.kind ?? null;
        this.log.push(record);
        this.#events.emit('request', record);
        if (path.startsWith('/images/')) this.#serveImage(req, res, path.slice('/images/'.length), fault, record);
        else this.#serveFile(req, res, path, fault, record);
      }
    } catch (err) {
      if (!res.headersSent) res.writeHead(500).end(String(err));
    }
  }

  async #upload(req: IncomingMessage, res: ServerResponse, url: URL, path: string): Promise<void> {
    const parts: Buffer[] = [];
    let length = 0;
    for await (const part of req as AsyncIterable<Buffer>) {
      length += part.length;
      if (length > MAX_UPLOAD_BYTES) {
        res.writeHead(413).end();
        return;
      }
      parts.push(part);
    }
    const bytes = new Uint8Array(Buffer.concat(parts));
    const name = path.replace(/^\/(images|chunked)\//, '');
    if (path.startsWith('/chunked/')) {
      const chunkSize = url.searchParams.has('chunkSize') ? Number(url.searchParams.get('chunkSize')) : undefined;
      await this.putChunked(name, bytes, { chunkSize, compress: url.searchParams.get('compress') === '1' });
      res.writeHead(201).end(this.manifestUrl(name));
    } else {
      this.putImage(name, bytes);
      res.writeHead(201).end(this.imageUrl(name));
    }
  }

  #serveFile(req: IncomingMessage, res: ServerResponse, path: string, fault: Fault | null, record: RequestRecord): void {
    const bytes = this.#files.get(path);
    if (bytes === undefined || fault?.kind === 'missing') {
      record.status = 404;
      res.writeHead(404).end('not found');
      return;
    }
    this.#send(req, res, 200, { 'Content-Type': 'application/octet-stream' }, bytes, fault, record);
  }

  #serveImage(req: IncomingMessage, res: ServerResponse, name: string, fault: Fault | null, record: RequestRecord): void {
    const image = this.#images.get(name);
    if (image === undefined || fault?.kind === 'missing') {
      record.status = 404;
      res.writeHead(404).end('not found');
      return;
    }
    const size = image.bytes.length;
    const validators: Record<string, string> = { 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream' };
    const etagMode = image.options.etag ?? 'strong';
    const etag = etagMode === 'none' ? null : `${etagMode === 'weak' ? 'W/' : ''}"${name}-v${image.version}"`;
    const lastModified = image.options.lastModified === false ? null : new Date(Date.UTC(2026, 0, 1, 0, 0, image.version)).toUTCString();
    if (etag !== null) validators.ETag = etag;
    if (lastModified !== null) validators['Last-Modified'] = lastModified;

    const range = record.range === null ? null : /^bytes=(\d+)-(\d*)$/.exec(record.range);
    // If-Range names the representation the client has; any other gets the whole new one (RFC 9110 §13.1.5).
    const ifRangeHolds = record.ifRange === null || record.ifRange === etag || record.ifRange === lastModified;
    if (range === null || !ifRangeHolds || fault?.kind === 'no-range') {
      this.#send(req, res, 200, validators, image.bytes.subarray(0, size), fault, record);
      return;
    }
    const start = Number(range[1]);
    const end = Math.min(range[2] === '' ? size - 1 : Number(range[2]), size - 1);
    if (start >= size || start > end) {
      record.status = 416;
      res.writeHead(416, { ...validators, 'Content-Range': `bytes */${size}` }).end();
      return;
    }
    let from = start;
    if (fault?.kind === 'wrong-range') from = Math.min(start + 512, size - 1);
    const to = Math.min(from + (end - start), size - 1);
    const body = image.bytes.subarray(from, to + 1);
    this.#send(req, res, 206, { ...validators, 'Content-Range': `bytes ${from}-${to}/${size}` }, body, fault, record);
  }

  /** Write an answer, with the fault (if any) applied. */
  #send(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    headers: Record<string, string>,
    body: Uint8Array,
    fault: Fault | null,
    record: RequestRecord,
  ): void {
    const half = body.subarray(0, Math.floor(body.length / 2));
    record.status = status;
    switch (fault?.kind) {
      case 'drop':
        record.status = null;
        req.socket.destroy();
        return;
      case 'status':
        record.status = fault.status;
        res.writeHead(fault.status).end(`fault ${fault.status}`);
        return;
      case 'stall':
        record.status = null;
        return; // held until the client aborts (logged by the 'close' listener)
      case 'stall-body':
        res.writeHead(status, { ...headers, 'Content-Length': String(body.length) });
        res.write(half);
        return;
      case 'truncate':
        res.writeHead(status, { ...headers, 'Content-Length': String(body.length) });
        res.write(half, () => req.socket.destroy());
        return;
      case 'short':
        res.writeHead(status, headers);
        res.end(half);
        return;
      case 'gzip': {
        const gz = gzipSync(body);
        res.writeHead(status, { ...headers, 'Content-Encoding': 'gzip', 'Content-Length': String(gz.length) });
        res.end(gz);
        return;
      }
      case 'corrupt': {
        const bad = body.slice();
        if (bad.length > 0) bad[Math.floor(bad.length / 3)] ^= 0x40;
        res.writeHead(status, { ...headers, 'Content-Length': String(bad.length) });
        res.end(bad);
        return;
      }
      default:
        res.writeHead(status, { ...headers, 'Content-Length': String(body.length) });
        if (req.method === 'HEAD') res.end();
        else res.end(body);
    }
  }
}

function header(req: IncomingMessage, name: string): string | null {
  const v = req.headers[name];
  return typeof v === 'string' ? v : null;
}
