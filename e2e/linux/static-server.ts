// A plain static file server for the hosted-image boot: GET and HEAD of files
// under one folder, nothing else — what a static host or CDN offers, so the
// chunked form is exercised without any server help (no Range, no faults).
// It logs every path it was asked for, so the test can check which chunk
// files the guest's reads pulled. Loopback only.

import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, normalize, sep } from 'node:path';

export interface StaticServer {
  /** e.g. http://127.0.0.1:40123 */
  readonly url: string;
  /** Every path asked for, with its status. */
  readonly log: Array<{ path: string; status: number }>;
  close(): Promise<void>;
}

export async function serveDirectory(root: string): Promise<StaticServer> {
  const log: Array<{ path: string; status: number }> = [];
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = normalize(join(root, path));
    const answer = (status: number, body?: Buffer): void => {
      log.push({ path, status });
      res.writeHead(status, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(body?.length ?? 0) });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if ((req.method !== 'GET' && req.method !== 'HEAD') || !file.startsWith(root + sep)) return answer(404);
    readFile(file).then(
      (body) => answer(200, body),
      () => answer(404),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    log,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
