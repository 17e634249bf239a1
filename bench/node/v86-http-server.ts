// The one local HTTP server the v86 HTTP boots fetch their disk from: a
// static file server over a directory (the ext4 image and its packed chunked
// form), on loopback, on another origin than the page, that counts what it
// serves.
//
// It answers as a plain static host or CDN would: GET and HEAD, a single byte
// range (RFC 9110 §14.2) as 206 with Content-Range, the whole file as 200
// otherwise, 416 past the end; a strong ETag and Last-Modified from the file's
// stat, and no Cache-Control (so the browser caches heuristically, as it would
// against such a host; every boot has a fresh profile, so each starts cold).
// CORS lets any origin send Range, If-Range and v86's X-Accept-Encoding and
// read Content-Range/ETag/Last-Modified; a preflight is valid for 10 min.
// Preflights are counted apart from the requests that carry disk bytes.
//
// Files are read with one positioned read per request (the image is tens of
// MiB; nothing is held in memory between requests).

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { open, stat } from 'node:fs/promises';
import { join, normalize, sep } from 'node:path';

export interface ServedCounts {
  /** GET and HEAD requests answered (any status). */
  requests: number;
  /** CORS preflights (OPTIONS). */
  preflights: number;
  /** Body bytes sent. */
  bytes: number;
}

export interface CountingServer {
  /** Origin, e.g. http://127.0.0.1:5421 */
  readonly origin: string;
  /** What was served since the last reset. */
  counts(): ServedCounts;
  reset(): void;
  close(): Promise<void>;
}

const SINGLE_RANGE = /^bytes=(\d*)-(\d*)$/;

function corsHeaders(res: ServerResponse): void {
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Access-Control-Allow-Methods', 'GET, HEAD, OPTIONS');
  res.setHeader('Access-Control-Allow-Headers', 'Range, If-Range, X-Accept-Encoding');
  res.setHeader('Access-Control-Expose-Headers', 'Content-Range, Content-Length, ETag, Last-Modified, Accept-Ranges');
  res.setHeader('Access-Control-Max-Age', '600');
  res.setHeader('Cross-Origin-Resource-Policy', 'cross-origin');
}

/** [start, end] inclusive of a Range header against `size`, null for the whole file, 'unsatisfiable' past the end. */
function parseRange(header: string | undefined, size: number): [number, number] | null | 'unsatisfiable' {
  const m = header ? SINGLE_RANGE.exec(header.trim()) : null;
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') return size === 0 ? 'unsatisfiable' : [Math.max(0, size - Number(m[2])), size - 1];
  const start = Number(m[1]);
  if (start >= size) return 'unsatisfiable';
  return [start, m[2] === '' ? size - 1 : Math.min(size - 1, Number(m[2]))];
}

/** Serve `root` on 127.0.0.1:`port` (0: any free port). */
export async function startCountingServer(root: string, port = 0): Promise<CountingServer> {
  let counts: ServedCounts = { requests: 0, preflights: 0, bytes: 0 };
  const base = normalize(root + sep);
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    corsHeaders(res);
    if (req.method === 'OPTIONS') {
      counts.preflights++;
      res.writeHead(204).end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
      return;
    }
    counts.requests++;
    const path = normalize(join(base, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)));
    const info = path.startsWith(base) ? await stat(path).catch(() => null) : null;
    if (!info?.isFile()) {
      res.writeHead(404).end();
      return;
    }
    const etag = `"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
    res.setHeader('ETag', etag);
    res.setHeader('Last-Modified', info.mtime.toUTCString());
    res.setHeader('Accept-Ranges', 'bytes');
    const ifRange = req.headers['if-range'];
    const range = ifRange && ifRange !== etag ? null : parseRange(req.headers.range, info.size);
    if (range === 'unsatisfiable') {
      res.writeHead(416, { 'Content-Range': `bytes */${info.size}` }).end();
      return;
    }
    const [start, end] = range ?? [0, info.size - 1];
    const length = end - start + 1;
    res.writeHead(range ? 206 : 200, {
      'Content-Length': length,
      'Content-Type': 'application/octet-stream',
      ...(range ? { 'Content-Range': `bytes ${start}-${end}/${info.size}` } : {}),
    });
    if (req.method === 'HEAD' || length === 0) {
      res.end();
      return;
    }
    const file = await open(path, 'r');
    try {
      const body = Buffer.allocUnsafe(length);
      await file.read(body, 0, length, start);
      counts.bytes += length;
      res.end(body);
    } finally {
      await file.close();
    }
  }
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${address.port}`,
    counts: () => ({ ...counts }),
    reset: () => void (counts = { requests: 0, preflights: 0, bytes: 0 }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
