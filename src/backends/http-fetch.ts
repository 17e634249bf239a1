// What both HTTP backends share below the block cache: the typed error, one
// attempt with its own deadline, retries with backoff, and reading a body of
// exactly the expected length.
//
// Every attempt runs under an AbortController whose deadline covers headers
// AND body, so a server that stalls before its first byte or in the middle of
// a body cannot hang a request; closing the backend aborts every attempt and
// every backoff wait. What is retried is decided in one place (`retryable`):
// network failures, deadlines, truncated bodies and 5xx / 408 / 429. Answers
// that are wrong rather than lost (a 200 to a Range request, a wrong
// Content-Range, a compressed body, a changed image) are not retried: asking
// again would get the same wrong answer.

import { StorageError, StorageErrorCode } from './backend.ts';

/** Why an HTTP read failed; finer than StorageError's code. */
export const HttpErrorReason = {
  /** The connection failed or dropped (retried). */
  Network: 'network',
  /** No complete answer within the request timeout (retried). */
  Timeout: 'timeout',
  /** An HTTP error status (5xx, 408 and 429 are retried). */
  Status: 'status',
  /** The server answered a Range request with the whole body (200). */
  NoRangeSupport: 'no-range-support',
  /** The server applied a Content-Encoding (gzip, br) to ranged bytes. */
  ContentEncoding: 'content-encoding',
  /** Content-Range missing, unparsable, or not the range asked for. */
  BadContentRange: 'bad-content-range',
  /** The body ended before its last byte (retried). */
  Truncated: 'truncated',
  /** The body was longer than its range. */
  BadLength: 'bad-length',
  /** The image's ETag, Last-Modified or size changed since it was opened. */
  ImageChanged: 'image-changed',
  /** A Range image without ETag or Last-Modified: changes could not be detected (`unpinned` opts in). */
  NoValidator: 'no-validator',
  /** A chunk's bytes do not hash to the SHA-256 its manifest names. */
  Integrity: 'integrity',
  /** The chunked image's manifest is not valid. */
  BadManifest: 'bad-manifest',
} as const;
export type HttpErrorReason = (typeof HttpErrorReason)[keyof typeof HttpErrorReason];

/** A StorageError from an HTTP backend: `reason` says what the network or server did. */
export class HttpError extends StorageError {
  readonly reason: HttpErrorReason;
  /** The URL asked for. */
  readonly url: string;
  /** The HTTP status, when there was an answer. */
  readonly status: number | undefined;
  /** For chunked images: the index of the chunk concerned. */
  readonly chunk: number | undefined;
  constructor(
    code: StorageErrorCode,
    reason: HttpErrorReason,
    message: string,
    details: { url: string; status?: number; chunk?: number; cause?: unknown },
  ) {
    super(code, message, { cause: details.cause });
    this.reason = reason;
    this.url = details.url;
    this.status = details.status;
    this.chunk = details.chunk;
  }
}

export interface RetryOptions {
  /** Attempts after the first one. Default 4. */
  retries?: number;
  /** Delay before the first retry (ms), doubled per retry, with jitter. Default 100. */
  backoffMs?: number;
  /** Largest delay between two attempts (ms). Default 5000. */
  maxBackoffMs?: number;
  /** Deadline of one attempt, headers and body (ms). Default 30000. */
  requestTimeoutMs?: number;
}

export type RetryPolicy = Required<RetryOptions>;

export function retryPolicy(options: RetryOptions = {}): RetryPolicy {
  return {
    retries: options.retries ?? 4,
    backoffMs: options.backoffMs ?? 100,
    maxBackoffMs: options.maxBackoffMs ?? 5000,
    requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
  };
}

/** Whether asking again may get a good answer. */
export function retryable(err: unknown): boolean {
  if (!(err instanceof HttpError)) return false;
  switch (err.reason) {
    case HttpErrorReason.Network:
    case HttpErrorReason.Timeout:
    case HttpErrorReason.Truncated:
      return true;
    case HttpErrorReason.Status:
      return err.status !== undefined && (err.status >= 500 || err.status === 408 || err.status === 429);
    default:
      return false;
  }
}

/** Thrown (internally) when the backend was closed during a request. */
function closedError(url: string): HttpError {
  return new HttpError(StorageErrorCode.Closed, HttpErrorReason.Network, `backend closed while fetching ${url}`, { url });
}

/**
 * Run `attempt` until it succeeds, a non-retryable error occurs, or the
 * retries are used up; the last error is rethrown, its message saying how
 * many attempts were made. Each attempt gets a signal that fires at its
 * deadline or when `closed` fires.
 */
export async function withRetries<T>(
  url: string,
  policy: RetryPolicy,
  closed: AbortSignal,
  attempt: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  for (let n = 0; ; n++) {
    if (closed.aborted) throw closedError(url);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new DeadlineExceeded()), policy.requestTimeoutMs);
    const onClose = (): void => controller.abort(closed.reason);
    closed.addEventListener('abort', onClose, { once: true });
    try {
      return await attempt(controller.signal);
    } catch (raw) {
      if (closed.aborted) throw closedError(url);
      const err = classify(raw, url, controller.signal);
      if (n >= policy.retries || !retryable(err)) {
        if (n > 0 && err instanceof HttpError) err.message = `${err.message} (after ${n + 1} attempts)`;
        throw err;
      }
    } finally {
      clearTimeout(timer);
      closed.removeEventListener('abort', onClose);
    }
    const delay = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** n) * (0.5 + Math.random() / 2);
    await sleep(delay, closed);
  }
}

class DeadlineExceeded extends Error {
  override readonly name = 'TimeoutError';
}

/** Map what fetch or a body read threw onto an HttpError. */
function classify(err: unknown, url: string, signal: AbortSignal): unknown {
  if (err instanceof HttpError) return err;
  if (signal.reason instanceof DeadlineExceeded) {
    return new HttpError(StorageErrorCode.Io, HttpErrorReason.Timeout, `no complete answer from ${url} in time`, {
      url,
      cause: err,
    });
  }
  if (err instanceof StorageError) return err;
  const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return new HttpError(StorageErrorCode.Io, HttpErrorReason.Network, `network error fetching ${url}: ${detail}`, {
    url,
    cause: err,
  });
}

function sleep(ms: number, closed: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    closed.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      closed.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** An error for an HTTP status that is not what was asked for. */
export function statusError(response: Response, url: string, chunk?: number): HttpError {
  const code =
    response.status === 404 || response.status === 410 ? StorageErrorCode.NotFound : StorageErrorCode.Io;
  const what = chunk === undefined ? url : `chunk ${chunk} (${url})`;
  return new HttpError(code, HttpErrorReason.Status, `HTTP ${response.status} ${response.statusText} for ${what}`, {
    url,
    status: response.status,
    chunk,
  });
}

/** Drop a body we will not read, without waiting for it. */
export function discardBody(response: Response): void {
  response.body?.cancel().catch(() => undefined);
}

/**
 * Read the whole body into a new buffer of exactly `length` bytes (or, with
 * `atMost`, up to `length` bytes). More bytes than that is an error and stops
 * the download; fewer is a short body (retryable).
 */
export async function readBody(
  response: Response,
  length: number,
  url: string,
  options: { atMost?: boolean } = {},
): Promise<Uint8Array<ArrayBuffer>> {
  const out = new Uint8Array(length);
  let filled = 0;
  const reader = response.body?.getReader();
  if (reader) {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (filled + value.length > length) {
        await reader.cancel().catch(() => undefined);
        throw new HttpError(StorageErrorCode.Io, HttpErrorReason.BadLength, `body from ${url} is longer than ${length} bytes`, {
          url,
          status: response.status,
        });
      }
      out.set(value, filled);
      filled += value.length;
    }
  }
  if (options.atMost) return out.subarray(0, filled);
  if (filled !== length) {
    throw new HttpError(
      StorageErrorCode.Io,
      HttpErrorReason.Truncated,
      `short body from ${url}: ${filled} of ${length} bytes`,
      { url, status: response.status },
    );
  }
  return out;
}
