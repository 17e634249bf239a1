// A read-only disk image served by any HTTP server that honours Range.
//
// `open` asks for the first block with a Range GET (not HEAD: some static
// hosts answer HEAD differently, and the first block is needed anyway); the
// answer gives the size (Content-Range's total) and the image's identity (ETag,
// else Last-Modified). Every later answer is checked against both before a
// byte of it is used:
// - 206 with exactly the Content-Range asked for and the opened size;
// - no Content-Encoding: Range counts bytes of the encoded representation,
//   so a gzipped ranged body is not the image's bytes (v86 guards the same);
// - the body is exactly the range's length;
// - the same ETag / Last-Modified as at open. Requests carry If-Range with the
//   pinned validator, so a server whose image changed answers 200 with the new
//   whole image; we take that, or any moved validator or size, as
//   'image-changed' and never mix old and new blocks.
// A 200 to a Range request at open is a typed 'unsupported' error (the server
// does not do Range); mid-session it is IOERR with the same reason.
//
// Cross-origin, the server must expose Content-Range and ETag
// (Access-Control-Expose-Headers) and allow the Range and If-Range request
// headers: see docs/http.md.

import { StorageErrorCode } from './backend.ts';
import { BlockReader, type BlockCacheOptions, type BlockSource } from './http-blocks.ts';
import {
  HttpError,
  HttpErrorReason,
  discardBody,
  readBody,
  retryPolicy,
  statusError,
  withRetries,
  type RetryOptions,
  type RetryPolicy,
} from './http-fetch.ts';
import { HttpImageBackend } from './http-image.ts';

export interface HttpRangeOptions extends RetryOptions, BlockCacheOptions {
  /** Bytes per cached block: the unit of a Range request. Default 64 KiB. */
  blockSize?: number;
  /** Largest single Range request. Default 4 MiB. */
  maxRequestBytes?: number;
  /** Extra request headers (Authorization, say). */
  headers?: Record<string, string>;
  /** Send If-Range with the pinned validator. Default true. */
  ifRange?: boolean;
  /**
   * Open an image whose server sends neither ETag nor Last-Modified (or,
   * cross-origin, exposes neither). Such an image is pinned by its size
   * alone: a change that keeps the size cannot be seen, and the guest could
   * read old and new blocks mixed. Without this option that is a typed
   * 'unsupported' error at open. Default false.
   */
  unpinned?: boolean;
  /** fetch's credentials mode. Default 'same-origin'. */
  credentials?: RequestCredentials;
}

/** What pins a remote image: a change to any of these is 'image-changed'. */
export interface ImageIdentity {
  readonly size: number;
  readonly etag: string | null;
  readonly lastModified: string | null;
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

export class HttpRangeBackend extends HttpImageBackend {
  readonly url: string;
  readonly identity: ImageIdentity;

  private constructor(url: string, identity: ImageIdentity, reader: BlockReader) {
    super(identity.size, reader);
    this.url = url;
    this.identity = identity;
  }

  /** Open the image at `url`: one ranged GET for its size, identity and first block. */
  static async open(url: string, options: HttpRangeOptions = {}): Promise<HttpRangeBackend> {
    const href = new URL(url, globalThis.location?.href).href;
    const blockSize = options.blockSize ?? 64 * 1024;
    if (!Number.isSafeInteger(blockSize) || blockSize <= 0) throw new RangeError(`blockSize must be a positive integer`);
    const policy = retryPolicy(options);
    const opening = new AbortController();
    const first = await withRetries(href, policy, opening.signal, (signal) =>
      rangeGet(href, 0, blockSize - 1, { signal, options, pinned: null }),
    );
    if (first.identity.etag === null && first.identity.lastModified === null && options.unpinned !== true) {
      opening.abort();
      throw new HttpError(
        StorageErrorCode.Unsupported,
        HttpErrorReason.NoValidator,
        `${href} sends neither ETag nor Last-Modified (cross-origin, both must be listed in ` +
          `Access-Control-Expose-Headers): a change to the image that keeps its size could not be detected, ` +
          `so blocks of two versions could mix; serve a validator, or pass unpinned: true to read it anyway`,
        { url: href },
      );
    }
    const source = new RangeSource(href, first.identity, blockSize, options, policy);
    const reader = new BlockReader(source, options);
    if (first.bytes.length > 0) reader.seed(0, first.bytes);
    return new HttpRangeBackend(href, first.identity, reader);
  }
}

class RangeSource implements BlockSource {
  readonly maxRunBlocks: number;
  readonly size: number;
  readonly #url: string;
  readonly #identity: ImageIdentity;
  readonly #options: HttpRangeOptions;
  readonly #policy: RetryPolicy;

  constructor(url: string, identity: ImageIdentity, readonly blockSize: number, options: HttpRangeOptions, policy: RetryPolicy) {
    this.#url = url;
    this.#identity = identity;
    this.size = identity.size;
    this.#options = options;
    this.#policy = policy;
    this.maxRunBlocks = Math.max(1, Math.floor((options.maxRequestBytes ?? 4 * 1024 * 1024) / blockSize));
  }

  async fetchRun(first: number, count: number, closed: AbortSignal): Promise<Uint8Array[]> {
    const start = first * this.blockSize;
    const end = Math.min(this.size, (first + count) * this.blockSize) - 1;
    const { bytes } = await withRetries(this.#url, this.#policy, closed, (signal) =>
      rangeGet(this.#url, start, end, { signal, options: this.#options, pinned: this.#identity }),
    );
    const blocks: Uint8Array[] = [];
    for (let k = 0; k < count; k++) blocks.push(bytes.subarray(k * this.blockSize, (k + 1) * this.blockSize));
    return blocks;
  }
}

/** The validator If-Range may carry: a strong ETag, else Last-Modified (RFC 9110 §13.1.5). */
function ifRangeValue(identity: ImageIdentity): string | null {
  if (identity.etag !== null && !identity.etag.startsWith('W/')) return identity.etag;
  return identity.lastModified;
}

/**
 * One ranged GET of bytes start..end (inclusive; end may lie past the end of
 * the image when `pinned` is null, at open), validated. Throws HttpError.
 */
async function rangeGet(
  url: string,
  start: number,
  end: number,
  ctx: { signal: AbortSignal; options: HttpRangeOptions; pinned: ImageIdentity | null },
): Promise<{ bytes: Uint8Array; identity: ImageIdentity }> {
  const { signal, options, pinned } = ctx;
  const headers: Record<string, string> = {
    ...options.headers,
    Range: `bytes=${start}-${end}`,
    // Browsers drop this (a forbidden header) and send their own; Node honours it.
    'Accept-Encoding': 'identity',
  };
  const validator = pinned && options.ifRange !== false ? ifRangeValue(pinned) : null;
  if (validator !== null) headers['If-Range'] = validator;
  const response = await fetch(url, {
    headers,
    signal,
    cache: 'no-store',
    credentials: options.credentials ?? 'same-origin',
  });
  const identity = {
    etag: response.headers.get('ETag'),
    lastModified: response.headers.get('Last-Modified'),
  };
  const fail = (code: StorageErrorCode, reason: HttpErrorReason, message: string): never => {
    discardBody(response);
    throw new HttpError(code, reason, message, { url, status: response.status });
  };
  if (pinned !== null && changed(pinned, identity)) {
    fail(
      StorageErrorCode.ImageChanged,
      HttpErrorReason.ImageChanged,
      `image at ${url} changed since it was opened (ETag ${pinned.etag} → ${identity.etag}, ` +
        `Last-Modified ${pinned.lastModified} → ${identity.lastModified})`,
    );
  }
  if (response.status === 416 && pinned !== null) {
    fail(StorageErrorCode.ImageChanged, HttpErrorReason.ImageChanged, `image at ${url} shrank: bytes ${start}-${end} are gone (416)`);
  }
  if (response.status === 200) {
    fail(
      pinned === null ? StorageErrorCode.Unsupported : StorageErrorCode.Io,
      HttpErrorReason.NoRangeSupport,
      `${url} answered a Range request with the whole image (200, not 206): the server does not support Range requests`,
    );
  }
  if (response.status !== 206) {
    discardBody(response);
    throw statusError(response, url);
  }
  const encoding = response.headers.get('Content-Encoding');
  if (encoding !== null && encoding.trim().toLowerCase() !== 'identity') {
    fail(
      pinned === null ? StorageErrorCode.Unsupported : StorageErrorCode.Io,
      HttpErrorReason.ContentEncoding,
      `${url} applied Content-Encoding "${encoding}" to a ranged body; serve the image without compression`,
    );
  }
  const contentRange = response.headers.get('Content-Range');
  const m = contentRange === null ? null : CONTENT_RANGE.exec(contentRange.trim());
  if (m === null) {
    fail(
      StorageErrorCode.Io,
      HttpErrorReason.BadContentRange,
      contentRange === null
        ? `${url} sent no Content-Range (cross-origin, it must be listed in Access-Control-Expose-Headers)`
        : `${url} sent an unparsable Content-Range "${contentRange}"`,
    );
  }
  const [gotStart, gotEnd, total] = [Number(m![1]), Number(m![2]), m![3] === '*' ? NaN : Number(m![3])];
  const size = pinned?.size ?? total;
  if (!Number.isSafeInteger(size)) {
    fail(StorageErrorCode.Io, HttpErrorReason.BadContentRange, `${url} did not say the image's size (Content-Range "${contentRange}")`);
  }
  if (pinned !== null && total !== pinned.size) {
    fail(StorageErrorCode.ImageChanged, HttpErrorReason.ImageChanged, `image at ${url} changed size: ${pinned.size} → ${total} bytes`);
  }
  const wantEnd = Math.min(end, size - 1);
  if (gotStart !== start || gotEnd !== wantEnd) {
    fail(
      StorageErrorCode.Io,
      HttpErrorReason.BadContentRange,
      `${url} answered bytes ${gotStart}-${gotEnd} to a request for ${start}-${wantEnd}`,
    );
  }
  const bytes = await readBody(response, wantEnd - start + 1, url);
  return { bytes, identity: { size, ...identity } };
}

function changed(pinned: ImageIdentity, now: { etag: string | null; lastModified: string | null }): boolean {
  if (pinned.etag !== null && now.etag !== null) return pinned.etag !== now.etag;
  if (pinned.lastModified !== null && now.lastModified !== null) return pinned.lastModified !== now.lastModified;
  return false;
}
